"""Checks on a model before it is grown: a parent whose weights are not finite is refused.

A parent with a NaN or infinite weight computes NaN somewhere, so no child can be verified against
it; growing it would end in a failed verification ("the child differs") that blames the pass.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from .errors import PreconditionError


def check_finite(graph: Any, where: str | os.PathLike | None = None) -> Any:
    """Return ``graph``; raise :class:`PreconditionError` naming its first NaN/Inf weight."""
    for v in graph.parameters:
        w = v.const.array
        if w.dtype.kind in "fc" and w.size and not np.isfinite(w).all():
            bad = "NaN" if np.isnan(w).any() else "infinite"
            prefix = f"{os.fspath(where)}: " if where is not None else ""
            raise PreconditionError(f"{prefix}weight {v.name!r} holds {bad} values; a model with non-finite "
                                    "weights cannot be grown (its outputs cannot be verified)")
    return graph
