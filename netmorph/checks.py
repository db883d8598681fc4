"""Checks on a model before it is grown: a parent with a NaN weight is refused.

A parent with a NaN weight computes NaN somewhere, so no child can be verified against it; growing
it would end in a failed verification ("the child differs") that blames the pass. Infinite
constants stay legal: exporters write ``-inf`` attention masks (a causal mask, a padding bias).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from .errors import PreconditionError


def check_finite(graph: Any, where: str | os.PathLike | None = None) -> Any:
    """Return ``graph``; raise :class:`PreconditionError` naming its first NaN weight."""
    for v in graph.parameters:
        w = v.const.array
        if w.dtype.kind in "fc" and w.size and np.isnan(w).any():
            prefix = f"{os.fspath(where)}: " if where is not None else ""
            raise PreconditionError(f"{prefix}weight {v.name!r} holds NaN values; a model with NaN "
                                    "weights cannot be grown (its outputs cannot be verified)")
    return graph
