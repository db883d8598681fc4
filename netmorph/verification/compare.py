"""Element-wise comparison of one output of two models over all batches."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .report import OutputDiff
from .tolerance import Tolerance


def tiny_for(dtype: np.dtype) -> float:
    """The floor of ``|a|`` in the relative error: the smallest normal number of ``dtype``
    (float32: 1.18e-38); for non-float outputs that of float64."""
    return float(np.finfo(dtype).tiny) if np.dtype(dtype).kind == "f" else float(np.finfo(np.float64).tiny)


def elementwise(a: np.ndarray, b: np.ndarray, tol: Tolerance):
    """Per element: absolute difference, relative difference, failed mask, non-finite mismatch mask.

    Computed in float64. Where both are NaN, or both the same infinity, the difference is 0;
    where exactly one side is non-finite (or they are different infinities) the difference
    is +inf and the element fails whatever the tolerance.
    """
    a64 = np.asarray(a, dtype=np.float64)
    b64 = np.asarray(b, dtype=np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        diff = np.abs(a64 - b64)
        finite = np.isfinite(a64) & np.isfinite(b64)
        agree = (np.isnan(a64) & np.isnan(b64)) | (np.isinf(a64) & (a64 == b64))
        mismatch = ~finite & ~agree
        diff[agree] = 0.0
        diff[mismatch] = np.inf
        absa = np.abs(a64)
        rel = diff / np.maximum(absa, tiny_for(np.asarray(a).dtype))
        rel[agree] = 0.0
        rel[mismatch] = np.inf
        failed = ((diff > tol.atol) & (diff > tol.rtol * absa)) | mismatch
        # the atol each element needs: 0 if the rtol term already covers it
        need = np.where(diff > tol.rtol * absa, diff, 0.0)
        need[mismatch] = np.inf
    return diff, rel, failed, mismatch, need


def compare_output(
    name: str, pairs: Sequence[tuple[np.ndarray, np.ndarray]], tol: Tolerance
) -> OutputDiff:
    """Compare reference arrays ``a`` against candidate arrays ``b``, one pair per batch.

    The worst element is the one with the largest absolute difference (first such, in batch
    then C order); ``min_atol_to_pass`` is the smallest ``atol`` that, with ``tol.rtol``, would
    pass every element (``inf`` when some element is non-finite in one model only).
    """
    diffs, worst = [], (-1.0, 0, ())
    max_rel = 0.0
    n_failed = n_mismatch = 0
    min_atol = 0.0
    worst_vals = (0.0, 0.0)
    for k, (a, b) in enumerate(pairs):
        diff, rel, failed, mismatch, need = elementwise(a, b, tol)
        n_failed += int(failed.sum())
        n_mismatch += int(mismatch.sum())
        if diff.size:
            i = int(np.argmax(diff))
            if diff.flat[i] > worst[0]:
                idx = tuple(int(j) for j in np.unravel_index(i, diff.shape))
                worst = (float(diff.flat[i]), k, idx)
                worst_vals = (float(np.asarray(a).flat[i]), float(np.asarray(b).flat[i]))
            max_rel = max(max_rel, float(rel.max()))
            min_atol = max(min_atol, float(need.max()))
        diffs.append(diff.ravel())
    alld = np.concatenate(diffs) if diffs else np.zeros(0)
    n = int(alld.size)
    a0 = np.asarray(pairs[0][0]) if pairs else np.zeros(0, np.float32)
    return OutputDiff(
        name=name,
        shape=tuple(int(s) for s in a0.shape),
        dtype=str(a0.dtype),
        max_abs=max(worst[0], 0.0),
        max_rel=max_rel,
        mean_abs=float(alld.mean()) if n else 0.0,
        median_abs=float(np.median(alld)) if n else 0.0,
        worst_batch=worst[1],
        worst_index=worst[2],
        a_value=worst_vals[0],
        b_value=worst_vals[1],
        min_atol_to_pass=min_atol,
        n_failed=n_failed,
        n_elements=n,
        n_nonfinite_mismatch=n_mismatch,
        ok=n_failed == 0,
    )
