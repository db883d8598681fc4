"""The configuration of a DynamicNet model, validated once, before anything is built."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import NetmorphError
from ..limits import (
    MAX_BLOCKS,
    MAX_BUILD_PARAMETERS,
    MAX_IMAGE_SIDE,
    MAX_LEVELS,
    MAX_SEED,
    MAX_WIDTH,
)

FAMILIES = ("plain", "resnet")
STEMS = ("none", "conv3x3", "imagenet")
IMAGENET_MIN_SIDE = 128
"""Inputs at least this large get the ImageNet stem (conv7x7/2 + maxpool/2) when ``stem`` is automatic."""


class ConfigError(NetmorphError):
    """A DynamicNet configuration that cannot be built (the message names the setting)."""


@dataclass(frozen=True)
class DynamicNetConfig:
    """What :func:`netmorph.dynamicnet.build` builds.

    Attributes
    ----------
    family : str
        ``"plain"`` or ``"resnet"``.
    levels, blocks : int
        ``k`` level blocks of ``n`` blocks each (the channel switch counts as a block).
    channels : tuple of int
        Width of each level.
    residual_ratio : float
        ``r`` of the ResNet(r) shortcut ``r·Id`` (``1.0``: plain identity, no ``Mul``).
    classes : int
        Outputs of the classifier.
    input_shape : tuple of int
        ``(C, H, W)`` of one image (the batch dimension is the symbolic ``N``).
    stem : str
        ``"none"``, ``"conv3x3"`` (conv3x3-BN-ReLU) or ``"imagenet"`` (conv7x7/2-BN-ReLU + maxpool/2).
    seed : int
        Seed of the weight initialisation.
    bn_stats : bool
        Random (non-trivial) BatchNorm affine parameters and running statistics.
    softmax : bool
        End with a Softmax (output ``probs``) instead of the raw ``logits``.
    """

    family: str
    levels: int
    blocks: int
    channels: tuple[int, ...]
    residual_ratio: float
    classes: int
    input_shape: tuple[int, int, int]
    stem: str
    seed: int
    bn_stats: bool
    softmax: bool

    @property
    def stem_width(self) -> int:
        return self.channels[0]

    def depth(self) -> int:
        """The paper's weighted-layer count: main-path convs (stem included) plus the FC layer."""
        per_block = 1 if self.family == "plain" else 2
        return (0 if self.stem == "none" else 1) + self.levels * self.blocks * per_block + 1

    def metadata(self) -> list[tuple[str, str]]:
        """``metadata_props`` entries describing the build (hints for tools, never trusted)."""
        return [
            ("netmorph.family", self.family),
            ("netmorph.levels", str(self.levels)),
            ("netmorph.blocks", str(self.blocks)),
            ("netmorph.channels", ",".join(map(str, self.channels))),
            ("netmorph.residual_ratio", repr(float(self.residual_ratio))),
            ("netmorph.stem", self.stem),
            ("netmorph.seed", str(self.seed)),
        ]


def _int(name: str, value, low: int = 1, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) \
            or int(value) != value:
        raise ConfigError(f"{name} must be an integer, got {value!r}")
    if value < low:
        raise ConfigError(f"{name} must be >= {low}, got {value!r}")
    if high is not None and value > high:
        raise ConfigError(f"{name} must be <= {high:,} (documented limit, docs/security.md), got {value:,}")
    return int(value)


def estimated_parameters(levels: int, blocks: int, channels: tuple[int, ...], in_channels: int,
                         classes: int) -> int:
    """An upper estimate of a build's parameter count (3x3 convs, BN, FC), checked before building."""
    total, prev = 0, in_channels
    for c in channels:
        total += (prev * c * 9 + 4 * c) + (blocks * 2) * (c * c * 9 + 4 * c)
        prev = c
    return total + prev * classes + classes


def make_config(
    family: str,
    *,
    levels: int = 3,
    blocks: int = 2,
    channels=None,
    residual_ratio: float = 1.0,
    classes: int = 10,
    input_shape=(3, 32, 32),
    stem=None,
    seed: int = 0,
    bn_stats: bool = False,
    softmax: bool = False,
) -> DynamicNetConfig:
    """Validate the arguments of :func:`~netmorph.dynamicnet.build`; raise :class:`ConfigError`."""
    if family not in FAMILIES:
        raise ConfigError(f"unknown family {family!r} (choose from {', '.join(FAMILIES)})")
    levels = _int("levels", levels, high=MAX_LEVELS)
    blocks = _int("blocks", blocks, high=MAX_BLOCKS)
    classes = _int("classes", classes, high=MAX_WIDTH)
    seed = _int("seed", seed, low=0, high=MAX_SEED)
    if channels is None:
        channels = tuple(16 * 2**i for i in range(levels))
    try:
        if len(channels) > MAX_LEVELS:
            raise ConfigError(f"channels has {len(channels)} entries, above the limit of {MAX_LEVELS} levels")
        channels = tuple(_int("each channel width", c, high=MAX_WIDTH) for c in channels)
    except TypeError:
        raise ConfigError(f"channels must be a sequence of integers, got {channels!r}") from None
    if len(channels) != levels:
        raise ConfigError(f"channels has {len(channels)} entries but levels is {levels}")
    try:
        if len(input_shape) != 3:
            raise ConfigError(f"input_shape must be (C, H, W), got {input_shape!r}")
        input_shape = (_int("input channels", input_shape[0], high=MAX_WIDTH),
                       *(_int("each input side", d, high=MAX_IMAGE_SIDE) for d in input_shape[1:]))
    except TypeError:
        raise ConfigError(f"input_shape must be (C, H, W), got {input_shape!r}") from None
    params = estimated_parameters(levels, blocks, channels, input_shape[0], classes)
    if params > MAX_BUILD_PARAMETERS:
        raise ConfigError(f"this model would have about {params:,} parameters, above the limit of "
                          f"{MAX_BUILD_PARAMETERS:,} (docs/security.md)")
    try:
        r = float(residual_ratio)
    except (TypeError, ValueError):
        raise ConfigError(f"residual_ratio must be a number, got {residual_ratio!r}") from None
    if family == "plain" and r != 1.0:
        raise ConfigError("residual_ratio applies to the resnet family only (plain nets have no shortcut)")
    if not math.isfinite(r) or not 0.0 < r <= 1.0:
        raise ConfigError(f"residual_ratio must be in (0, 1], got {residual_ratio!r}")
    big = min(input_shape[1:]) >= IMAGENET_MIN_SIDE
    if stem is None:
        stem = "imagenet" if big else ("conv3x3" if family == "resnet" else "none")
    elif stem is True:
        stem = "imagenet" if big else "conv3x3"
    elif stem is False:
        stem = "none"
    if stem not in STEMS:
        raise ConfigError(f"unknown stem {stem!r} (choose from {', '.join(STEMS)}, True, False, None)")
    side = min(input_shape[1:]) // (4 if stem == "imagenet" else 1)
    if side // 2 ** (levels - 1) < 1:
        raise ConfigError(
            f"input {input_shape[1]}x{input_shape[2]} is too small for {levels} levels "
            f"(each level after the first halves the feature map)"
        )
    return DynamicNetConfig(
        family, levels, blocks, channels, r, classes, input_shape, stem, seed, bool(bn_stats), bool(softmax)
    )
