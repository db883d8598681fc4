"""Small real models for the pass tests (helpers, no tests): hand-built conv graphs, torch exports."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

import netmorph
from netmorph.ir import Graph, TensorType


def conv_graph(cin: int = 4, cout: int = 6, k: int = 3, stride: int = 1, bias: bool = False,
               group: int = 1, hw: int = 9, seed: int = 0) -> Graph:
    """input -> Conv -> Relu -> output, as an IR graph (weights random)."""
    rng = np.random.default_rng(seed)
    g = Graph("conv")
    x = g.add_input("x", TensorType.float32("N", cin, hw, hw))
    w = g.add_parameter("conv.weight", rng.normal(0, 0.5, (cout, cin // group, k, k)).astype(np.float32))
    ins = [x, w]
    if bias:
        ins.append(g.add_parameter("conv.bias", rng.normal(0, 0.5, cout).astype(np.float32)))
    p = (k - 1) // 2
    conv = g.create_node("Conv", ins, {"kernel_shape": [k, k], "pads": [p] * 4, "strides": [stride] * 2,
                                       "group": group}, name="conv")
    relu = g.create_node("Relu", [conv.output], name="relu", output_names=["y"])
    g.insert_before(None, conv, relu)
    g.outputs.append(relu.output)
    netmorph.ir.infer_types(g)
    g.check()
    return g


def run_ort(graph: Graph, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Run a graph in a plain ONNX Runtime session (no netmorph.verify involved)."""
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(netmorph.to_onnx(graph).SerializeToString(), so,
                                providers=["CPUExecutionProvider"])
    return sess.run(None, feed)


def max_diff(a: Graph, b: Graph, shape: tuple[int, ...], seed: int = 0) -> float:
    x = np.random.default_rng(seed).normal(size=shape).astype(np.float32)
    name = a.inputs[0].name
    ra, rb = run_ort(a, {name: x}), run_ort(b, {name: x})
    return max(float(np.max(np.abs(u - v))) for u, v in zip(ra, rb, strict=True))


def torch_plainnet(path: Path, widths=(8, 16, 32), blocks: int = 2, seed: int = 0) -> Path:
    """A PlainNet written in torch (conv3x3-BN-ReLU blocks), exported in eval mode (BN folded)."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    layers, cin = [], 3
    for li, c in enumerate(widths):
        for bi in range(blocks):
            stride = 2 if (bi == 0 and li > 0) else 1
            bn = nn.BatchNorm2d(c)
            bn.running_mean.uniform_(-0.1, 0.1)
            bn.running_var.uniform_(0.5, 1.5)
            layers += [nn.Conv2d(cin, c, 3, stride, 1, bias=False), bn, nn.ReLU()]
            cin = c
    model = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, 10)).eval()
    return _export(model, path)


class _Basic:
    """Factory for a torchvision-style BasicBlock (identity shortcut, 1x1 conv on a switch)."""

    @staticmethod
    def make(cin: int, c: int, stride: int):
        import torch
        from torch import nn

        class Basic(nn.Module):
            def __init__(self):
                super().__init__()
                self.conv1 = nn.Conv2d(cin, c, 3, stride, 1, bias=False)
                self.bn1 = nn.BatchNorm2d(c)
                self.conv2 = nn.Conv2d(c, c, 3, 1, 1, bias=False)
                self.bn2 = nn.BatchNorm2d(c)
                self.down = None
                if stride != 1 or cin != c:
                    self.down = nn.Sequential(nn.Conv2d(cin, c, 1, stride, bias=False), nn.BatchNorm2d(c))

            def forward(self, x):
                y = torch.relu(self.bn1(self.conv1(x)))
                y = self.bn2(self.conv2(y))
                s = x if self.down is None else self.down(x)
                return torch.relu(y + s)

        return Basic()


def torch_resnet(path: Path, widths=(8, 16, 32), blocks: int = 2, seed: int = 0) -> Path:
    """A standard (r = 1) CIFAR-style ResNet in torch, exported in eval mode (BN folded)."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    mods = [nn.Conv2d(3, widths[0], 3, 1, 1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU()]
    cin = widths[0]
    for li, c in enumerate(widths):
        for bi in range(blocks):
            mods.append(_Basic.make(cin, c, 2 if (bi == 0 and li > 0) else 1))
            cin = c
    model = nn.Sequential(*mods, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, 10)).eval()
    return _export(model, path)


def _export(model, path: Path) -> Path:
    import warnings

    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter is "legacy"
        torch.onnx.export(
            model, torch.randn(2, 3, 32, 32), str(path), dynamo=False, input_names=["input"],
            output_names=["logits"], dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}},
        )
    return path
