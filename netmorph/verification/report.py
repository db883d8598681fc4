"""What a verification found: per-output differences and the verdict."""

from __future__ import annotations

import dataclasses
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


def _v(x: float | int) -> str:
    return str(x) if isinstance(x, int) else f"{x:.6g}"


def _rule(o: OutputDiff) -> str:
    if o.rule == "calibrated":
        return f"cal {_g(o.noise_ratio or 0.0)}x noise {_g(o.noise or 0.0)}"
    if o.rule == "exact":
        return "exact"
    return f"{o.rtol:g}/{o.atol:g}"


@dataclass
class OutputDiff:
    """The comparison of one output over all batches (``a`` is the reference).

    ``max_abs``/``mean_abs``/``median_abs``/``p99_abs``: of ``|a-b|`` over the elements finite in
    both models. ``max_rel``: max of ``|a-b| / max(|a|, tiny)``. ``worst_batch``/``worst_index``:
    the worst *failing* element (a failing NaN/Inf first, else the largest ``|a-b|``; when nothing
    fails, the largest ``|a-b|``), with ``a_value``/``b_value`` there. ``min_atol_to_pass``: the
    smallest atol that would pass every finite element at this output's rtol (``inf`` when a
    NaN/Inf fails). ``n_nan``/``n_inf``: counts in ``(a, b)``; ``nonfinite_at``: ``(batch,
    index)`` of the first NaN/Inf elements (either model, at most 5);
    ``n_nonfinite_mismatch``: elements whose NaN/Inf is not matched by the same value in the
    other model. ``rtol``/``atol``/``rule``: the tolerance this output was judged by (``fixed``,
    ``exact``, ``calibrated``, ``per-output``); ``noise``: the reference's own rounding noise
    (calibrated only).
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
    p99_abs: float = 0.0
    n_nan: tuple[int, int] = (0, 0)
    n_inf: tuple[int, int] = (0, 0)
    nonfinite_at: list[tuple[int, tuple[int, ...]]] = field(default_factory=list)
    rtol: float = 0.0
    atol: float = 0.0
    rule: str = "fixed"
    noise: float | None = None
    ratio: float | None = None
    worst_noise: float | None = None
    worst_run: str = ""

    @property
    def noise_ratio(self) -> float | None:
        """Under calibrated tolerance the largest ``|a-b| / noise`` of an element (each element
        against its own noise), or ``max_abs / noise`` when that was not recorded; ``None``
        otherwise."""
        if self.ratio is not None:
            return self.ratio
        if self.noise is None:
            return None
        return self.max_abs / self.noise if self.noise > 0 else (0.0 if self.max_abs == 0 else math.inf)

    @property
    def first_nonfinite(self) -> tuple[int, tuple[int, ...]] | None:
        return self.nonfinite_at[0] if self.nonfinite_at else None

    @property
    def has_nonfinite(self) -> bool:
        return sum(self.n_nan) + sum(self.n_inf) > 0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["shape"] = list(self.shape)
        d["worst_index"] = list(self.worst_index)
        d["n_nan"] = {"a": self.n_nan[0], "b": self.n_nan[1]}
        d["n_inf"] = {"a": self.n_inf[0], "b": self.n_inf[1]}
        d["nonfinite_at"] = [{"batch": k, "index": list(i)} for k, i in self.nonfinite_at]
        d["noise_ratio"] = self.noise_ratio
        return {k: _num(v) for k, v in d.items()}

    def where(self) -> str:
        run = f" ({self.worst_run})" if self.worst_run else ""
        return f"{_fmt_idx(self.worst_index)} of batch {self.worst_batch}{run}"

    def nonfinite_text(self) -> str:
        """``NaN a 3 / b 3, Inf a 0 / b 1, at (0, 2) of batch 0, (1, 4) of batch 0 …`` (or empty)."""
        if not self.has_nonfinite:
            return ""
        where = ", ".join(f"{_fmt_idx(i)} of batch {k}" for k, i in self.nonfinite_at[:3])
        more = " …" if sum(self.n_nan) + sum(self.n_inf) > 3 else ""
        return (f"NaN a {self.n_nan[0]} / b {self.n_nan[1]}, Inf a {self.n_inf[0]} / b {self.n_inf[1]}, "
                f"at {where}{more}")


def _fmt_idx(idx: tuple[int, ...]) -> str:
    return "(" + ", ".join(map(str, idx)) + (",)" if len(idx) == 1 else ")")


@dataclass
class VerifyReport:
    """The verdict of :func:`~netmorph.verification.verify_models` and the evidence for it.

    ``ok`` is true iff every output passes. ``worst_output`` is the failing output that fails
    worst (a NaN/Inf failure first, then the largest ``max_abs / atol`` of its own tolerance;
    when none fails: the output with the largest ``max_abs``); ``worst_index`` is where in it.
    ``provider`` is the execution provider model ``a`` ran on. ``tolerance`` is ``fixed`` or
    ``calibrated:K``; ``plan`` says how random inputs were made (ranges per input, dim sizes per
    batch, coverage batches); ``calibration`` what each probe measured. ``outputs`` compare ``b``
    as written; ``optimised_outputs`` ``b`` with ONNX Runtime's default graph optimisations (both
    must pass); ``b_failure`` says why ``b`` failed where ``a`` runs (it cannot run, or gives
    another output shape). ``rule_source`` says why the rule in ``tolerance`` decided.
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
    tolerance: str = "fixed"
    allow_nan: bool = False
    plan: dict[str, Any] | None = None
    calibration: dict[str, Any] | None = None
    rule_source: str = ""
    b_runs: list[str] = field(default_factory=list)
    b_failure: str | None = None
    optimised_outputs: list[OutputDiff] = field(default_factory=list)

    # -- the verdict ----------------------------------------------------------------------
    @property
    def ok(self) -> bool:
        return (self.b_failure is None and all(o.ok for o in self.outputs)
                and all(o.ok for o in self.optimised_outputs))

    @property
    def worst(self) -> OutputDiff | None:
        failed = self.failed_outputs
        if failed:  # a NaN/Inf failure first, then the largest excess over its own tolerance
            return max(failed, key=lambda o: (o.min_atol_to_pass == math.inf, o.noise_ratio if o.noise_ratio
                                              is not None else o.max_abs / max(o.atol, 1e-300)))
        return max(self.outputs, key=lambda o: o.max_abs, default=None)

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
        """One line on the worst failing output, naming a failing element (empty when it passed)."""
        if self.b_failure is not None:
            return self.b_failure
        if all(o.ok for o in self.outputs) and not all(o.ok for o in self.optimised_outputs):
            opt = dataclasses.replace(self, outputs=self.optimised_outputs, optimised_outputs=[])
            return "B with ONNX Runtime's graph optimisations: " + opt.failure_line()
        w = self.worst
        if self.ok or w is None:
            return ""
        more = len(self.failed_outputs) - 1
        tail = f"; {more} more output(s) fail" if more > 0 else ""
        vals = f"(a={_v(w.a_value)}, b={_v(w.b_value)})"
        if w.min_atol_to_pass == math.inf:
            what = "NaN/Inf in one model only" if w.n_nonfinite_mismatch else "NaN/Inf in both models"
            hint = "" if self.allow_nan else " (--allow-nan accepts matching NaN/Inf)"
            return (f"output {w.name!r}: {what} at {w.where()} {vals}: {w.nonfinite_text()}; "
                    f"{w.n_failed}/{w.n_elements} elements fail{hint}{tail}")
        if w.rule == "exact":
            rule = f"differs at {w.where()} {vals}, compared exactly ({w.dtype})"
        elif w.rule == "calibrated":
            k = self.tolerance[11:] or "K"
            noise = w.worst_noise if w.worst_noise is not None else (w.noise or 0.0)
            rule = (f"abs {_g(abs(w.a_value - w.b_value))} at {w.where()} {vals} > {k} x noise {_g(noise)} "
                    f"of that element (ratio {_g(w.noise_ratio or 0)}; rule calibrated)")
        else:
            rule = (f"abs {_g(abs(w.a_value - w.b_value))} at {w.where()} {vals} > atol {w.atol:g} "
                    f"and > rtol {w.rtol:g} x |a|")
        return (f"output {w.name!r} max abs {_g(w.max_abs)}: {rule}; {w.n_failed}/{w.n_elements} "
                f"elements fail, min atol to pass {_g(w.min_atol_to_pass)}{tail}")

    def summary(self) -> str:
        """One line: the verdict, the largest errors, the tolerance and where it ran."""
        verdict = "equivalent" if self.ok else "NOT equivalent"
        tol = (f"calibrated rule, K={self.tolerance[11:]}" if self.tolerance.startswith("calibrated")
               else f"fixed rule, rtol {self.rtol:g}, atol {self.atol:g}")
        if self.rule_source:
            tol += f" ({self.rule_source})"
        nf = sum(o.has_nonfinite for o in self.outputs)
        nan = f", NaN/Inf in {nf} output(s)" if nf else ""
        return (
            f"{verdict}: {len(self.outputs)} output(s), {self.batches} batch(es) ({self.inputs} inputs), "
            f"max abs {_g(self.max_abs)}, max rel {_g(self.max_rel)}{nan} ({tol}, {self.provider})"
        )

    def table(self, limit: int = 10) -> str:
        """The outputs, worst first (failing before passing), as a fixed-width table."""
        rows = sorted(self.outputs, key=lambda o: (o.ok, -o.max_abs))[:limit]
        head = ("output", "ok", "max abs", "max rel", "mean abs", "median", "p99", "worst at", "a", "b",
                "min atol", "failed", "rule", "nan/inf")
        body = [
            (
                o.name, "yes" if o.ok else "NO", _g(o.max_abs), _g(o.max_rel), _g(o.mean_abs),
                _g(o.median_abs), _g(o.p99_abs), o.where(), _v(o.a_value), _v(o.b_value),
                _g(o.min_atol_to_pass), f"{o.n_failed}/{o.n_elements}", _rule(o),
                f"{sum(o.n_nan) + sum(o.n_inf)}" if o.has_nonfinite else "-",
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
            "tolerance": self.tolerance,
            "rule": "calibrated" if self.tolerance.startswith("calibrated") else "fixed",
            "rule_source": self.rule_source,
            "b_runs": list(self.b_runs),
            "b_failure": self.b_failure,
            "allow_nan": self.allow_nan,
            "failure": self.failure_line() or None,
            "plan": self.plan,
            "calibration": self.calibration,
            "outputs": [o.to_dict() for o in self.outputs],
            "optimised_outputs": [o.to_dict() for o in self.optimised_outputs],
            **self.extra,
        }

    def write_json(self, path: str | os.PathLike) -> Path:
        """Write :meth:`to_dict` to ``path`` atomically (temporary file, fsync, rename)."""
        return atomic_write_json(path, self.to_dict(), allow_nan=False)

    def raise_if_failed(self, what: str) -> None:
        """Raise :class:`~netmorph.errors.VerificationError` (one line) unless ``ok``."""
        if not self.ok:
            raise VerificationError(f"verification failed for {what}: {self.failure_line()}")
