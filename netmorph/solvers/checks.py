"""Argument checks shared by the solvers: one clear message per bad input."""

from __future__ import annotations

import numpy as np

from ..errors import PreconditionError


def check_kernel(g) -> np.ndarray:
    """Return ``g`` as a float array of shape (Cout, Cin, K, K), or raise a clear error."""
    arr = np.asarray(g)
    if not np.issubdtype(arr.dtype, np.floating):
        raise PreconditionError(f"kernel must be a floating-point array, got dtype {arr.dtype}")
    if arr.ndim != 4:
        raise PreconditionError(f"kernel must have shape (Cout, Cin, K, K), got {arr.shape}")
    if arr.shape[2] != arr.shape[3]:
        raise PreconditionError(f"kernel must be square, got spatial size {arr.shape[2]}x{arr.shape[3]}")
    if min(arr.shape) < 1:
        raise PreconditionError(f"kernel must not be empty, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise PreconditionError("kernel contains NaN or infinite values")
    return arr


def check_sizes(cmid: int, k1: int, k2: int) -> None:
    """Refuse non-positive middle width or kernel sizes."""
    for name, v in (("cmid", cmid), ("k1", k1), ("k2", k2)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise PreconditionError(f"{name} must be a positive integer, got {v!r}")


def orthonormal(rows: int, cols: int, rng: np.random.Generator) -> np.ndarray:
    """A random (rows, cols) float64 matrix with orthonormal columns (``rows >= cols``), Haar-distributed."""
    a = rng.standard_normal((rows, cols))
    q, r = np.linalg.qr(a)
    return q * np.sign(np.where(np.diag(r) == 0, 1.0, np.diag(r)))
