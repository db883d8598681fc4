"""The pass/fail rule for one pair of output elements."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Tolerance:
    """Absolute and relative tolerance of an equivalence check (Polygraphy's rule).

    An element with reference value ``a`` and candidate value ``b`` **fails** iff

        ``|a - b| > atol``  and  ``|a - b| > rtol * |a|``

    i.e. it passes when it is within *either* tolerance. The relative term uses the
    reference ``a`` only, so the rule is not symmetric in ``a`` and ``b``. Non-finite
    values pass only when both models agree exactly (NaN with NaN, +Inf with +Inf …).
    """

    rtol: float = 1e-4
    atol: float = 1e-5

    def __post_init__(self) -> None:
        for name in ("rtol", "atol"):
            v = getattr(self, name)
            if not isinstance(v, int | float) or math.isnan(v) or v < 0:
                raise ValueError(f"{name} must be a non-negative number, got {v!r}")
        object.__setattr__(self, "rtol", float(self.rtol))
        object.__setattr__(self, "atol", float(self.atol))

    def __str__(self) -> str:
        return f"rtol {self.rtol:g}, atol {self.atol:g}"
