"""Depth morphs on arrays: identity kernels, zero branches, fresh kernels.

- An *identity conv* (any groups, dilation, odd kernel) has a one at the centre tap of each
  output channel's own input channel and zeros elsewhere: with 'same' padding and stride 1 it
  returns its input exactly (every product is ``x·1`` or ``x·0``).
- A *zero branch*: the last norm's gamma and beta (or the last conv / linear's weight and bias,
  or a layer-scale vector) set to zero make the branch output exactly ``0`` for finite inputs,
  so ``x + branch(x) = x`` whatever the branch holds, while the zeroed layer still receives a
  gradient (its input is not zero), as zero-gamma initialisation does.
- Fresh kernels are He-normal (fan-in), seeded.
"""

from __future__ import annotations

import numpy as np

from ..errors import PreconditionError


def identity_kernel(channels: int, groups: int, kernel: tuple[int, int], dtype=np.float32) -> np.ndarray:
    """The ``(C, C/groups, kh, kw)`` weight of a conv that is the identity on ``C`` channels."""
    kh, kw = (int(k) for k in kernel)
    if kh % 2 == 0 or kw % 2 == 0:
        raise PreconditionError(f"an identity conv needs an odd kernel (got {kh}x{kw})")
    if channels % groups:
        raise PreconditionError(f"{channels} channels do not split into {groups} groups")
    per = channels // groups
    w = np.zeros((channels, per, kh, kw), dtype=dtype)
    c = np.arange(channels)
    w[c, c % per, kh // 2, kw // 2] = 1
    return w


def zeros_like(a: np.ndarray) -> np.ndarray:
    """Zeros of ``a``'s shape and dtype (a zeroed gamma / beta / weight / bias / scale)."""
    return np.zeros(np.shape(a), dtype=np.asarray(a).dtype)


def he_normal(shape: tuple[int, ...], rng: np.random.Generator, dtype=np.float32) -> np.ndarray:
    """He-normal weights (std ``sqrt(2 / fan_in)``, fan-in = product of all but the first axis)."""
    fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else int(shape[0])
    return (rng.standard_normal(shape) * np.sqrt(2.0 / max(fan_in, 1))).astype(dtype)
