"""What a verification found: per-output differences and the verdict."""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..atomic import atomic_write_json
from ..errors import VerificationError


def _num(x: float) -> float | str:
    """A float for JSON: non-finite values become the strings ``"inf"``, ``"-inf"``, ``"nan"``."""
    if isinstance(x, float) and not math.isfinite(x):
        return "nan" if math.isnan(x) else ("inf" if x > 0 else "-inf")
    return x


def _g(x: float) -> str:
    return f"{x:.3g}"


@dataclass
class OutputDiff:
    """The comparison of one output over all batches (``a`` is the reference).

    ``max_abs``/``mean_abs``/``median_abs``: of ``|a-b|`` over every element of every batch.
    ``max_rel``: max of ``|a-b| / max(|a|, tiny)``. ``worst_batch``/``worst_index``: where
    ``|a-b|`` is largest (index inside that batch's output), with ``a_value``/``b_value``
    there. ``min_atol_to_pass``: the smallest atol that would pass every element at the
    report's rtol. ``n_nonfinite_mismatch``: elements NaN/Inf in one model but not the same
    in the other (each counts as failed, with infinite error).
    """

    name: str
    shape: tuple[int, ...]
    dtype: str
    max_abs: float
    max_rel: float
    mean_abs: float
    median_abs: float
    worst_batch: int
    worst_index: tuple[int, ...]
    a_value: float
    b_value: float
    min_atol_to_pass: float
    n_failed: int
    n_elements: int
    n_nonfinite_mismatch: int
    ok: bool

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["shape"] = list(self.shape)
        d["worst_index"] = list(self.worst_index)
        return {k: _num(v) for k, v in d.items()}

    def where(self) -> str:
        idx = "(" + ", ".join(map(str, self.worst_index)) + (",)" if len(self.worst_index) == 1 else ")")
        return f"{idx} of batch {self.worst_batch}"


@dataclass
class VerifyReport:
    """The verdict of :func:`~netmorph.verification.verify_models` and the evidence for it.

    ``ok`` is true iff every output passes. ``worst_output`` is the failing output with the
    largest ``max_abs`` (when none fails: the output with the largest ``max_abs``);
    ``worst_index`` is where in it. ``provider`` is the execution provider model ``a`` ran on.
    """

    outputs: list[OutputDiff]
    rtol: float
    atol: float
    batches: int
    batch_size: int | None
    seed: int | None
    inputs: str
    provider: str
    optimized_b: bool = False
    a: str = ""
    b: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    # -- the verdict ----------------------------------------------------------------------
    @property
    def ok(self) -> bool:
        return all(o.ok for o in self.outputs)

    @property
    def worst(self) -> OutputDiff | None:
        pool = [o for o in self.outputs if not o.ok] or self.outputs
        return max(pool, key=lambda o: o.max_abs, default=None)

    @property
    def max_abs(self) -> float:
        return max((o.max_abs for o in self.outputs), default=0.0)

    @property
    def max_rel(self) -> float:
        return max((o.max_rel for o in self.outputs), default=0.0)

    @property
    def worst_output(self) -> str:
        w = self.worst
        return "" if w is None else w.name

    @property
    def worst_index(self) -> tuple[int, ...]:
        w = self.worst
        return () if w is None else w.worst_index

    @property
    def failed_outputs(self) -> list[OutputDiff]:
        return [o for o in self.outputs if not o.ok]

    # -- presentation ---------------------------------------------------------------------
    def failure_line(self) -> str:
        """One line on the worst failing output (empty when the check passed)."""
        w = self.worst
        if self.ok or w is None:
            return ""
        more = len(self.failed_outputs) - 1
        tail = f"; {more} more output(s) fail" if more > 0 else ""
        if w.n_nonfinite_mismatch:
            return (
                f"output {w.name!r}: {w.n_nonfinite_mismatch} element(s) NaN/Inf in one model only, first at "
                f"{w.where()} (a={w.a_value:g}, b={w.b_value:g}){tail}"
            )
        return (
            f"output {w.name!r} max abs {_g(w.max_abs)} at {w.where()} > atol {self.atol:g} "
            f"and > rtol {self.rtol:g} x |a| (a={w.a_value:.6g}, b={w.b_value:.6g}); "
            f"{w.n_failed}/{w.n_elements} elements fail, min atol to pass {_g(w.min_atol_to_pass)}{tail}"
        )

    def summary(self) -> str:
        """One line: the verdict, the largest errors, the tolerance and where it ran."""
        verdict = "equivalent" if self.ok else "NOT equivalent"
        return (
            f"{verdict}: {len(self.outputs)} output(s), {self.batches} batch(es) ({self.inputs} inputs), "
            f"max abs {_g(self.max_abs)}, max rel {_g(self.max_rel)} "
            f"(rtol {self.rtol:g}, atol {self.atol:g}, {self.provider})"
        )

    def table(self, limit: int = 10) -> str:
        """The outputs, worst first (failing before passing), as a fixed-width table."""
        rows = sorted(self.outputs, key=lambda o: (o.ok, -o.max_abs))[:limit]
        head = ("output", "ok", "max abs", "max rel", "mean abs", "worst at", "a", "b", "min atol", "failed")
        body = [
            (
                o.name, "yes" if o.ok else "NO", _g(o.max_abs), _g(o.max_rel), _g(o.mean_abs),
                o.where(), f"{o.a_value:.6g}", f"{o.b_value:.6g}", _g(o.min_atol_to_pass),
                f"{o.n_failed}/{o.n_elements}",
            )
            for o in rows
        ]
        widths = [max(len(r[i]) for r in [head, *body]) for i in range(len(head))]
        lines = [
            "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in [head, *body]
        ]
        if len(self.outputs) > limit:
            lines.append(f"... {len(self.outputs) - limit} more output(s)")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary() + "\n" + self.table()

    # -- machine-readable -----------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (non-finite numbers as the strings ``"inf"``/``"nan"``)."""
        return {
            "ok": self.ok,
            "a": self.a,
            "b": self.b,
            "max_abs": _num(self.max_abs),
            "max_rel": _num(self.max_rel),
            "worst_output": self.worst_output,
            "worst_index": list(self.worst_index),
            "rtol": self.rtol,
            "atol": self.atol,
            "batches": self.batches,
            "batch_size": self.batch_size,
            "seed": self.seed,
            "inputs": self.inputs,
            "provider": self.provider,
            "optimized_b": self.optimized_b,
            "outputs": [o.to_dict() for o in self.outputs],
            **self.extra,
        }

    def write_json(self, path: str | os.PathLike) -> Path:
        """Write :meth:`to_dict` to ``path`` atomically (temporary file, fsync, rename)."""
        return atomic_write_json(path, self.to_dict(), allow_nan=False)

    def raise_if_failed(self, what: str) -> None:
        """Raise :class:`~netmorph.errors.VerificationError` (one line) unless ``ok``."""
        if not self.ok:
            raise VerificationError(f"verification failed for {what}: {self.failure_line()}")
