"""Build PlainNet and ResNet(r) models of the DynamicNet family (paper §3.2, Figs 3–5).

Layout: optional stem ``D``, ``k`` level blocks ``L`` (a channel-switching block ``C`` then
``n − 1`` template blocks ``T``), tail ``F`` (GlobalAveragePool, Flatten, Gemm, optional Softmax).
"""

from __future__ import annotations

from .. import __version__
from ..ir import Graph, Value, infer_types
from .config import DynamicNetConfig, make_config
from .layers import LayerWriter

OPSET = 17
IR_VERSION = 8  # the IR version that goes with opset 17; read by every ONNX Runtime since 1.10


def build(family: str, **kwargs) -> Graph:
    """Build a DynamicNet model as an IR graph.

    Parameters
    ----------
    family : {"plain", "resnet"}
        PlainNet (``T`` = conv3x3-BN-ReLU) or ResNet(r) (``T`` = conv3x3-BN-ReLU-conv3x3-BN,
        plus the shortcut ``r·Id``, Add, ReLU; ``C`` uses a 1x1 conv + BN shortcut).
    levels : int, default 3
        Number of level blocks ``k``.
    blocks : int, default 2
        Blocks per level ``n`` (the channel switch ``C`` included).
    channels : sequence of int, optional
        Width per level; default ``16, 32, 64, …`` (doubling from 16).
    residual_ratio : float, default 1.0
        ``r`` in ``(0, 1]`` (ResNet only); ``1`` writes no ``Mul`` on the shortcut.
    classes : int, default 10
    input_shape : (C, H, W), default (3, 32, 32)
    stem : None, bool or {"none", "conv3x3", "imagenet"}, optional
        ``None``: automatic — ImageNet stem (conv7x7/2-BN-ReLU + maxpool3x3/2) for inputs of
        at least 128 pixels a side, otherwise conv3x3-BN-ReLU for ResNet and none for PlainNet
        (the paper's CIFAR setup). ``True`` picks the stem for the input size, ``False`` none.
    seed : int, default 0
    bn_stats : bool, default False
        Random BatchNorm affine parameters and running statistics (for tests).
    softmax : bool, default False
        Append Softmax; the output is then named ``probs`` instead of ``logits``.

    Returns
    -------
    Graph
        Opset 17, input ``input`` of shape ``(N, C, H, W)``, output ``logits`` of shape
        ``(N, classes)``, all values typed; the same arguments give byte-identical files.

    Raises
    ------
    ConfigError
        For an invalid setting (the message names it).
    """
    return build_from_config(make_config(family, **kwargs))


def build_from_config(cfg: DynamicNetConfig) -> Graph:
    """Build the model described by a validated :class:`DynamicNetConfig`."""
    name = f"{cfg.family}net{cfg.depth()}" if cfg.family == "plain" else f"resnet{cfg.depth()}"
    g = Graph(name, {"": OPSET})
    g.ir_version = IR_VERSION
    g.producer_name, g.producer_version = "netmorph", __version__
    g.metadata_props = cfg.metadata()
    w = LayerWriter(g, cfg.seed, bn_stats=cfg.bn_stats)
    x = w.input("input", cfg.input_shape)
    width = cfg.input_shape[0]
    if cfg.stem != "none":
        x, width = _stem(w, x, width, cfg)
    block = _plain_block if cfg.family == "plain" else _resnet_block
    for li, cout in enumerate(cfg.channels, start=1):
        for bi in range(1, cfg.blocks + 1):
            switch = bi == 1
            stride = 2 if switch and li > 1 else 1
            x = block(w, x, f"level{li}.block{bi}", width, cout, stride, switch, cfg.residual_ratio)
            width = cout
    x = w.global_pool(x, "tail.pool")
    x = w.flatten(x, "tail.flatten")
    if cfg.softmax:
        x = w.fc(x, "tail.fc", width, cfg.classes)
        x = w.softmax(x, "tail.softmax", output_name="probs")
    else:
        x = w.fc(x, "tail.fc", width, cfg.classes, output_name="logits")
    g.outputs.append(x)
    infer_types(g)
    g.check()
    return g


def _stem(w: LayerWriter, x: Value, cin: int, cfg: DynamicNetConfig) -> tuple[Value, int]:
    c = cfg.stem_width
    if cfg.stem == "imagenet":
        x = w.relu(w.bn(w.conv(x, "stem.conv1", cin, c, 7, stride=2), "stem.bn1", c), "stem.relu1")
        return w.maxpool(x, "stem.pool", 3, 2), c
    x = w.relu(w.bn(w.conv(x, "stem.conv1", cin, c, 3), "stem.bn1", c), "stem.relu1")
    return x, c


def _plain_block(w: LayerWriter, x: Value, p: str, cin: int, cout: int, stride: int, switch: bool,
                 r: float) -> Value:
    return w.relu(w.bn(w.conv(x, f"{p}.conv1", cin, cout, 3, stride), f"{p}.bn1", cout), f"{p}.relu1")


def _resnet_block(w: LayerWriter, x: Value, p: str, cin: int, cout: int, stride: int, switch: bool,
                  r: float) -> Value:
    y = w.relu(w.bn(w.conv(x, f"{p}.conv1", cin, cout, 3, stride), f"{p}.bn1", cout), f"{p}.relu1")
    y = w.bn(w.conv(y, f"{p}.conv2", cout, cout, 3), f"{p}.bn2", cout)
    if switch:
        s = w.bn(w.conv(x, f"{p}.shortcut", cin, cout, 1, stride), f"{p}.shortcut_bn", cout)
    elif r != 1.0:
        s = w.scale(x, f"{p}.scale", r)
    else:
        s = x
    return w.relu(w.add(y, s, f"{p}.add"), f"{p}.relu")
