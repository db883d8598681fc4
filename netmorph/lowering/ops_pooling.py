"""Pooling and reductions: MaxPool, AveragePool, Global*Pool, Reduce*."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import LoweringError
from .dispatch import converter
from .names import label
from .padding import resolve_pads, torch_pad_list

_MAX = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}
_AVG = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}


def _pool_params(ctx, node):
    kernel = list(node.attr("kernel_shape", []))
    k = len(kernel)
    if k not in _MAX:
        raise LoweringError(f"{node.op_type} node {label(node)}: kernel_shape {kernel} is not 1-, 2- or 3-D")
    strides = list(node.attr("strides", [1] * k))
    dilations = list(node.attr("dilations", [1] * k))
    in_shape = ctx.static_shape(node, 0)
    begins, ends = resolve_pads(node, None if in_shape is None else in_shape[2:], kernel, strides, dilations)
    return kernel, strides, dilations, begins, ends, bool(node.attr("ceil_mode", 0))


@converter("MaxPool")
def max_pool(ctx, node):
    x = ctx.operand(ctx.input(node, 0))
    kernel, strides, dilations, begins, ends, ceil = _pool_params(ctx, node)
    padding = begins
    if begins != ends or any(2 * p > kk for p, kk in zip(begins, kernel, strict=True)):
        x = ctx.call(F.pad, x, torch_pad_list(begins, ends), value=float("-inf"))
        padding = [0] * len(kernel)
    return ctx.call(_MAX[len(kernel)], x, kernel, strides, padding, dilations, ceil_mode=ceil,
                    name=node.outputs[0].name)


@converter("AveragePool")
def avg_pool(ctx, node):
    x = ctx.operand(ctx.input(node, 0))
    kernel, strides, dilations, begins, ends, ceil = _pool_params(ctx, node)
    if any(d != 1 for d in dilations):
        raise LoweringError(f"AveragePool node {label(node)}: dilations {dilations} are not supported")
    include_pad = bool(node.attr("count_include_pad", 0))
    padding = begins
    if begins != ends or any(2 * p > kk for p, kk in zip(begins, kernel, strict=True)):
        if not include_pad and any(begins + ends):
            raise LoweringError(
                f"AveragePool node {label(node)}: asymmetric pads {begins + ends} with "
                "count_include_pad=0 are not supported"
            )
        x = ctx.call(F.pad, x, torch_pad_list(begins, ends))
        padding = [0] * len(kernel)
    return ctx.call(_AVG[len(kernel)], x, kernel, strides, padding, ceil, include_pad,
                    name=node.outputs[0].name)


@converter("GlobalAveragePool", "GlobalMaxPool")
def global_pool(ctx, node):
    x = ctx.operand(ctx.input(node, 0))
    dims = list(range(2, ctx.rank(node, 0)))
    fn = torch.mean if node.op_type == "GlobalAveragePool" else torch.amax
    return ctx.call(fn, x, dims, keepdim=True, name=node.outputs[0].name)


_REDUCE = {"ReduceMean": torch.mean, "ReduceSum": torch.sum, "ReduceMax": torch.amax, "ReduceMin": torch.amin}


@converter(*_REDUCE)
def reduce(ctx, node):
    x = ctx.operand(ctx.input(node, 0))
    axes = node.attr("axes")
    if axes is None:
        axes = ctx.ints(node, 1, "axes")
    keep = bool(node.attr("keepdims", 1))
    if not axes:
        if node.attr("noop_with_empty_axes", 0):
            return x
        axes = list(range(ctx.rank(node, 0)))
    return ctx.call(_REDUCE[node.op_type], x, list(axes), keepdim=keep, name=node.outputs[0].name)
