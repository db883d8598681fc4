"""LSQ: alternating least squares in the style of Wei et al. (2016), for comparison (paper Table 4).

What is implemented, precisely (the network-morphism "general" algorithm of Wei et al.):

1. ``f1`` is initialised with unit Gaussian noise from ``seed``; nothing else is normalised.
2. Each iteration fixes ``f1`` and solves ``min ||compose(f1, f2) - G~||_F`` for ``f2`` *exactly* by
   linear least squares (minimum-norm solution), then fixes ``f2`` and solves for ``f1`` the same way.
   The composition is linear in each factor and separates over channels: given ``f1`` the problem
   splits into one least-squares system per output channel (all sharing one matrix), given ``f2``
   into one per input channel.
3. Stop when the relative residual reaches ``tol`` or after ``max_iter`` iterations. No rescaling of
   the factors at the end (Wei et al. do not balance them), so the factor norms are whatever the
   least-squares solves produce: the first solve fits ``f2`` to unit-noise ``f1``, and the norm
   imbalance between the factors is inherited from that start.

Computation is in float64 with torch on ``device``.
"""

from __future__ import annotations

import numpy as np

from .composer import Composer
from .device import torch_device


def _lstsq(a, b):
    """Least-squares solution of ``a x = b`` (minimum-norm when ``a`` is rank deficient).

    Normal equations with a Cholesky factorisation when ``a`` is tall and well conditioned enough for
    it to succeed (fast: the Gram matrix is small); otherwise an SVD-based solve.
    """
    import torch

    if a.shape[0] >= a.shape[1]:
        gram = a.T @ a
        chol, info = torch.linalg.cholesky_ex(gram)
        if int(info) == 0:
            diag = torch.diagonal(chol)
            if float(diag.min()) > 1e-4 * float(diag.max()):  # condition(gram) about < 1e8
                return torch.cholesky_solve(a.T @ b, chol)
    if a.device.type == "cpu":
        return torch.linalg.lstsq(a, b, driver="gelsd").solution
    return torch.linalg.pinv(a) @ b


def solve_lsq(target: np.ndarray, *, cmid: int, k1: int, k2: int, g: np.ndarray | None = None, seed: int = 0,
              max_iter: int = 1000, tol: float = 1e-10,
              device: str = "cpu") -> tuple[np.ndarray, np.ndarray, int, list[float]]:
    """Alternating least squares on ``target`` (G~); ``g`` is unused (uniform signature).

    Returns
    -------
    (f1, f2, iterations, losses)
        float64 factors, iterations run, relative squared residual before the first and after every
        iteration (before the first: with ``f2 = 0``, i.e. 1.0).
    """
    import torch

    dev = torch_device(device)
    cout, cin = target.shape[:2]
    gen = torch.Generator().manual_seed(int(seed))
    f1 = torch.randn((cmid, cin, k1, k1), generator=gen, dtype=torch.float64).to(dev)
    f2 = torch.zeros((cout, cmid, k2, k2), dtype=torch.float64, device=dev)
    gt = torch.as_tensor(np.asarray(target, np.float64), device=dev)
    ref = float(torch.sum(gt * gt))
    if ref == 0.0:
        return f1.cpu().numpy(), f2.cpu().numpy(), 0, [0.0]
    comp = Composer(k1, k2, dev, torch.float64)
    kt = k1 + k2 - 1
    rhs_f2 = gt.permute(1, 2, 3, 0).reshape(cin * kt * kt, cout)  # rows (c, uv), one column per o
    rhs_f1 = gt.permute(0, 2, 3, 1).reshape(cout * kt * kt, cin)  # rows (o, uv), one column per c
    losses = [1.0]
    it = 0
    while it < max_iter and np.sqrt(losses[-1]) > tol:
        f2 = _lstsq(comp.matrix_for_f2(f1), rhs_f2).reshape(cmid, k2, k2, cout).permute(3, 0, 1, 2)
        f1 = _lstsq(comp.matrix_for_f1(f2), rhs_f1).reshape(cmid, k1, k1, cin).permute(0, 3, 1, 2)
        it += 1
        losses.append(float(torch.sum((comp.compose(f1, f2) - gt) ** 2)) / ref)
    return f1.cpu().numpy(), f2.cpu().numpy(), it, losses
