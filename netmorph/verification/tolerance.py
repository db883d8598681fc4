"""The pass/fail rule for one pair of output elements, and how each output gets its rule."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .options import VerifyOptions


@dataclass(frozen=True)
class Tolerance:
    """Absolute and relative tolerance of an equivalence check (Polygraphy's rule).

    An element with reference value ``a`` and candidate value ``b`` **fails** iff

        ``|a - b| > atol``  and  ``|a - b| > rtol * |a|``

    i.e. it passes when it is within *either* tolerance. The relative term uses the
    reference ``a`` only, so the rule is not symmetric in ``a`` and ``b``.

    NaN/Inf: with ``allow_nan=False`` (default) every element that is NaN or Inf in either
    model fails; with ``allow_nan=True`` an element passes when both models have the same
    non-finite value there (NaN with NaN, +Inf with +Inf) and fails otherwise.

    ``kind`` says where the numbers came from: ``"fixed"``, ``"exact"`` (integer / bool
    outputs: both 0), ``"calibrated"`` (``atol = K x noise``), ``"per-output"``.
    """

    rtol: float = 1e-4
    atol: float = 1e-5
    allow_nan: bool = False
    kind: str = "fixed"

    def __post_init__(self) -> None:
        for name in ("rtol", "atol"):
            v = getattr(self, name)
            if not isinstance(v, int | float) or math.isnan(v) or v < 0:
                raise ValueError(f"{name} must be a non-negative number, got {v!r}")
        object.__setattr__(self, "rtol", float(self.rtol))
        object.__setattr__(self, "atol", float(self.atol))

    def __str__(self) -> str:
        return f"rtol {self.rtol:g}, atol {self.atol:g}"


def output_tolerance(name: str, dtype: np.dtype, opts: VerifyOptions,
                     noise: float | None = None) -> Tolerance:
    """The rule for output ``name`` under ``opts``.

    Per-output ``output_rtol``/``output_atol`` win; else integer and bool outputs compare
    exactly; else ``calibrated`` gives ``rtol 0, atol K x noise``; else the global rtol/atol.
    """
    nan = opts.allow_nan
    if name in opts.output_rtol or name in opts.output_atol:
        return Tolerance(opts.output_rtol.get(name, opts.rtol), opts.output_atol.get(name, opts.atol), nan,
                         "per-output")
    if np.dtype(dtype).kind in "iub":
        return Tolerance(0.0, 0.0, nan, "exact")
    k = opts.calibration_k
    if k is not None and noise is not None:
        return Tolerance(0.0, k * noise, nan, "calibrated")
    return Tolerance(opts.rtol, opts.atol, nan, "fixed")
