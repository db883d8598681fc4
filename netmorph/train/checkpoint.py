"""Atomic training checkpoints readable with ``torch.load(weights_only=True)``.

A checkpoint is a dict of tensors, numbers, strings, lists and dicts only: model and
optimiser state dicts, the LR scheduler's state, the GradScaler's, the RNG states (as uint8
tensors), the number of finished epochs, the config and the metrics history. Nothing in it
needs arbitrary unpickling, so a resumed run never executes code from the file.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..atomic import atomic_open
from .config import TrainConfigError

CHECKPOINT_NAME = "checkpoint.pt"
FORMAT = "netmorph-train-checkpoint/1"


def rng_state() -> dict:
    """The global torch RNG states (CPU and every CUDA device) as tensors."""
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = list(torch.cuda.get_rng_state_all())
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        cuda = state["cuda"][: torch.cuda.device_count()]
        torch.cuda.set_rng_state_all(cuda)


def save_checkpoint(path: Path, state: dict) -> None:
    """Write ``state`` to ``path`` atomically (temporary file in the same folder, fsync, rename)."""
    with atomic_open(path, "wb") as f:
        torch.save({"format": FORMAT, **state}, f)


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict:
    """Read a checkpoint written by :func:`save_checkpoint` (``weights_only=True``).

    Raises
    ------
    TrainConfigError
        The file is not a netmorph training checkpoint or cannot be read safely.
    """
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises several types for corrupt/unsafe files
        text = str(e).strip()
        reason = text.splitlines()[0][:200] if text else type(e).__name__
        raise TrainConfigError(f"{path}: cannot read checkpoint ({reason})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise TrainConfigError(f"{path}: not a netmorph training checkpoint")
    return state
