"""Element-wise comparison of one output of two models over all batches."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .report import OutputDiff
from .tolerance import Tolerance

NONFINITE_POSITIONS = 5
"""How many NaN/Inf positions an output's report lists (the count is always complete)."""


def tiny_for(dtype: np.dtype) -> float:
    """The floor of ``|a|`` in the relative error: the smallest normal number of ``dtype``
    (float32: 1.18e-38); for non-float outputs that of float64."""
    return float(np.finfo(dtype).tiny) if np.dtype(dtype).kind == "f" else float(np.finfo(np.float64).tiny)


def elementwise(a: np.ndarray, b: np.ndarray, tol: Tolerance, atol: np.ndarray | None = None):
    """Per element: ``|a-b|``, relative difference, failed mask, non-finite masks, atol needed.

    Computed in float64 (integer outputs compare ``a != b`` exactly, whatever their size).
    ``diff``/``rel``/``need`` are 0 wherever either side is non-finite: those elements are
    counted apart (``nonfinite``: NaN/Inf in either model; ``mismatch``: not the same
    non-finite value in both). Every non-finite element fails unless ``tol.allow_nan``; then
    only mismatches fail. ``atol`` (calibrated tolerance: ``K x`` the noise of each element,
    broadcasting against ``a``) replaces ``tol.atol`` element by element.
    """
    a = np.asarray(a)
    b = np.asarray(b)
    if a.dtype.kind == "f" and b.dtype.kind == "f" and np.isfinite(a).all() and np.isfinite(b).all():
        return _finite(a, b, tol, atol)
    a64 = a.astype(np.float64)
    b64 = b.astype(np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        finite = np.isfinite(a64) & np.isfinite(b64)
        agree = (np.isnan(a64) & np.isnan(b64)) | (np.isinf(a64) & (a64 == b64))
        nonfinite = ~finite
        mismatch = nonfinite & ~agree
        diff = np.where(finite, np.abs(a64 - b64), 0.0)
        absa = np.abs(a64)
        rel = np.where(finite, diff / np.maximum(absa, tiny_for(a.dtype)), 0.0)
        over_rtol = diff > tol.rtol * absa
        failed = finite & (diff > (tol.atol if atol is None else atol)) & over_rtol
        if a.dtype.kind in "iub" and tol.atol == 0 and tol.rtol == 0:
            failed = np.asarray(a != b)  # exact, also beyond float64's 2**53
        failed = failed | (mismatch if tol.allow_nan else nonfinite)
        need = np.where(finite & over_rtol, diff, 0.0)  # the atol each element needs
    return diff, rel, failed, nonfinite, mismatch, need


def _finite(a: np.ndarray, b: np.ndarray, tol: Tolerance, atol: np.ndarray | None):
    """:func:`elementwise` where every element of both is finite (the usual case): the same values,
    computed in place (five float64 arrays of the output's size instead of about fifteen, 2x faster
    on GPT-2's 13 M logits per batch); ``nonfinite`` and ``mismatch`` are read-only all-False views."""
    a64 = a.astype(np.float64)
    diff = b.astype(np.float64)
    np.subtract(a64, diff, out=diff)
    np.abs(diff, out=diff)
    absa = np.abs(a64, out=a64)
    rel = np.maximum(absa, tiny_for(a.dtype), out=np.empty_like(absa))
    np.divide(diff, rel, out=rel)
    np.multiply(absa, tol.rtol, out=absa)
    over_rtol = diff > absa
    del a64, absa
    failed = diff > (tol.atol if atol is None else atol)
    failed &= over_rtol
    need = np.where(over_rtol, diff, 0.0)
    none = np.broadcast_to(np.False_, a.shape)
    return diff, rel, failed, none, none, need


CHUNK = 1 << 20
"""Elements compared at a time: every temporary of the rule is this size, not the output's (the
whole output is held once more, as the finite differences the statistics are taken over)."""


def chunks(shape: tuple[int, ...], size: int | None = None):
    """Index tuples that cut an array of ``shape`` into C-ordered blocks of about ``size``
    elements: every leading axis but one indexed, that one sliced, the trailing axes whole (so a
    block of a broadcast view is a view)."""
    size = CHUNK if size is None else size
    if not shape:
        yield ()
        return
    inner, axis = 1, len(shape)
    while axis > 0 and inner * shape[axis - 1] <= size:
        axis -= 1
        inner *= shape[axis]
    if axis == 0:
        yield (slice(None),)
        return
    step = max(1, size // inner)
    for lead in np.ndindex(*shape[: axis - 1]):
        for j in range(0, shape[axis - 1], step):
            yield (*lead, slice(j, min(j + step, shape[axis - 1])))


def _global(block: tuple, local: int, shape: tuple[int, ...], bshape: tuple[int, ...]) -> int:
    """The flat C index in ``shape`` of element ``local`` of the block at ``block``."""
    at = [int(x) for x in np.unravel_index(local, bshape)] if bshape else []
    if block:  # (*leading indices, slice of the next axis): the block's first axis is that slice
        at = [*block[:-1], (block[-1].start or 0) + at[0], *at[1:]]
    return int(np.ravel_multi_index(tuple(at), shape)) if shape else 0


def compare_output(
    name: str, pairs: Sequence[tuple[np.ndarray, np.ndarray]], tol: Tolerance, noise: float | None = None,
    element_noise: Sequence[np.ndarray] | None = None, k: float | None = None,
) -> OutputDiff:
    """Compare reference arrays ``a`` against candidate arrays ``b``, one pair per batch.

    The statistics (max/mean/median/p99 abs, max rel) are over the elements finite in both
    models; NaN/Inf are counted per side. The worst element is the failing one with the
    largest ``|a-b|`` (a failing NaN/Inf first, in batch then C order); when nothing fails,
    the element with the largest ``|a-b|``. ``min_atol_to_pass`` is the smallest ``atol``
    that, with ``tol.rtol``, passes every finite element (``inf`` when a NaN/Inf fails).
    ``noise`` (calibrated tolerance) is the output's noise floor; with ``element_noise`` (per pair,
    broadcasting against its arrays) and ``k`` an element fails iff ``|a-b| > k x`` its own noise,
    and ``noise_ratio`` is the largest ``|a-b| / noise`` of an element (the ``K`` it would need).

    Each pair is compared in blocks of :data:`CHUNK` elements (:func:`chunks`), in C order, so the
    rule's temporaries stay small; the verdict and every statistic are those of the whole arrays.
    """
    pairs = [(np.asarray(a), np.asarray(b)) for a, b in pairs]
    n = sum(int(a.size) for a, _ in pairs)
    narrow = all(a.dtype.itemsize <= 4 and b.dtype.itemsize <= 4 and a.dtype.kind == b.dtype.kind == "f"
                 for a, b in pairs)
    alld = np.empty(n, np.float32 if narrow else np.float64)  # the finite differences, for the quantiles
    n_fin, top_abs, sum_abs = 0, 0.0, 0.0
    max_rel = min_atol = 0.0
    n_failed = n_mismatch = 0
    nan_a = nan_b = inf_a = inf_b = 0
    nonfinite_at: list[tuple[int, tuple[int, ...]]] = []
    best = None  # (rank, diff, batch, flat index, a, b): rank 2 failing non-finite, 1 failing, 0 passing
    ratio = 0.0
    factor = k
    for k, (a, b) in enumerate(pairs):
        en = None if element_noise is None else np.broadcast_to(np.asarray(element_noise[k]), a.shape)
        first_mismatch = first_bad = None  # flat indices in this pair
        top_fail = top = None  # (diff, flat index)
        for block in chunks(a.shape):
            ab, bb = a[block], b[block]
            eb = None if en is None else np.asarray(en[block], np.float64)  # K x noise in float64
            diff, rel, failed, nonfinite, mismatch, need = elementwise(
                ab, bb, tol, None if eb is None else factor * eb)
            if eb is not None and diff.size:
                with np.errstate(divide="ignore", invalid="ignore"):
                    r = diff / np.maximum(eb, 1e-300)  # 0 where diff is 0 (the divisor is positive)
                ratio = max(ratio, float(r.max()))
                del r
            n_failed += int(failed.sum())
            n_mismatch += int(mismatch.sum())
            any_nonfinite = bool(nonfinite.any())
            if ab.dtype.kind == "f" and any_nonfinite:  # else neither side holds a NaN or an Inf
                nan_a += int(np.isnan(ab).sum())
                nan_b += int(np.isnan(bb).sum())
                inf_a += int(np.isinf(ab).sum())
                inf_b += int(np.isinf(bb).sum())
            if len(nonfinite_at) < NONFINITE_POSITIONS and any_nonfinite:
                flat = np.flatnonzero(nonfinite.ravel())[: NONFINITE_POSITIONS - len(nonfinite_at)]
                nonfinite_at += [(k, _idx(_global(block, int(i), a.shape, diff.shape), a.shape))
                                 for i in flat]
            if diff.size:
                if any_nonfinite and (bad_nf := failed & nonfinite).any():
                    if first_mismatch is None and mismatch.any():
                        first_mismatch = _global(block, int(np.argmax(mismatch.ravel())), a.shape, diff.shape)
                    if first_bad is None:
                        first_bad = _global(block, int(np.argmax(bad_nf.ravel())), a.shape, diff.shape)
                if failed.any():
                    i = int(np.argmax(np.where(failed, diff, -1.0).ravel()))
                    if top_fail is None or float(diff.flat[i]) > top_fail[0]:
                        top_fail = (float(diff.flat[i]), _global(block, i, a.shape, diff.shape))
                i = int(np.argmax(diff.ravel()))
                if top is None or float(diff.flat[i]) > top[0]:
                    top = (float(diff.flat[i]), _global(block, i, a.shape, diff.shape))
                max_rel = max(max_rel, float(rel.max()))
                min_atol = max(min_atol, float(need.max()))
            fin = diff[~nonfinite] if any_nonfinite else diff.ravel()
            if fin.size:
                top_abs, sum_abs = max(top_abs, float(fin.max())), sum_abs + float(fin.sum())
            with np.errstate(over="ignore"):
                alld[n_fin:n_fin + fin.size] = fin
            n_fin += int(fin.size)
        if first_bad is not None:  # a one-sided NaN/Inf first (a mismatch before any other)
            cand = (2, 0.0, k, first_mismatch if first_mismatch is not None else first_bad)
        elif top_fail is not None:
            cand = (1, top_fail[0], k, top_fail[1])
        elif top is not None:
            cand = (0, top[0], k, top[1])
        else:
            cand = None
        if cand is not None and (best is None or cand[:2] > best[:2]):
            best = (*cand, a, b)
    alld = alld[:n_fin]
    a0 = pairs[0][0] if pairs else np.zeros(0, np.float32)
    worst_noise = None
    if best is None:
        wk, widx, av, bv = 0, (), 0.0, 0.0
    else:
        _, _, wk, i, wa, wb = best
        widx, av, bv = _idx(i, wa.shape), _scalar(wa.flat[i]), _scalar(wb.flat[i])
        if element_noise is not None:
            worst_noise = float(np.broadcast_to(np.asarray(element_noise[wk]), wa.shape).flat[i])
    nonfinite_fail = (n_mismatch if tol.allow_nan else nan_a + nan_b + inf_a + inf_b) > 0
    max_abs = top_abs
    # the median as the 50th percentile, with the 99th in one partition of the differences, held in
    # float32 for float32 outputs (half the memory: 0.13 GB on GPT-2 small's logits; the two
    # quantiles are then good to float32's precision, 6e-8 relative; max and mean are exact sums
    # of the float64 differences block by block)
    q = np.percentile(alld, [50, 99], overwrite_input=True) if n_fin else (0.0, 0.0)  # alld is scratch
    return OutputDiff(
        name=name,
        shape=tuple(int(s) for s in a0.shape),
        dtype=str(a0.dtype),
        max_abs=max_abs,
        max_rel=max_rel,
        mean_abs=sum_abs / n_fin if n_fin else 0.0,
        median_abs=float(q[0]),
        p99_abs=float(q[1]),
        worst_batch=wk,
        worst_index=widx,
        a_value=av,
        b_value=bv,
        min_atol_to_pass=float("inf") if nonfinite_fail else min_atol,
        n_failed=n_failed,
        n_elements=n,
        n_nonfinite_mismatch=n_mismatch,
        n_nan=(nan_a, nan_b),
        n_inf=(inf_a, inf_b),
        nonfinite_at=nonfinite_at,
        rtol=tol.rtol,
        atol=tol.atol,
        rule=tol.kind,
        noise=noise,
        ratio=ratio if element_noise is not None else None,
        worst_noise=worst_noise,
        ok=n_failed == 0,
    )


def _idx(i: int, shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(int(j) for j in np.unravel_index(i, shape)) if shape else ()


def _scalar(x) -> float:
    return float(x) if np.asarray(x).dtype.kind in "fb" else int(x)
