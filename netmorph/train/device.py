"""Placing a run: device choice, data staged on the device, autocast, and the DDP rank/world."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np
import torch

from netmorph.data import Dataset

from .config import TrainConfigError


def dist_info() -> tuple[int, int]:
    """``(rank, world_size)`` of the initialised process group, ``(0, 1)`` without one."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def resolve_device(name: str = "auto", local_rank: int | None = None) -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; ``"cuda"`` picks ``local_rank``'s GPU under DDP.

    Raises
    ------
    TrainConfigError
        CUDA was asked for but is not available.
    """
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise TrainConfigError(f"device {name!r} requested but CUDA is not available")
        if name == "cuda":
            index = local_rank if local_rank is not None else torch.cuda.current_device()
            return torch.device("cuda", index % torch.cuda.device_count())
    return torch.device(name)


def autocast(device: torch.device, amp: str | None):
    """The autocast context for ``amp`` (``None`` -> no-op); fp16 needs CUDA."""
    if amp is None:
        return contextlib.nullcontext()
    if amp == "fp16" and device.type != "cuda":
        raise TrainConfigError("amp 'fp16' needs a CUDA device (use 'bf16' on CPU)")
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


@dataclass
class StagedData:
    """A :class:`~netmorph.data.Dataset` on the device: raw images (``uint8`` stays ``uint8``),
    labels, and ``(1, C, 1, 1)`` mean/std for per-batch normalisation."""

    images: torch.Tensor  # (N, C, H, W) view; NHWC memory for uint8 sources
    labels: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor
    lossless: torch.Tensor | None

    def __len__(self) -> int:
        return len(self.labels)


def stage(data: Dataset, device: torch.device) -> StagedData:
    """Copy ``data`` to ``device`` once; batches are gathered and normalised there."""
    images = torch.from_numpy(np.ascontiguousarray(data.images)).to(device)
    if data.layout == "NHWC":
        images = images.permute(0, 3, 1, 2)
    shape = (1, data.channels, 1, 1)
    return StagedData(
        images=images,
        labels=torch.from_numpy(data.labels).to(device),
        mean=torch.tensor(data.mean, dtype=torch.float32, device=device).reshape(shape),
        std=torch.tensor(data.std, dtype=torch.float32, device=device).reshape(shape),
        lossless=None if data.lossless is None else torch.from_numpy(data.lossless).to(device),
    )


def logits_of(output) -> torch.Tensor:
    """The logits of a module's output (a tensor, or the first entry of a tuple/list/dict)."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)) and output:
        return logits_of(output[0])
    if isinstance(output, dict) and output:
        return logits_of(next(iter(output.values())))
    raise TrainConfigError(f"the model's output is not a tensor of logits ({type(output).__name__})")
