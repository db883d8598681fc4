"""``split_kernel``: one entry point over the kernel-decomposition solvers."""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import nullcontext

import numpy as np

from ..errors import PreconditionError
from .checks import check_kernel, check_sizes
from .compose import relative_residual, target_kernel
from .device import threads_for, torch_device
from .exact import solve_exact
from .lsq import solve_lsq
from .optgd import solve_optgd
from .result import SplitResult, offcentre_energy

SOLVERS: dict[str, Callable] = {"exact": solve_exact, "optgd": solve_optgd, "lsq": solve_lsq}
"""Solver name -> ``fn(target, *, cmid, k1, k2, g, seed, max_iter, tol, device, **options)``
returning ``(f1, f2, iterations, losses)`` in float64."""

EXACT_SOLVERS = frozenset({"exact"})
"""Solvers whose contract is exact (function-preserving to float precision)."""

SOLVER_OPTIONS: dict[str, frozenset[str]] = {"optgd": frozenset({"step", "alpha"})}
"""Extra keyword options each solver accepts through :func:`split_kernel`."""


def split_kernel(G, *, cmid: int, k1: int, k2: int, method: str = "exact", seed: int = 0,
                 max_iter: int = 1000, tol: float = 1e-10, device: str = "cpu", **options) -> SplitResult:
    """Split convolution kernel ``G`` into ``f1`` (k1) followed by ``f2`` (k2) through ``cmid`` channels.

    The target is ``G`` zero-padded, centred, to ``k1 + k2 - 1`` (the paper's Eq. 5).

    Parameters
    ----------
    G : array_like
        (Cout, Cin, K, K) floating-point kernel; grouped / depthwise convolutions are not handled here.
    cmid : int
        Width of the new middle layer.
    k1, k2 : int
        Kernel sizes of the first and second factor; ``K <= k1 + k2 - 1`` with matching parity.
    method : str
        A key of :data:`SOLVERS`: ``"exact"`` (closed form, exact contract, one factor centre-tap),
        ``"optgd"`` (paper's Algorithm 1, approximate) or ``"lsq"`` (alternating least squares,
        approximate).
    seed : int
        Seeds every random choice; equal seeds give equal results on one device.
    max_iter, tol : int, float
        Iterative solvers stop after ``max_iter`` iterations or when the relative residual is ``<= tol``.
    device : str
        ``"cpu"`` or ``"cuda"`` for the iterative solvers (the exact solver always runs in numpy).
    **options
        Solver-specific options: optgd takes ``step`` ("parabola", the paper's, or "closed") and
        ``alpha`` (the parabola's sample spacing, 1 as in the paper).

    Returns
    -------
    SplitResult
        Factors in ``G``'s dtype, with the residual measured on those cast factors.

    Raises
    ------
    PreconditionError
        (a ``ValueError``) for bad shapes, unknown methods or options, or an impossible exact split.
    """
    g = check_kernel(G)
    check_sizes(cmid, k1, k2)
    if method not in SOLVERS:
        raise PreconditionError(f"unknown split method {method!r}; choose one of {sorted(SOLVERS)}")
    unknown = set(options) - SOLVER_OPTIONS.get(method, frozenset())
    if unknown:
        raise PreconditionError(f"split method {method!r} does not take option(s) {sorted(unknown)}")
    if isinstance(max_iter, bool) or not isinstance(max_iter, (int, np.integer)) or max_iter < 0:
        raise PreconditionError(f"max_iter must be a non-negative integer, got {max_iter!r}")
    target = target_kernel(np.asarray(g, np.float64), k1, k2)
    run = SOLVERS[method]
    work = g.shape[0] * g.shape[1] * cmid * (k1 * k2) ** 2
    t0 = time.perf_counter()
    with nullcontext() if method in EXACT_SOLVERS else threads_for(torch_device(device), work):
        f1, f2, iterations, losses = run(
            target, cmid=cmid, k1=k1, k2=k2, g=g, seed=seed, max_iter=max_iter, tol=tol, device=device,
            **options,
        )
    seconds = time.perf_counter() - t0
    f1 = np.ascontiguousarray(f1, dtype=g.dtype)
    f2 = np.ascontiguousarray(f2, dtype=g.dtype)
    return SplitResult(
        f1=f1, f2=f2, method=method, exact=method in EXACT_SOLVERS,
        residual=relative_residual(f1, f2, target), iterations=int(iterations), seconds=seconds,
        energy_f1=offcentre_energy(f1), energy_f2=offcentre_energy(f2), losses=tuple(losses),
    )
