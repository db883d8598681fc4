"""A run's ``results.json``: one record per finished stage (IterLearn and FixLearn), written atomically.

Layout of ``results.json`` (format ``netmorph-pipeline-results/1``)::

    {"format": ..., "name": ..., "status": "running" | "complete" | "interrupted" | "stopped",
     "pipeline": {... the resolved pipeline, as in pipeline.toml ...},
     "stages":   [StageRecord, ...],     # IterLearn, in order
     "baseline": [StageRecord, ...]}     # FixLearn (empty without a baseline)

Each :class:`StageRecord` holds depth, parameters, epochs, train/test error, timings and, for a
growth stage, the morph's verified max abs / rel output error and solver.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from ..atomic import atomic_write_text
from .spec import PipelineError

RESULTS_NAME = "results.json"
RESULTS_FORMAT = "netmorph-pipeline-results/1"
STATUSES = ("running", "complete", "interrupted", "stopped")
MAX_RESULTS_BYTES = 64 << 20
"""A results.json is a few kilobytes per stage; anything far larger is not ours and is not read."""


@dataclass
class StageRecord:
    """What one finished stage produced.

    Attributes
    ----------
    index
        1-based stage number (``stage_<index>.onnx``).
    run
        ``"iterlearn"`` or ``"fixlearn"``.
    depth, blocks_per_level
        The paper's depth and the blocks of each level of the trained model (``None`` when the
        model is not a recognisable DynamicNet).
    params
        Parameter count (all initializers, BatchNorm statistics included).
    epochs, cumulative_epochs
        Epochs of this stage, and of the run up to and including it (IterLearn; for FixLearn
        equal to ``epochs``).
    train_err, test_err, train_loss, test_loss, test_err_lossless
        The last epoch's metrics (fractions); without training, ``test_err`` of the model as is.
    lr, lr_policy
        The stage's peak learning rate and its policy.
    train_time_s, morph_time_s, wall_time_s
        Training time (sum over epochs, resumed ones included), growth time (pass + ONNX
        Runtime verification), and the stage's wall time in the process that finished it.
    morph
        ``None``, or the growth: ``pass``, ``solver``, ``options``, ``contract``,
        ``max_abs`` / ``max_rel`` (child vs parent in ONNX Runtime), ``max_residual`` (kernel
        residual of the solver), ``depth_before`` / ``depth_after``, ``verified``.
    model, metrics
        Paths of the trained ONNX model and the per-epoch ``metrics.jsonl``, relative to the
        run directory.
    """

    index: int
    run: str
    depth: int | None
    params: int
    epochs: int
    cumulative_epochs: int
    train_err: float | None = None
    test_err: float | None = None
    train_loss: float | None = None
    test_loss: float | None = None
    test_err_lossless: float | None = None
    blocks_per_level: list[int] | None = None
    lr: float | None = None
    lr_policy: str | None = None
    train_time_s: float = 0.0
    morph_time_s: float = 0.0
    wall_time_s: float = 0.0
    morph: dict[str, Any] | None = None
    model: str = ""
    metrics: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StageRecord:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass
class Results:
    """Everything a run directory knows about its run (see the module docstring)."""

    pipeline: dict[str, Any]
    stages: list[StageRecord] = field(default_factory=list)
    baseline: list[StageRecord] = field(default_factory=list)
    status: str = "running"
    out_dir: Path | None = None

    @property
    def name(self) -> str:
        return str(self.pipeline.get("name", "pipeline"))

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": RESULTS_FORMAT, "name": self.name, "status": self.status,
            "pipeline": self.pipeline,
            "stages": [s.to_dict() for s in self.stages],
            "baseline": [s.to_dict() for s in self.baseline],
        }

    def save(self, out_dir: str | os.PathLike | None = None) -> Path:
        """Write ``results.json`` atomically into ``out_dir`` (default: where it was loaded from)."""
        target = Path(out_dir) if out_dir is not None else self.out_dir
        if target is None:
            raise PipelineError("Results.save needs an out_dir")
        path = target / RESULTS_NAME
        atomic_write_text(path, json.dumps(self.to_dict(), indent=1, default=_json_default) + "\n")
        return path

    @classmethod
    def load(cls, out_dir: str | os.PathLike) -> Results:
        """Read ``DIR/results.json``; a missing or malformed file is a :class:`PipelineError`."""
        out = Path(out_dir)
        path = out / RESULTS_NAME
        try:
            if path.is_file() and path.stat().st_size > MAX_RESULTS_BYTES:
                raise PipelineError(f"{path}: {path.stat().st_size:,} bytes, not a results file of this run "
                                    f"(limit {MAX_RESULTS_BYTES:,})")
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise PipelineError(f"{out}: no {RESULTS_NAME} (not a netmorph iterate/run directory)") from None
        except (OSError, ValueError) as e:
            raise PipelineError(f"{path}: cannot read ({str(e).splitlines()[0]})") from None
        if not isinstance(data, dict) or data.get("format") != RESULTS_FORMAT:
            raise PipelineError(f"{path}: not a netmorph results file (format {RESULTS_FORMAT})")
        try:
            return cls(
                pipeline=dict(data["pipeline"]),
                stages=[StageRecord.from_dict(s) for s in data.get("stages", [])],
                baseline=[StageRecord.from_dict(s) for s in data.get("baseline", [])],
                status=str(data.get("status", "running")),
                out_dir=out,
            )
        except (KeyError, TypeError) as e:
            raise PipelineError(f"{path}: malformed results ({e})") from None

    def table(self) -> str:
        """A plain-text summary: one row per depth, IterLearn next to FixLearn."""
        fix = {s.index: s for s in self.baseline}
        rows = [f"{'stage':>5} {'depth':>5} {'params':>9} {'epochs':>6} {'IterLearn':>9} {'FixLearn':>9} "
                f"{'morph max abs':>13} {'solver':>7}"]
        for s in self.stages:
            f = fix.get(s.index)
            m = s.morph or {}
            rows.append(
                f"{s.index:>5} {_fmt(s.depth, 'd'):>5} {s.params:>9} {s.epochs:>6} {_pct(s.test_err):>9} "
                f"{_pct(f.test_err if f else None):>9} {_fmt(m.get('max_abs'), '.2e'):>13} "
                f"{str(m.get('solver', '-')):>7}"
            )
        return "\n".join(rows)


def _fmt(v: Any, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.2f}%"


def _json_default(v: Any) -> Any:
    if hasattr(v, "item"):
        return v.item()
    if isinstance(v, Path):
        return str(v)
    if isinstance(v, tuple):
        return list(v)
    raise TypeError(f"cannot store {type(v).__name__} in results.json")


def finite_or_none(v: Any) -> float | None:
    """``float(v)`` when it is a finite number, else ``None`` (JSON has no NaN)."""
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None
