"""A small, seeded synthetic image classification task made in code (the default for demos/tests)."""

from __future__ import annotations

import numpy as np

from .dataset import DataError, Splits, make_splits

FREQUENCIES = (1.5, 2.5, 4.0, 6.0)
"""Grating frequencies, in cycles per image side, cycled through by class."""


def _images(labels: np.ndarray, size: int, channels: int, num_classes: int, rng: np.random.Generator):
    n = len(labels)
    grid = np.arange(size, dtype=np.float32) / size
    vertical = (labels % 2 == 1)[:, None, None]  # stripes across x (vertical) or across y
    freq = np.asarray(FREQUENCIES, np.float32)[(labels // 2) % len(FREQUENCIES)][:, None, None]
    phase = rng.uniform(0, 2 * np.pi, size=(n, 1, 1)).astype(np.float32)
    coord = np.where(vertical, grid[None, None, :], grid[None, :, None])
    grating = np.sin(2 * np.pi * freq * coord + phase)  # (n, size, size)
    hue = 2 * np.pi * labels / num_classes
    offsets = 2 * np.pi * np.arange(channels) / max(channels, 1)
    colour = 0.5 + 0.5 * np.cos(hue[:, None] + offsets[None, :])  # (n, channels)
    colour = colour + rng.normal(0, 0.15, size=colour.shape)
    img = 128 + 70 * grating[..., None] * colour[:, None, None, :].astype(np.float32)
    img += 20 * rng.standard_normal(size=img.shape, dtype=np.float32)
    img += rng.normal(0, 15, size=(n, 1, 1, 1)).astype(np.float32)  # brightness jitter
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def make_synthetic(
    n_train: int = 5000,
    n_test: int | None = None,
    *,
    num_classes: int = 10,
    size: int = 32,
    channels: int = 3,
    seed: int = 0,
) -> Splits:
    """Class-dependent gratings with colour, phase, noise and brightness jitter, as ``uint8`` NHWC.

    Class ``c`` draws horizontal (even ``c``) or vertical (odd ``c``) stripes at a frequency picked
    by ``c // 2`` and tinted by a hue picked by ``c``; phase, tint, noise and brightness vary per
    image. The classes survive random crops and horizontal flips, and a small CNN learns them in a
    few epochs. Labels are balanced (``i % num_classes``, shuffled). Deterministic for a ``seed``.

    Parameters
    ----------
    n_train, n_test
        Image counts; ``n_test`` defaults to ``max(n_train // 5, num_classes)``.
    num_classes, size, channels
        Classes, image side in pixels, channels per pixel.
    seed
        Seed of the generator.
    """
    if n_test is None:
        n_test = max(n_train // 5, num_classes)
    if n_train < 1 or n_test < 1 or num_classes < 2 or size < 4 or channels < 1:
        raise DataError(
            f"synthetic: need n_train, n_test >= 1, num_classes >= 2, size >= 4, channels >= 1 "
            f"(got {n_train}, {n_test}, {num_classes}, {size}, {channels})"
        )
    rng = np.random.default_rng(seed)
    y_train = rng.permutation(np.arange(n_train) % num_classes).astype(np.int64)
    y_test = rng.permutation(np.arange(n_test) % num_classes).astype(np.int64)
    x_train = _images(y_train, size, channels, num_classes, rng)
    x_test = _images(y_test, size, channels, num_classes, rng)
    return make_splits(
        x_train, y_train, x_test, y_test, num_classes=num_classes,
        class_names=tuple(f"class{c}" for c in range(num_classes)), name="synthetic",
    )


def input_geometry(graph) -> dict:
    """``make_synthetic`` keywords that fit ``graph``: ``size`` and ``channels`` of its NCHW image
    input (square), ``num_classes`` from its output's last axis (when known).

    Raises
    ------
    DataError
        When the model's image input is not a square NCHW batch of known size.
    """
    ins = [v for v in graph.inputs if not v.is_parameter]
    if len(ins) != 1 or ins[0].type is None or ins[0].type.shape is None or len(ins[0].type.shape) != 4:
        raise DataError("synthetic data follows a model with one NCHW image input; this model has "
                        f"{', '.join(f'{v.name} {v.type}' for v in ins) or 'none'}")
    _, c, h, w = ins[0].type.shape
    if not all(isinstance(d, int) for d in (c, h, w)) or h != w:
        raise DataError(f"synthetic data needs a square image input of known size; {ins[0].name!r} is "
                        f"{ins[0].type}")
    out: dict = {"size": int(h), "channels": int(c)}
    outs = graph.outputs
    if len(outs) == 1 and outs[0].type is not None and outs[0].type.shape:
        k = outs[0].type.shape[-1]
        if isinstance(k, int) and k >= 2:
            out["num_classes"] = int(k)
    return out
