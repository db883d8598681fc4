"""Composition of two convolution kernels, and the zero-padded target of a split.

Convention (ONNX / PyTorch ``Conv``): cross-correlation with weights (Cout, Cin, K, K). For *valid*
(unpadded) convolutions ``conv2d(conv2d(x, f1), f2) == conv2d(x, compose(f1, f2))``, where

    compose(f1, f2)[o, c, u, v] = sum_{m, p, q} f2[o, m, p, q] * f1[m, c, u - p, v - q]

is a full 2-D *convolution* over the taps and a matrix product over the middle channels.
"""

from __future__ import annotations

import numpy as np

from ..errors import PreconditionError


def compose(f1: np.ndarray, f2: np.ndarray) -> np.ndarray:
    """Kernel of the convolution ``f1`` followed by ``f2``.

    Parameters
    ----------
    f1 : numpy.ndarray
        (Cmid, Cin, k1, k1), applied first.
    f2 : numpy.ndarray
        (Cout, Cmid, k2, k2), applied second.

    Returns
    -------
    numpy.ndarray
        (Cout, Cin, k1 + k2 - 1, k1 + k2 - 1), in the common result dtype of ``f1`` and ``f2``.

    Raises
    ------
    PreconditionError
        (a ``ValueError``) when the shapes do not chain.
    """
    f1 = np.asarray(f1)
    f2 = np.asarray(f2)
    if f1.ndim != 4 or f2.ndim != 4:
        raise PreconditionError(f"compose: kernels must be 4-D, got f1 {f1.shape} and f2 {f2.shape}")
    if f2.shape[1] != f1.shape[0]:
        raise PreconditionError(
            f"compose: f2 reads {f2.shape[1]} channels but f1 produces {f1.shape[0]} "
            f"(f1 {f1.shape}, f2 {f2.shape})"
        )
    cmid, cin, k1, k1w = f1.shape
    cout, _, k2, k2w = f2.shape
    if k1 != k1w or k2 != k2w:
        raise PreconditionError(f"compose: kernels must be square, got f1 {f1.shape} and f2 {f2.shape}")
    kt = k1 + k2 - 1
    dtype = np.result_type(f1, f2)
    out = np.zeros((cout, cin, kt, kt), dtype=dtype)
    for p in range(k2):
        for q in range(k2):
            out[:, :, p:p + k1, q:q + k1] += np.einsum("om,mcab->ocab", f2[:, :, p, q], f1)
    return out


def target_kernel(g: np.ndarray, k1: int, k2: int) -> np.ndarray:
    """``g`` zero-padded, centred, to the composed size ``k1 + k2 - 1`` (the paper's G-tilde).

    Parameters
    ----------
    g : numpy.ndarray
        (Cout, Cin, K, K).
    k1, k2 : int
        Kernel sizes of the two factors.

    Returns
    -------
    numpy.ndarray
        (Cout, Cin, k1 + k2 - 1, k1 + k2 - 1), dtype of ``g``.

    Raises
    ------
    PreconditionError
        (a ``ValueError``) when ``g`` is larger than the composed kernel or cannot be centred in it
        (``k1 + k2 - 1 - K`` odd).
    """
    kk = g.shape[-1]
    kt = k1 + k2 - 1
    if kk > kt:
        raise PreconditionError(
            f"kernel {kk}x{kk} does not fit the composition of {k1}x{k1} and {k2}x{k2} "
            f"(composed size {kt}x{kt}); need K <= k1 + k2 - 1"
        )
    if (kt - kk) % 2:
        raise PreconditionError(
            f"kernel {kk}x{kk} cannot be centred in the composed {kt}x{kt} kernel of {k1}x{k1} and "
            f"{k2}x{k2} (parity mismatch: k1 + k2 - 1 - K must be even)"
        )
    off = (kt - kk) // 2
    out = np.zeros(g.shape[:2] + (kt, kt), dtype=g.dtype)
    out[:, :, off:off + kk, off:off + kk] = g
    return out


def relative_residual(f1: np.ndarray, f2: np.ndarray, target: np.ndarray) -> float:
    """``||compose(f1, f2) - target||_F / ||target||_F`` in float64 (absolute norm for a zero target)."""
    h = compose(np.asarray(f1, np.float64), np.asarray(f2, np.float64))
    t = np.asarray(target, np.float64)
    err = float(np.linalg.norm(h - t))
    ref = float(np.linalg.norm(t))
    return err / ref if ref > 0.0 else err
