"""Kernel growth on arrays: a KxK conv becomes (K+2j)x(K+2j) by zero-padding its kernel.

With the conv's spatial padding grown by ``dilation·j`` on every side, every output position
reads the same input pixels with the same weights plus new taps of weight zero: exact.
"""

from __future__ import annotations

import numpy as np

from ..errors import PreconditionError


def pad_kernel(w: np.ndarray, kernel: tuple[int, int]) -> np.ndarray:
    """``w`` (O, I, kh, kw) zero-padded symmetrically to ``kernel`` (both larger by an even amount)."""
    w = np.asarray(w)
    kh, kw = w.shape[2:]
    nh, nw = (int(k) for k in kernel)
    if nh < kh or nw < kw or (nh - kh) % 2 or (nw - kw) % 2:
        raise PreconditionError(
            f"kernel {kh}x{kw} grows to {nh}x{nw} only by an even, non-negative amount per side pair"
        )
    jh, jw = (nh - kh) // 2, (nw - kw) // 2
    return np.pad(w, ((0, 0), (0, 0), (jh, jh), (jw, jw)))


def grown_pads(pads: list[int], old: tuple[int, int], new: tuple[int, int],
               dilations: tuple[int, int]) -> list[int]:
    """ONNX ``pads`` (top, left, bottom, right) for the grown kernel: ``+ dilation·j`` each side."""
    jh = (int(new[0]) - int(old[0])) // 2 * int(dilations[0])
    jw = (int(new[1]) - int(old[1])) // 2 * int(dilations[1])
    t, left, b, r = (int(p) for p in pads)
    return [t + jh, left + jw, b + jh, r + jw]
