"""Parametric layers: Conv, BatchNormalization, Gemm, MatMul, PRelu → real ``nn.Module`` s.

Each becomes one module named after its IR node, holding the node's constant weights as
parameters (BN running statistics as buffers). A weight that is not a constant (computed at
run time) gives a functional call instead.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from ..errors import LoweringError
from .dispatch import converter
from .modules import BroadcastPReLU, ScaledLinear
from .names import label
from .padding import resolve_pads, torch_pad_list
from .values import Const

_CONV = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
_CONV_FN = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_BN = {2: nn.BatchNorm1d, 3: nn.BatchNorm1d, 4: nn.BatchNorm2d, 5: nn.BatchNorm3d}


def _tensor_input(ctx, node, index: int) -> fx.Node:
    x = ctx.input(node, index)
    if not isinstance(x, fx.Node):
        x = ctx.operand(x)
    return x


@converter("Conv")
def conv(ctx, node):
    x = _tensor_input(ctx, node, 0)
    w, b = ctx.input(node, 1), ctx.input(node, 2)
    rank = ctx.rank(node, 1)
    k = rank - 2
    if k not in _CONV:
        raise LoweringError(f"Conv node {label(node)}: {k}-D convolution is not supported")
    wshape = ctx.static_shape(node, 1)
    kernel = list(node.attr("kernel_shape", wshape[2:] if wshape else []))
    if len(kernel) != k or (wshape is not None and tuple(kernel) != tuple(wshape[2:])):
        raise LoweringError(f"Conv node {label(node)}: kernel_shape {kernel} does not match weight {wshape}")
    strides = list(node.attr("strides", [1] * k))
    dilations = list(node.attr("dilations", [1] * k))
    groups = int(node.attr("group", 1))
    in_shape = ctx.static_shape(node, 0)
    begins, ends = resolve_pads(node, None if in_shape is None else in_shape[2:], kernel, strides, dilations)
    padding = begins
    if begins != ends:
        x = ctx.call(F.pad, x, torch_pad_list(begins, ends))
        padding = [0] * k
    if isinstance(b, Const) and b.origin is None and not np.any(b.array):
        b = None  # an all-zero bias computed by the exporter: the same as none
    if isinstance(w, Const) and (b is None or isinstance(b, Const)):
        W = w.array
        m = _CONV[k](W.shape[1] * groups, W.shape[0], tuple(kernel), stride=tuple(strides),
                     padding=tuple(padding), dilation=tuple(dilations), groups=groups, bias=b is not None)
        ctx.load(m, "weight", node, 1)
        if b is not None:
            ctx.load(m, "bias", node, 2)
        return ctx.call_module(node, m, x)
    return ctx.call(
        _CONV_FN[k], x, ctx.operand(w), None if b is None else ctx.operand(b), tuple(strides),
        tuple(padding), tuple(dilations), groups, name=node.outputs[0].name,
    )


@converter("BatchNormalization")
def batch_norm(ctx, node):
    if node.attr("training_mode", 0):
        raise LoweringError(f"BatchNormalization node {label(node)}: training_mode=1 is not supported")
    if not node.attr("spatial", 1):
        raise LoweringError(f"BatchNormalization node {label(node)}: spatial=0 is not supported")
    x = _tensor_input(ctx, node, 0)
    rank = ctx.rank(node, 0)
    if rank not in _BN:
        raise LoweringError(f"BatchNormalization node {label(node)}: rank-{rank} input is not supported")
    scale = ctx.const(node, 1, "scale").array
    for i, what in ((2, "bias"), (3, "mean"), (4, "var")):
        ctx.const(node, i, what)
    momentum = float(node.attr("momentum", 0.9))
    bn = _BN[rank](scale.size, eps=float(node.attr("epsilon", 1e-5)), momentum=round(1.0 - momentum, 6))
    for attr, i in (("weight", 1), ("bias", 2), ("running_mean", 3), ("running_var", 4)):
        ctx.load(bn, attr, node, i)
    return ctx.call_module(node, bn, x)


@converter("Gemm")
def gemm(ctx, node):
    alpha, beta = float(node.attr("alpha", 1.0)), float(node.attr("beta", 1.0))
    trans_a, trans_b = bool(node.attr("transA", 0)), bool(node.attr("transB", 0))
    a = _tensor_input(ctx, node, 0)
    b, c = ctx.input(node, 1), ctx.input(node, 2)
    if trans_a:
        a = ctx.method("t", a)
    if not isinstance(b, Const):
        bb = ctx.operand(b)
        y = ctx.call(torch.matmul, a, ctx.method("t", bb) if trans_b else bb)
        if alpha != 1.0:
            y = ctx.call(torch.mul, y, alpha)
        if c is not None:
            cc = ctx.operand(c, other_rank=2)
            y = ctx.call(torch.add, y, cc if beta == 1.0 else ctx.call(torch.mul, cc, beta))
        return y
    n, k = b.array.shape if trans_b else b.array.shape[::-1]
    if isinstance(c, Const):
        plain = alpha == 1.0 and beta == 1.0 and c.array.shape in ((n,), (1, n))
        m = nn.Linear(k, n) if plain else ScaledLinear(k, n, c.array.shape, alpha, beta)
    else:
        m = nn.Linear(k, n, bias=False) if alpha == 1.0 else ScaledLinear(k, n, None, alpha)
    ctx.load(m, "weight", node, 1, transpose=not trans_b)
    if isinstance(c, Const):
        ctx.load(m, "bias", node, 2)
    y = ctx.call_module(node, m, a)
    if c is not None and not isinstance(c, Const):
        cc = ctx.operand(c)
        y = ctx.call(torch.add, y, cc if beta == 1.0 else ctx.call(torch.mul, cc, beta))
    return y


@converter("MatMul")
def matmul(ctx, node):
    a, b = ctx.input(node, 0), ctx.input(node, 1)
    if isinstance(a, fx.Node) and isinstance(b, Const) and b.array.ndim == 2:
        k, n = b.array.shape
        m = nn.Linear(k, n, bias=False)
        ctx.load(m, "weight", node, 1, transpose=True)
        ctx.linear_outputs.add(node.outputs[0].name)
        return ctx.call_module(node, m, a)
    return ctx.call(torch.matmul, ctx.operand(a), ctx.operand(b), name=node.outputs[0].name)


@converter("PRelu")
def prelu(ctx, node):
    x = _tensor_input(ctx, node, 0)
    s = ctx.input(node, 1)
    if not isinstance(s, Const):
        slope = ctx.operand(s)
        return ctx.call(torch.where, ctx.call(torch.ge, x, 0), x, ctx.call(torch.mul, x, slope))
    shape = s.array.shape
    rank = ctx.rank(node, 0)
    padded = (1,) * (rank - len(shape)) + tuple(shape)
    if s.array.size == 1:
        m = nn.PReLU(1)
    elif rank >= 2 and padded[1] == s.array.size:
        m = nn.PReLU(s.array.size)
    else:
        m = BroadcastPReLU(tuple(shape))
    ctx.load(m, "weight", node, 1)
    return ctx.call_module(node, m, x)
