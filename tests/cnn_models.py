"""Small torch CNNs of the architectures people grow, and their ONNX exports (for tests/test_cnn_*.py).

Every model is tiny (3x32x32 input, 8-32 channels) and has randomised BatchNorm statistics and
affine parameters, so a BN that a morph gets wrong shows in the outputs. Exports:

- ``ts``: TorchScript exporter, eval mode, constant folding (BN folded into the convs);
- ``ts-bn``: TorchScript exporter without constant folding (BatchNormalization kept);
- ``dynamo``: the dynamo exporter (BN folded by its optimiser; flatten as Reshape).
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import torch
from torch import nn

EXPORTS = ("ts", "ts-bn", "dynamo")


def bn(c: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c)


class PreActBlock(nn.Module):
    """Pre-activation ResNet unit: BN-ReLU-conv-BN-ReLU-conv + shortcut (projection on a switch)."""

    def __init__(self, cin: int, c: int, stride: int = 1):
        super().__init__()
        self.bn1, self.conv1 = bn(cin), nn.Conv2d(cin, c, 3, stride, 1, bias=False)
        self.bn2, self.conv2 = bn(c), nn.Conv2d(c, c, 3, 1, 1, bias=False)
        self.short = None if stride == 1 and cin == c else nn.Conv2d(cin, c, 1, stride, bias=False)

    def forward(self, x):
        y = self.conv1(torch.relu(self.bn1(x)))
        y = self.conv2(torch.relu(self.bn2(y)))
        return y + (x if self.short is None else self.short(x))


class Bottleneck(nn.Module):
    """conv1x1-BN-ReLU-conv3x3(groups)-BN-ReLU-conv1x1-BN + shortcut, ReLU (ResNet-50 / ResNeXt)."""

    def __init__(self, cin: int, mid: int, cout: int, stride: int = 1, groups: int = 1, se: bool = False):
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(cin, mid, 1, bias=False), bn(mid)
        self.c2, self.b2 = nn.Conv2d(mid, mid, 3, stride, 1, groups=groups, bias=False), bn(mid)
        self.se = SE(mid, max(mid // 4, 2), nn.Sigmoid) if se else None
        self.c3, self.b3 = nn.Conv2d(mid, cout, 1, bias=False), bn(cout)
        self.short = None if stride == 1 and cin == cout else nn.Sequential(
            nn.Conv2d(cin, cout, 1, stride, bias=False), bn(cout))

    def forward(self, x):
        y = torch.relu(self.b1(self.c1(x)))
        y = torch.relu(self.b2(self.c2(y)))
        if self.se is not None:
            y = self.se(y)
        y = self.b3(self.c3(y))
        return torch.relu(y + (x if self.short is None else self.short(x)))


class SE(nn.Module):
    def __init__(self, c: int, squeeze: int, gate=nn.Hardsigmoid):
        super().__init__()
        self.fc1, self.fc2, self.gate = nn.Conv2d(c, squeeze, 1), nn.Conv2d(squeeze, c, 1), gate()

    def forward(self, x):
        s = torch.mean(x, dim=(2, 3), keepdim=True)
        return x * self.gate(self.fc2(torch.relu(self.fc1(s))))


class InvertedResidual(nn.Module):
    """MobileNetV2 / V3 / EfficientNet unit: expand-dw-(SE)-project, linear bottleneck."""

    def __init__(self, cin: int, cout: int, expand: int = 4, stride: int = 1, act=nn.ReLU6, se: bool = False,
                 kernel: int = 3):
        super().__init__()
        mid = cin * expand
        self.expand = nn.Sequential(nn.Conv2d(cin, mid, 1, bias=False), bn(mid), act())
        dw = nn.Conv2d(mid, mid, kernel, stride, kernel // 2, groups=mid, bias=False)
        self.dw = nn.Sequential(dw, bn(mid), act())
        self.se = SE(mid, max(mid // 4, 4)) if se else nn.Identity()
        self.project = nn.Sequential(nn.Conv2d(mid, cout, 1, bias=False), bn(cout))
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        y = self.project(self.se(self.dw(self.expand(x))))
        return x + y if self.residual else y


class ConvNeXtBlock(nn.Module):
    """dw7x7 -> (NHWC) LayerNorm -> Linear 4C -> GELU -> Linear C -> layer scale -> (NCHW) + x."""

    def __init__(self, c: int):
        super().__init__()
        self.dw = nn.Conv2d(c, c, 7, padding=3, groups=c)
        self.norm = nn.LayerNorm(c, eps=1e-6)
        self.fc1, self.fc2 = nn.Linear(c, 4 * c), nn.Linear(4 * c, c)
        self.gamma = nn.Parameter(torch.full((c,), 0.5))

    def forward(self, x):
        y = self.dw(x).permute(0, 2, 3, 1)
        y = self.fc2(nn.functional.gelu(self.fc1(self.norm(y))))
        return x + (self.gamma * y).permute(0, 3, 1, 2)


class Inception(nn.Module):
    """Three branches (1x1; 1x1 -> 3x3; maxpool -> 1x1), concatenated: a concat unit."""

    def __init__(self, cin: int, a: int, b: int, c: int):
        super().__init__()
        self.b1 = nn.Sequential(nn.Conv2d(cin, a, 1), nn.ReLU())
        self.b2 = nn.Sequential(nn.Conv2d(cin, b, 1), nn.ReLU(), nn.Conv2d(b, b, 3, padding=1), nn.ReLU())
        self.b3 = nn.Sequential(nn.MaxPool2d(3, 1, 1), nn.Conv2d(cin, c, 1), nn.ReLU())

    def forward(self, x):
        return torch.cat([self.b1(x), self.b2(x), self.b3(x)], 1)


def _stem(c: int, act=nn.ReLU) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(3, c, 3, 1, 1, bias=False), bn(c), act())


def _head(c: int) -> list[nn.Module]:
    return [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, 10)]


def preact_resnet() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 8, 3, 1, 1), PreActBlock(8, 8), PreActBlock(8, 8),
                         PreActBlock(8, 16, 2), PreActBlock(16, 16), bn(16), nn.ReLU(), *_head(16))


def bottleneck_resnet() -> nn.Module:
    return nn.Sequential(_stem(8), Bottleneck(8, 4, 16), Bottleneck(16, 4, 16), Bottleneck(16, 8, 32, 2),
                         Bottleneck(32, 8, 32), *_head(32))


def resnext() -> nn.Module:
    return nn.Sequential(_stem(8), Bottleneck(8, 8, 16, groups=4), Bottleneck(16, 8, 16, groups=4),
                         *_head(16))


def regnet() -> nn.Module:  # RegNetY-style: group width 4, SE with Sigmoid
    return nn.Sequential(_stem(8), Bottleneck(8, 8, 16, 2, groups=2, se=True),
                         Bottleneck(16, 8, 16, groups=2, se=True), *_head(16))


def mobilenet_v2() -> nn.Module:
    return nn.Sequential(_stem(8, nn.ReLU6), InvertedResidual(8, 8), InvertedResidual(8, 16, stride=2),
                         InvertedResidual(16, 16), *_head(16))


def mobilenet_v3() -> nn.Module:  # MobileNetV3 / EfficientNet: SE, HardSwish and SiLU
    return nn.Sequential(_stem(8, nn.Hardswish), InvertedResidual(8, 8, act=nn.Hardswish, se=True),
                         InvertedResidual(8, 16, stride=2, act=nn.SiLU, se=True, kernel=5),
                         InvertedResidual(16, 16, act=nn.SiLU, se=True), *_head(16))


def convnext() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 8, 4, 4), ConvNeXtBlock(8), ConvNeXtBlock(8), *_head(8))


def gelu_silu_plain() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 8, 3, 1, 1), bn(8), nn.GELU(), nn.Conv2d(8, 8, 3, 1, 1), bn(8),
                         nn.SiLU(), nn.Conv2d(8, 16, 3, 2, 1), bn(16), nn.GELU(), nn.Conv2d(16, 16, 3, 1, 1),
                         bn(16), nn.SiLU(), *_head(16))


def grouped_plain() -> nn.Module:
    return nn.Sequential(_stem(8), nn.Conv2d(8, 8, 3, 1, 1, groups=2), bn(8), nn.ReLU(),
                         nn.Conv2d(8, 16, 3, 2, 1, groups=4), bn(16), nn.ReLU(),
                         nn.Conv2d(16, 16, 3, 1, 2, dilation=2, groups=4), bn(16), nn.ReLU(), *_head(16))


def vgg() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, 1, 1), nn.ReLU(), nn.Conv2d(8, 8, 3, 1, 1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, 1, 1), nn.ReLU(), nn.Conv2d(16, 16, 3, 1, 1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(16 * 8 * 8, 32), nn.ReLU(), nn.Dropout(), nn.Linear(32, 10))


def inception() -> nn.Module:
    return nn.Sequential(_stem(8), Inception(8, 4, 8, 4), Inception(16, 8, 8, 8), *_head(24))


ARCHS = {
    "preact_resnet": preact_resnet, "bottleneck_resnet": bottleneck_resnet, "resnext": resnext,
    "mobilenet_v2": mobilenet_v2, "mobilenet_v3": mobilenet_v3, "convnext": convnext, "regnet": regnet,
    "gelu_silu_plain": gelu_silu_plain, "grouped_plain": grouped_plain, "vgg": vgg, "inception": inception,
}


def randomised(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random BN statistics and affine parameters (a fresh BN is the identity, which hides bugs)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.2)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.2)
    return model.eval()


def export(model: nn.Module, path: Path, how: str, size: int = 32) -> Path:
    """Export ``model`` as ``how`` (one of :data:`EXPORTS`) with a dynamic batch axis."""
    x = torch.randn(2, 3, size, size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if how == "dynamo":
            torch.onnx.export(model, (x,), str(path), dynamo=True, input_names=["x"], output_names=["y"],
                              dynamic_shapes=({0: torch.export.Dim("N", min=1, max=64)},), verbose=False)
        else:
            torch.onnx.export(model, x, str(path), dynamo=False, input_names=["x"], output_names=["y"],
                              dynamic_axes={"x": {0: "N"}, "y": {0: "N"}},
                              do_constant_folding=how == "ts")
    return path


_TVM = []


REAL_TORCHVISION: dict = {}
"""The torchvision modules :func:`torchvision_models` imported (for packages that import it too)."""


def torchvision_models():
    """``torchvision.models``, imported without disturbing other tests.

    Works around a torchvision build whose C++ ops do not match this torch (the models need none
    of them: only the registration of the ops' fake kernels fails), and around a test module that
    hid a broken torchvision (``sys.modules["torchvision"] = None``, so that ``transformers``
    does not import it): whatever ``sys.modules`` held for torchvision is put back afterwards.
    """
    if _TVM:
        return _TVM[0]
    saved = {k: v for k, v in sys.modules.items() if k.split(".")[0] == "torchvision"}
    for k in saved:
        del sys.modules[k]
    real = torch.library.register_fake
    try:
        try:
            import torchvision.models as tvm
        except RuntimeError:
            for k in [k for k in sys.modules if k.split(".")[0] == "torchvision"]:
                del sys.modules[k]
            torch.library.register_fake = lambda *a, **k: (lambda f: f)
            import torchvision.models as tvm
    finally:
        torch.library.register_fake = real
        REAL_TORCHVISION.update((k, v) for k, v in sys.modules.items()
                                if k.split(".")[0] == "torchvision" and v is not None)
        if saved:
            for k in [k for k in sys.modules if k.split(".")[0] == "torchvision"]:
                del sys.modules[k]
            sys.modules.update(saved)
    _TVM.append(tvm)
    return tvm


def torchvision_model(name: str) -> nn.Module:
    tvm = torchvision_models()
    kw = {"aux_logits": False, "init_weights": False} if name == "googlenet" else {}
    torch.manual_seed(0)
    return randomised(getattr(tvm, name)(weights=None, num_classes=10, **kw))


class TokenAttention(nn.Module):
    """Self-attention over the H*W positions of a feature map (MobileViT / CoaT style): the q/k/v
    reshapes fold the batch into the head axis, ``[3, B*heads, HW, d]``, so a dim other than axis 0
    is computed from the input's batch."""

    def __init__(self, c: int, heads: int = 2):
        super().__init__()
        self.heads, self.qkv, self.proj = heads, nn.Linear(c, 3 * c), nn.Linear(c, c)

    def forward(self, x):
        b, c, h, w = x.shape
        d = c // self.heads
        t = x.flatten(2).transpose(1, 2)  # [B, HW, C]
        qkv = self.qkv(t).reshape(b, h * w, 3, self.heads, d).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.reshape(3, b * self.heads, h * w, d).unbind(0)
        a = torch.softmax(q @ k.transpose(1, 2) * d ** -0.5, dim=-1)
        o = (a @ v).reshape(b, self.heads, h * w, d).transpose(1, 2).reshape(b, h * w, c)
        return x + self.proj(o).transpose(1, 2).reshape(b, c, h, w)


def hybrid_attention() -> nn.Module:
    """conv stage -> token attention -> conv stage: a tiny MobileViT-like hybrid (16x16 input)."""
    return nn.Sequential(_stem(8), nn.Conv2d(8, 8, 3, 1, 1, bias=False), bn(8), nn.ReLU(),
                         TokenAttention(8), nn.Conv2d(8, 16, 3, 2, 1, bias=False), bn(16), nn.ReLU(),
                         nn.Conv2d(16, 16, 3, 1, 1, bias=False), bn(16), nn.ReLU(), *_head(16))
