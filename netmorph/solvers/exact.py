"""The closed-form exact split: one factor is a centre-tap channel mixer, the other holds the kernel.

With ``Q`` (Cmid, Cin) having orthonormal columns (needs Cmid >= Cin)::

    f1 = Q * delta            (centre tap only, size k1)
    f2[:, :, p, q] = G~[:, :, p + c1, q + c1] @ Q^T     (c1 = (k1 - 1) // 2, size k2)

so ``compose(f1, f2) = G~ Q^T Q = G~`` exactly. If Cmid < Cin the roles swap: ``f2 = P * delta`` with
``P`` (Cout, Cmid) having orthonormal rows (needs Cmid >= Cout) and ``f1 = P^T G~``. The dense factor
must be large enough to hold the kernel. design.md §3 explains why no exact split can spread the
energy of a generic kernel over both factors.
"""

from __future__ import annotations

import numpy as np

from ..errors import PreconditionError
from .checks import orthonormal


def _window(target: np.ndarray, k_delta: int, k_dense: int) -> np.ndarray | None:
    """The ``k_dense`` window of ``target`` seen through a delta at the centre of a ``k_delta`` kernel.

    Returns ``None`` when part of ``target`` falls outside that window.
    """
    c = (k_delta - 1) // 2
    win = target[:, :, c:c + k_dense, c:c + k_dense]
    # exact test (a difference of two float sums of squares can be > 0 by rounding alone)
    outside = np.ones(target.shape[2:], dtype=bool)
    outside[c:c + k_dense, c:c + k_dense] = False
    return win if not np.any(target[:, :, outside]) else None


def solve_exact(target: np.ndarray, *, cmid: int, k1: int, k2: int, g: np.ndarray | None = None,
                seed: int = 0, max_iter: int = 0, tol: float = 0.0,
                device: str = "cpu") -> tuple[np.ndarray, np.ndarray, int, list[float]]:
    """Exact split of ``target`` (Cout, Cin, k1+k2-1, k1+k2-1) in float64 with numpy.

    ``g``, ``max_iter``, ``tol`` and ``device`` are accepted for a uniform solver signature and unused
    (a closed form on small arrays needs no accelerator).

    Returns
    -------
    (f1, f2, iterations, losses)
        float64 factors, 0 and an empty list.

    Raises
    ------
    PreconditionError
        When neither side is possible: Cmid < Cin and Cmid < Cout, or the dense factor is too small to
        hold the kernel.
    """
    t = np.asarray(target, np.float64)
    cout, cin = t.shape[:2]
    rng = np.random.default_rng(seed)
    reasons = []
    if cmid >= cin:
        win = _window(t, k1, k2)
        if win is not None:
            q = orthonormal(cmid, cin, rng)  # (cmid, cin), q.T @ q = I
            f1 = np.zeros((cmid, cin, k1, k1))
            f1[:, :, (k1 - 1) // 2, (k1 - 1) // 2] = q
            f2 = np.einsum("ocpq,mc->ompq", win, q)
            return f1, f2, 0, []
        reasons.append(f"f2 ({k2}x{k2}) is too small to hold the kernel")
    else:
        reasons.append(f"cmid={cmid} < cin={cin} for a centre-tap f1")
    if cmid >= cout:
        win = _window(t, k2, k1)
        if win is not None:
            p = orthonormal(cmid, cout, rng).T  # (cout, cmid), p @ p.T = I
            f2 = np.zeros((cout, cmid, k2, k2))
            f2[:, :, (k2 - 1) // 2, (k2 - 1) // 2] = p
            f1 = np.einsum("om,ocab->mcab", p, win)
            return f1, f2, 0, []
        reasons.append(f"f1 ({k1}x{k1}) is too small to hold the kernel")
    else:
        reasons.append(f"cmid={cmid} < cout={cout} for a centre-tap f2")
    raise PreconditionError(
        "exact split impossible for kernel (Cout={}, Cin={}) -> cmid={}, {}x{} + {}x{}: {}; use an "
        "approximate solver ('optgd', 'lsq') or widen cmid".format(cout, cin, cmid, k1, k1, k2, k2,
                                                                 "; ".join(reasons))
    )
