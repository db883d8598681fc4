"""The value every solver returns, and the energy-spread measure it reports."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class SplitResult:
    """Two convolution factors and what they cost.

    Attributes
    ----------
    f1, f2 : numpy.ndarray
        ``f1`` (Cmid, Cin, k1, k1) runs first, ``f2`` (Cout, Cmid, k2, k2) second; same dtype as the
        input kernel.
    method : str
        Name of the solver that produced them (a key of ``SOLVERS``, or ``"dense"`` / ``"exact"`` for
        :func:`identity_split`).
    exact : bool
        ``True`` when the contract is exact: ``compose(f1, f2)`` equals the target up to float rounding,
        so the split preserves the network function. ``False`` for approximate solvers.
    residual : float
        ``||compose(f1, f2) - target||_F / ||target||_F`` computed in float64 on the returned (cast)
        factors; the absolute norm ``||compose(f1, f2)||_F`` when the target is zero.
    iterations : int
        Solver iterations (0 for closed forms).
    seconds : float
        Wall time of the solve.
    energy_f1, energy_f2 : float
        Share of each factor's Frobenius energy that lies *outside its centre tap*
        (see :func:`offcentre_energy`): 0 for a centre-tap-only (1x1-like) kernel, about
        ``(k*k - 1) / (k*k)`` for a kernel whose energy is spread evenly over its ``k*k`` taps.
    losses : tuple of float
        Iterative solvers: the relative squared residual ``||R||^2 / ||target||^2`` after each
        iteration (index 0 is the initial value). Empty for closed forms.
    """

    f1: np.ndarray
    f2: np.ndarray
    method: str
    exact: bool
    residual: float
    iterations: int
    seconds: float
    energy_f1: float
    energy_f2: float
    losses: tuple[float, ...] = field(default=(), repr=False)


def offcentre_energy(kernel: np.ndarray) -> float:
    """Share of a kernel's Frobenius energy outside its centre tap.

    Parameters
    ----------
    kernel : numpy.ndarray
        (Cout, Cin, k, k). The centre tap is ``((k - 1) // 2, (k - 1) // 2)``.

    Returns
    -------
    float
        ``(||kernel||^2 - ||kernel[:, :, c, c]||^2) / ||kernel||^2`` in [0, 1];
        0 for a zero kernel and for k = 1.
    """
    w = np.asarray(kernel, dtype=np.float64)
    total = float(np.sum(w * w))
    if total == 0.0:
        return 0.0
    c = (w.shape[2] - 1) // 2
    sq = w * w
    sq[:, :, c, c] = 0.0
    return float(np.sum(sq)) / total
