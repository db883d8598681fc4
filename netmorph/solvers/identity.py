"""Splits of a scaled identity ``scale * Id`` into two convolutions (ResNet block duplication).

``method="dense"`` (design.md §3, fact (2)) builds factors that are exact *and* spread over their taps.
With ``Q`` orthogonal and ``N`` a kernel whose every tap is ``U W_t V^T`` with ``V^T U = 0`` (so every
product of two taps of ``N`` vanishes)::

    f1 = (I delta + N) Q            f2 = scale * Q^T (I delta - N)
    compose(f1, f2) = scale * Q^T (I - N * N) Q = scale * Id

``N`` lives on the central ``min(k1, k2)`` window (both factors must carry the same taps for the
linear terms to cancel). ``U`` and ``V`` are the first and second ``channels // 2`` columns of one
random orthogonal matrix; the entries of ``W_t`` are Gaussian with std ``2 * spread / sqrt(channels)``
so that each tap of ``N`` carries on average ``spread^2 * channels`` Frobenius energy, as much as the
identity part (``spread = 1`` puts about 80% of a 3x3 factor's energy off centre).

With 'same' zero padding the chain ``f1 -> f2`` is the identity on full outputs, borders included: the
off-centre taps of ``f1`` write only into ``range(U)``, the off-centre taps of ``f2`` read only from
``range(V)``, and the zero-padded border of the intermediate loses nothing ``f2`` would read.

For ``scale == 0`` (standard ResNets, r = 1) the dense factors are non-zero with composition exactly 0:
every tap of ``f1`` is ``U A_t`` (writes into ``range(U)``) and every tap of ``f2`` is ``B_s V^T``
(reads from ``range(V)``), each rescaled to He-normal magnitude ``spread * sqrt(2 / (channels k^2))``.

``method="exact"`` is the plain centre-tap identity: ``f1 = Q delta``, ``f2 = scale Q^T delta``.
"""

from __future__ import annotations

import time

import numpy as np

from ..errors import PreconditionError
from .checks import check_sizes, orthonormal
from .compose import relative_residual
from .result import SplitResult, offcentre_energy

METHODS = ("dense", "exact")


def _centred(tap_kernel: np.ndarray, k: int) -> np.ndarray:
    """Embed a (C, C, s, s) kernel in the centre of a (C, C, k, k) one (s <= k, both odd)."""
    s = tap_kernel.shape[-1]
    off = (k - s) // 2
    out = np.zeros(tap_kernel.shape[:2] + (k, k))
    out[:, :, off:off + s, off:off + s] = tap_kernel
    return out


def _delta(mat: np.ndarray, k: int) -> np.ndarray:
    """A (rows, cols, k, k) kernel holding ``mat`` at the centre tap only."""
    out = np.zeros(mat.shape + (k, k))
    out[:, :, (k - 1) // 2, (k - 1) // 2] = mat
    return out


def identity_split(channels: int, *, k1: int, k2: int, scale: float, method: str = "dense", seed: int = 0,
                   spread: float = 1.0, dtype=np.float32) -> SplitResult:
    """Two (channels x channels) convolutions whose composition is ``scale`` times the identity.

    Parameters
    ----------
    channels : int
        Input, middle and output width C.
    k1, k2 : int
        Odd kernel sizes of the first and second factor.
    scale : float
        The identity's factor, ``1 - r`` for residual ratio r (0 for standard ResNets).
    method : {"dense", "exact"}
        ``"dense"``: both factors spread over their taps (needs channels >= 2 and, for a non-zero scale,
        k1, k2 not both 1 to spread anything); ``"exact"``: centre-tap factors.
    seed : int
        Seed of ``Q``, ``U``, ``V`` and the tap weights.
    spread : float
        Dense method: relative energy of the off-centre part (see the module docstring).
    dtype : numpy dtype
        Dtype of the returned factors (float32 by default).

    Returns
    -------
    SplitResult
        ``exact=True``; ``residual`` is relative to ``scale * Id`` (absolute for scale 0).
    """
    check_sizes(channels, k1, k2)
    if k1 % 2 == 0 or k2 % 2 == 0:
        raise PreconditionError(f"identity_split needs odd kernel sizes, got k1={k1}, k2={k2}")
    if method not in METHODS:
        raise PreconditionError(f"identity_split method must be one of {METHODS}, got {method!r}")
    if not np.isfinite(scale):
        raise PreconditionError(f"identity_split scale must be finite, got {scale!r}")
    if method == "dense" and channels < 2:
        raise PreconditionError(
            f"a dense identity split needs channels >= 2 (U and V must be orthogonal), got {channels}"
        )
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    c = channels
    q = orthonormal(c, c, rng)
    if method == "exact":
        f1 = _delta(q, k1)
        f2 = _delta(scale * q.T, k2)
    else:
        basis = orthonormal(c, c, rng)
        r = c // 2
        u, v = basis[:, :r], basis[:, r:2 * r]
        if scale == 0.0:
            a = rng.standard_normal((k1, k1, r, c))
            b = rng.standard_normal((k2, k2, c, r))
            f1 = np.einsum("cr,abrm->cmab", u, a, optimize=True)  # taps U A_t: (out=C, in=C, k1, k1)
            f2 = np.einsum("abor,mr->omab", b, v, optimize=True)  # taps B_s V^T
            f1 *= spread * np.sqrt(2.0 / (c * k1 * k1)) / np.std(f1)
            f2 *= spread * np.sqrt(2.0 / (c * k2 * k2)) / np.std(f2)
        else:
            ks = min(k1, k2)
            w = rng.standard_normal((ks, ks, r, r)) * (2.0 * spread / np.sqrt(c))
            n_taps = np.einsum("ir,abrs,js->ijab", u, w, v, optimize=True)  # (C, C, ks, ks), taps U W_t V^T
            eye = np.eye(c)
            f1 = np.einsum("ijab,jk->ikab", _delta(eye, k1) + _centred(n_taps, k1), q)
            f2 = scale * np.einsum("ki,ijab->kjab", q.T, _delta(eye, k2) - _centred(n_taps, k2))
    kt = k1 + k2 - 1
    target = _delta(scale * np.eye(c), kt)
    f1 = f1.astype(dtype)
    f2 = f2.astype(dtype)
    return SplitResult(
        f1=f1, f2=f2, method=method, exact=True, residual=relative_residual(f1, f2, target), iterations=0,
        seconds=time.perf_counter() - t0, energy_f1=offcentre_energy(f1), energy_f2=offcentre_energy(f2),
    )
