"""Element-wise ops: arithmetic (on tensors, constants or shape entries) and activations."""

from __future__ import annotations

import operator

import numpy as np
import torch
import torch.fx as fx
import torch.nn.functional as F
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from ..errors import LoweringError
from .context import torch_dtype
from .dispatch import converter
from .modules import Bias, Scale
from .names import label
from .values import Const, Sym, is_weight

_TENSOR_OPS = {"Add": operator.add, "Sub": operator.sub, "Mul": operator.mul, "Div": operator.truediv,
               "Pow": torch.pow}
_INT_OPS = {"Add": operator.add, "Sub": operator.sub, "Mul": operator.mul, "Div": operator.floordiv}


def _sym_items(x) -> tuple[tuple, bool] | None:
    """``(items, scalar)`` of a shape value or an integer constant; ``None`` otherwise."""
    if isinstance(x, Sym):
        return x.items, x.scalar
    if isinstance(x, Const) and x.array.dtype.kind in "iu" and x.array.ndim <= 1:
        return tuple(int(i) for i in x.array.reshape(-1)), x.array.ndim == 0
    return None


def _sym_arith(ctx, node, a, b) -> Sym:
    sa, sb = _sym_items(a), _sym_items(b)
    if sa is None or sb is None:
        raise LoweringError(f"{node.op_type} node {label(node)}: cannot combine a shape value with a tensor")
    (ia, sca), (ib, scb) = sa, sb
    n = max(len(ia), len(ib))
    if len(ia) not in (1, n) or len(ib) not in (1, n):
        raise LoweringError(
            f"{node.op_type} node {label(node)}: shape values of lengths {len(ia)}, {len(ib)}"
        )
    ia, ib = ia * (n // len(ia)), ib * (n // len(ib))
    op = _INT_OPS[node.op_type]
    return Sym(tuple(ctx.arith(op, x, y) for x, y in zip(ia, ib, strict=True)), scalar=sca and scb)


def _rank_or_none(ctx, node, index):
    try:
        return ctx.rank(node, index)
    except LoweringError:
        return None


def _is_linear_bias(ctx, node, x, c) -> bool:
    if not (isinstance(x, fx.Node) and isinstance(c, Const) and c.origin is not None):
        return False
    xi = node.inputs[0] if ctx.get(node.inputs[0]) is x else node.inputs[1]
    return xi.name in ctx.linear_outputs and len(xi.uses()) == 1 and c.array.dtype.kind == "f"


def _is_weight(x, c) -> bool:
    """A float graph parameter (not a scalar) added to or multiplying a run-time tensor: a
    position table, a LayerNorm's gamma or beta written out as Mul/Add. It stays trainable."""
    return isinstance(x, fx.Node) and is_weight(c)


@converter("Add", "Sub", "Mul", "Div", "Pow")
def binary(ctx, node):
    a, b = ctx.input(node, 0), ctx.input(node, 1)
    if (isinstance(a, Sym) or isinstance(b, Sym)) and node.op_type in _INT_OPS:
        if _sym_items(a) is not None and _sym_items(b) is not None:
            return _sym_arith(ctx, node, a, b)  # else: shape entries mixed with floats, as tensors
    if node.op_type in ("Add", "Mul"):
        for x, c, ci in ((a, b, 1), (b, a, 0)):
            if node.op_type == "Add" and (_is_linear_bias(ctx, node, x, c) or _is_weight(x, c)):
                m = Bias(c.array.shape)
                ctx.load(m, "bias", node, ci)
                return ctx.call_module(node, m, x)
            if node.op_type == "Mul" and _is_weight(x, c):
                m = Scale(c.array.shape)
                ctx.load(m, "weight", node, ci)
                return ctx.call_module(node, m, x)
    ra, rb = _rank_or_none(ctx, node, 0), _rank_or_none(ctx, node, 1)
    fn = _TENSOR_OPS[node.op_type]
    t = ctx.type_of(node.outputs[0]) or ctx.type_of(node.inputs[0])
    if node.op_type == "Div" and t is not None and t.elem_type and t.dtype.kind in "iu":
        return ctx.call(torch.div, ctx.operand(a, other_rank=rb), ctx.operand(b, other_rank=ra),
                        rounding_mode="trunc", name=node.outputs[0].name)
    return ctx.call(fn, ctx.operand(a, other_rank=rb), ctx.operand(b, other_rank=ra),
                    name=node.outputs[0].name)


_UNARY = {
    "Relu": torch.relu, "Sigmoid": torch.sigmoid, "Tanh": torch.tanh, "Exp": torch.exp, "Log": torch.log,
    "Neg": torch.neg, "Abs": torch.abs, "Sqrt": torch.sqrt, "Reciprocal": torch.reciprocal, "Erf": torch.erf,
    "Floor": torch.floor, "Ceil": torch.ceil, "Softplus": F.softplus, "HardSwish": F.hardswish,
    "Sin": torch.sin, "Cos": torch.cos, "IsNaN": torch.isnan,
}


@converter(*_UNARY)
def unary(ctx, node):
    return ctx.call(_UNARY[node.op_type], ctx.operand(ctx.input(node, 0)), name=node.outputs[0].name)


@converter("LeakyRelu")
def leaky_relu(ctx, node):
    return ctx.call(F.leaky_relu, ctx.operand(ctx.input(node, 0)), float(node.attr("alpha", 0.01)),
                    name=node.outputs[0].name)


@converter("Elu")
def elu(ctx, node):
    return ctx.call(F.elu, ctx.operand(ctx.input(node, 0)), float(node.attr("alpha", 1.0)),
                    name=node.outputs[0].name)


def hard_sigmoid(x: torch.Tensor, alpha: float, beta: float) -> torch.Tensor:
    """ONNX ``HardSigmoid``: ``max(0, min(1, alpha * x + beta))``."""
    return torch.clamp(x * alpha + beta, 0.0, 1.0)


@converter("HardSigmoid")
def hard_sigmoid_op(ctx, node):
    return ctx.call(hard_sigmoid, ctx.operand(ctx.input(node, 0)), float(node.attr("alpha", 0.2)),
                    float(node.attr("beta", 0.5)), name=node.outputs[0].name)


@converter("Gelu")
def gelu(ctx, node):
    approx = node.attr("approximate", b"none")
    approx = approx.decode() if isinstance(approx, bytes) else approx
    return ctx.call(F.gelu, ctx.operand(ctx.input(node, 0)), approximate=approx, name=node.outputs[0].name)


@converter("Clip")
def clip(ctx, node):
    x = ctx.operand(ctx.input(node, 0))
    if ctx.opset < 11:
        lo, hi = node.attr("min"), node.attr("max")
    else:
        lo, hi = ctx.input(node, 1), ctx.input(node, 2)
        lo = None if lo is None else ctx.operand(lo, other_rank=0)
        hi = None if hi is None else ctx.operand(hi, other_rank=0)
    if lo is None and hi is None:
        return x
    return ctx.call(torch.clamp, x, lo, hi, name=node.outputs[0].name)


def legacy_softmax(x: torch.Tensor, axis: int, log: bool) -> torch.Tensor:
    """Softmax of opset < 13: over all dims from ``axis`` on, as one flattened dim."""
    shape = x.shape
    y = x.reshape(*shape[:axis], -1)
    y = torch.log_softmax(y, -1) if log else torch.softmax(y, -1)
    return y.reshape(shape)


@converter("Softmax", "LogSoftmax")
def softmax(ctx, node):
    x = ctx.operand(ctx.input(node, 0))
    log = node.op_type == "LogSoftmax"
    fn = torch.log_softmax if log else torch.softmax
    if ctx.opset >= 13:
        return ctx.call(fn, x, int(node.attr("axis", -1)), name=node.outputs[0].name)
    rank = ctx.rank(node, 0)
    axis = int(node.attr("axis", 1)) % max(rank, 1)
    if axis == rank - 1:
        return ctx.call(fn, x, -1, name=node.outputs[0].name)
    return ctx.call(legacy_softmax, x, axis, log, name=node.outputs[0].name)


@converter("Identity")
def identity(ctx, node):
    return ctx.input(node, 0)


@converter("Dropout")
def dropout(ctx, node):
    """``nn.Dropout``: the identity in eval mode (as in ONNX inference), dropout in training."""
    x = ctx.input(node, 0)
    if ctx.opset < 12:
        ratio = float(node.attr("ratio", 0.5))
    else:
        r = ctx.input(node, 1)
        ratio = 0.5 if r is None else float(ctx.const(node, 1, "ratio").array.reshape(()))
    if not isinstance(x, fx.Node) or ratio <= 0.0:
        return x
    return ctx.call_module(node, nn.Dropout(ratio), x)


@converter("Constant")
def constant(ctx, node):
    for key in ("value", "value_float", "value_floats", "value_int", "value_ints"):
        a = node.attributes.get(key)
        if a is None:
            continue
        if key == "value":
            return Const(numpy_helper.to_array(a.t))
        v = helper.get_attribute_value(a)
        dtype = np.float32 if "float" in key else np.int64
        return Const(np.asarray(v, dtype=dtype))
    raise LoweringError(
        f"Constant node {label(node)}: only tensor, float(s) and int(s) values are supported"
    )


def _float_target(ctx, elem_type: int) -> torch.dtype:
    if elem_type == TensorProto.FLOAT:
        return ctx.dtype
    return torch_dtype(helper.tensor_dtype_to_np_dtype(elem_type))


@converter("Cast")
def cast(ctx, node):
    x = ctx.input(node, 0)
    to = int(node.attr("to"))
    if isinstance(x, Sym) and to in (TensorProto.INT64, TensorProto.INT32):
        return x
    return ctx.method("to", ctx.operand(x), _float_target(ctx, to), name=node.outputs[0].name)


@converter("CastLike")
def cast_like(ctx, node):
    x, like = ctx.input(node, 0), ctx.input(node, 1)
    t = ctx.type_of(node.inputs[1])
    if isinstance(x, Const) and t is not None and t.elem_type:
        return Const(x.array.astype(t.dtype))
    return ctx.method("type_as", ctx.operand(x), ctx.operand(like), name=node.outputs[0].name)
