"""The few ``nn.Module`` s that ``torch.nn`` has no exact counterpart for.

Everything else lowers to stock modules (``nn.Conv2d``, ``nn.BatchNorm2d``, ``nn.PReLU``,
``nn.Linear``) or to functional calls. All state is tensors (parameters and buffers) or
plain floats, so DDP, ``torch.compile``, ``channels_last`` and autocast treat these like
any other module.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ScaledLinear(nn.Linear):
    """ONNX ``Gemm`` with ``alpha``/``beta`` != 1 or a ``C`` that is not a plain bias vector.

    ``y = alpha * x @ weight.T + beta * bias``, where ``bias`` keeps the shape of ``C``
    (any shape that broadcasts to the output).
    """

    def __init__(self, in_features: int, out_features: int, bias_shape: tuple[int, ...] | None,
                 alpha: float = 1.0, beta: float = 1.0):
        super().__init__(in_features, out_features, bias=False)
        self.alpha = float(alpha)
        self.beta = float(beta)
        if bias_shape is not None:
            self.bias = nn.Parameter(torch.zeros(bias_shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.linear(x, self.weight)
        if self.alpha != 1.0:
            y = y * self.alpha
        if self.bias is not None:
            y = y + (self.bias if self.beta == 1.0 else self.beta * self.bias)
        return y


class Bias(nn.Module):
    """A trainable additive bias of any broadcastable shape (``MatMul`` + ``Add`` exports)."""

    def __init__(self, shape: tuple[int, ...]):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.bias


class BroadcastPReLU(nn.Module):
    """ONNX ``PRelu`` whose slope is not per-channel (any shape broadcasting to the input)."""

    def __init__(self, shape: tuple[int, ...]):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.where(x >= 0, x, x * self.weight)


class Scale(nn.Module):
    """A trainable multiplicative weight of any broadcastable shape (a decomposed LayerNorm's gamma)."""

    def __init__(self, shape: tuple[int, ...]):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weight


class Parameter(nn.Module):
    """A trainable tensor read as it is (a class token, a position table being sliced)."""

    def __init__(self, shape: tuple[int, ...]):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(shape))

    def forward(self) -> torch.Tensor:
        return self.weight
