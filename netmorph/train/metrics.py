"""Per-epoch metrics: ``metrics.jsonl`` (one JSON object per epoch) and the run's :class:`TrainResult`."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..atomic import atomic_open, finite_json

METRIC_KEYS = (
    "epoch", "lr", "train_loss", "train_err", "test_loss", "test_err", "test_err_lossless",
    "images_per_s", "seconds",
)
"""Keys of one epoch's record (``test_err_lossless`` only when the test set has that mask)."""


def append_metrics(path: Path, record: dict) -> None:
    """Append one epoch's record to ``path`` as a JSON line."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(_line(record))


def _line(record: dict) -> str:
    """One standard-JSON line (non-finite numbers become ``null``: JSON has no NaN)."""
    return json.dumps(finite_json(record), allow_nan=False) + "\n"


def write_metrics(path: Path, records: list[dict]) -> None:
    """Replace ``path`` atomically with ``records`` (used when a run starts or resumes)."""
    with atomic_open(path, "w", encoding="utf-8") as f:
        for r in records:
            f.write(_line(r))


def read_metrics(path: str | os.PathLike) -> list[dict]:
    """The records of a ``metrics.jsonl`` file, in order."""
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


@dataclass
class TrainResult:
    """What :func:`~netmorph.train.fit` returns.

    Attributes
    ----------
    module
        The trained module (the one passed in, trained in place).
    history
        One record per finished epoch (keys :data:`METRIC_KEYS`), resumed epochs included.
    stopped
        True when ``on_epoch`` asked to stop before the last epoch.
    """

    module: torch.nn.Module
    history: list[dict] = field(default_factory=list)
    stopped: bool = False

    @property
    def epochs_done(self) -> int:
        return self.history[-1]["epoch"] if self.history else 0

    @property
    def final(self) -> dict:
        """The last epoch's record (empty before any epoch)."""
        return self.history[-1] if self.history else {}

    @property
    def test_err(self) -> float | None:
        """Final test error (fraction in [0, 1])."""
        return self.final.get("test_err")

    @property
    def test_err_lossless(self) -> float | None:
        return self.final.get("test_err_lossless")
