"""optGD: the paper's Algorithm 1 (alternating gradient steps with the optimal step size).

Faithful to Algorithm 1 and Eq. 6-7 of the paper:

1. ``f1`` is initialised with unit Gaussian noise, ``f2`` He-normal (std ``sqrt(2 / (Cmid * k2^2))``).
2. ``G`` is divided by its standard deviation ``sigma`` (recorded) and zero-padded to G~.
3. Each iteration fixes ``f2`` and takes one gradient step on ``f1`` of
   ``l = mean((G~ - compose(f1, f2))^2)``, then fixes ``f1`` and does the same for ``f2``.
   The step size is the vertex of the parabola through ``l(0), l(alpha), l(2 alpha)`` with
   ``alpha = 1`` (as in the paper)::

       eta = alpha / 2 - alpha * (l1 - l0) / (l2 - 2 l1 + l0)

   (Eq. 7 as printed is garbled; this is the vertex.) With one factor fixed ``l(eta)`` is *exactly*
   quadratic, ``l(eta) = ||R - eta P||^2 / N`` with ``R = compose(f1, f2) - G~`` and ``P`` the
   composed kernel of the gradient direction, so ``eta = <R, P> / ||P||^2`` is the same step in
   closed form (``step="closed"``: two compositions per half-step instead of four).
4. Stop when the relative residual ``||R|| / ||G~||`` falls to ``tol`` or after ``max_iter``
   iterations; then multiply ``f1`` by ``sigma`` and rescale ``f1`` and ``f2`` (by ``c`` and ``1/c``) so
   their standard deviations are equal. The product is unchanged.

The gradient is written out (``dl/df1 = 2/N * adjoint_f1(R)``, see :class:`Composer`), not taped.
Computation is in float64 with torch (CPU or CUDA); initialisation is drawn on the CPU from ``seed``
so results do not depend on the device beyond rounding.
"""

from __future__ import annotations

import numpy as np

from ..errors import PreconditionError
from .composer import Composer
from .device import torch_device

STEPS = ("parabola", "closed")


def parabola_step(l0: float, l1: float, l2: float, alpha: float = 1.0) -> float:
    """Vertex of the parabola through ``(0, l0), (alpha, l1), (2 alpha, l2)`` (the paper's Eq. 7).

    Returns 0 when the three points have no positive curvature (no descent possible along the line).
    """
    curv = l2 - 2.0 * l1 + l0
    if not curv > 0.0:
        return 0.0
    return alpha / 2.0 - alpha * (l1 - l0) / curv


def solve_optgd(target: np.ndarray, *, cmid: int, k1: int, k2: int, g: np.ndarray, seed: int = 0,
                max_iter: int = 1000, tol: float = 1e-10, device: str = "cpu", step: str = "parabola",
                alpha: float = 1.0) -> tuple[np.ndarray, np.ndarray, int, list[float]]:
    """Run optGD on ``target`` (G~, unnormalised); ``g`` is the original kernel (for its std).

    Returns
    -------
    (f1, f2, iterations, losses)
        float64 factors after rescaling, iterations run, and the relative squared residual
        ``||R||^2 / ||G~||^2`` before the first and after every iteration.
    """
    import torch

    if step not in STEPS:
        raise PreconditionError(f"optgd step must be one of {STEPS}, got {step!r}")
    if not (np.isfinite(alpha) and alpha > 0):
        raise PreconditionError(f"optgd alpha must be a positive number, got {alpha!r}")
    dev = torch_device(device)
    cout, cin = target.shape[:2]
    gen = torch.Generator().manual_seed(int(seed))
    f1 = torch.randn((cmid, cin, k1, k1), generator=gen, dtype=torch.float64)
    he_std = np.sqrt(2.0 / (cmid * k2 * k2))
    f2 = torch.randn((cout, cmid, k2, k2), generator=gen, dtype=torch.float64) * he_std
    sigma = float(np.std(np.asarray(g, np.float64)))
    if sigma == 0.0:  # G == 0: f2 = 0 is an exact answer.
        return f1.numpy(), np.zeros((cout, cmid, k2, k2)), 0, [0.0]
    gt = torch.as_tensor(np.asarray(target, np.float64) / sigma, device=dev)
    f1, f2 = f1.to(dev), f2.to(dev)
    comp = Composer(k1, k2, dev, torch.float64)
    n = gt.numel()
    ref = float(torch.sum(gt * gt))

    def half_step(a, b, r, which):
        """Optimal gradient step on factor ``which`` (0: a, 1: b); returns the new factor and residual."""
        x = a if which == 0 else b
        d = (2.0 / n) * (comp.adjoint_f1(r, b) if which == 0 else comp.adjoint_f2(r, a))
        # compose() is linear in each factor, so the residual at x - eta*d is r - eta*p with
        # p = compose(d, other): one composition per half step gives l(0), l(alpha), l(2*alpha).
        p = comp.compose(d, b) if which == 0 else comp.compose(a, d)
        if step == "parabola":
            l0 = float(torch.sum(r * r)) / n
            l1 = float(torch.sum((r - alpha * p) ** 2)) / n
            l2 = float(torch.sum((r - 2.0 * alpha * p) ** 2)) / n
            eta = parabola_step(l0, l1, l2, alpha)
            x = x - eta * d
            r = r - eta * p
        else:
            pp = float(torch.sum(p * p))
            eta = float(torch.sum(r * p)) / pp if pp > 0.0 else 0.0
            x = x - eta * d
            r = r - eta * p
        return x, r

    r = comp.compose(f1, f2) - gt
    losses = [float(torch.sum(r * r)) / ref]
    it = 0
    while it < max_iter and np.sqrt(losses[-1]) > tol:
        f1, r = half_step(f1, f2, r, 0)
        f2, r = half_step(f1, f2, r, 1)
        it += 1
        if it % 100 == 0:  # the closed-form update of r accumulates rounding; refresh it now and then
            r = comp.compose(f1, f2) - gt
        losses.append(float(torch.sum(r * r)) / ref)
    a = f1.cpu().numpy() * sigma
    b = f2.cpu().numpy()
    sa, sb = float(np.std(a)), float(np.std(b))
    if sa > 0.0 and sb > 0.0:
        c = np.sqrt(sb / sa)
        a, b = a * c, b / c
    return a, b, it, losses
