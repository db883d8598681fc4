"""Batch-wise data augmentation and normalisation on the device (no per-image Python loop)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def normalize(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """``(x - mean) / std`` in float32 of a uint8/float NCHW batch; ``mean``, ``std``: ``(1, C, 1, 1)``."""
    return (x.float() - mean) / std


def crop_flip(
    x: torch.Tensor, pad: int, dy: torch.Tensor, dx: torch.Tensor, flip: torch.Tensor
) -> torch.Tensor:
    """Zero-pad ``x`` by ``pad`` pixels, crop back to its size at per-sample offsets, flip some.

    Parameters
    ----------
    x
        ``(B, C, H, W)`` batch.
    pad
        Padding on each side.
    dy, dx
        ``(B,)`` integer offsets in ``[0, 2 * pad]`` of each crop's top-left corner in the padded
        image (``pad`` is the centred, unshifted crop).
    flip
        ``(B,)`` bool: mirror that sample left-right.

    Returns
    -------
    Tensor
        ``(B, C, H, W)``; ``out[b, :, i, j] = padded[b, :, dy+i, dx+j]`` or, flipped,
        ``padded[b, :, dy+i, dx+W-1-j]``. One gather for the whole batch.
    """
    b, c, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad)) if pad else x
    ar_h = torch.arange(h, device=x.device)
    ar_w = torch.arange(w, device=x.device)
    rows = dy[:, None] + ar_h[None, :]  # (B, H)
    cols = dx[:, None] + torch.where(flip[:, None], (w - 1) - ar_w[None, :], ar_w[None, :])  # (B, W)
    batch = torch.arange(b, device=x.device)[:, None, None]
    out = padded[batch, :, rows[:, :, None], cols[:, None, :]]  # (B, H, W, C): advanced dims first
    return out.permute(0, 3, 1, 2)


def random_crop_flip(
    x: torch.Tensor, pad: int, flip: bool, generator: torch.Generator | None
) -> torch.Tensor:
    """Random pad-and-crop plus random horizontal flip of a whole batch (see :func:`crop_flip`).

    Draws offsets and flips from ``generator`` (on ``x``'s device), so a seeded generator gives a
    reproducible augmentation.
    """
    if pad == 0 and not flip:
        return x
    b = x.shape[0]
    dy = torch.randint(0, 2 * pad + 1, (b,), device=x.device, generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (b,), device=x.device, generator=generator)
    flips = torch.rand(b, device=x.device, generator=generator) < 0.5
    if not flip:
        flips = torch.zeros_like(flips)
    return crop_flip(x, pad, dy, dx, flips)
