"""The rank of an IR value whose type does not say it, from its producer's op and inputs.

Exports with dynamic sequence lengths reshape with shapes computed at run time; ONNX's
shape inference then often loses even the rank. Converters need only the rank (to place
new axes, resolve negative axes), and that follows from the op: this module derives it.
"""

from __future__ import annotations

from collections.abc import Callable

from ..ir import Value
from .values import Const, Sym

_SAME = frozenset({
    "Identity", "Cast", "CastLike", "Softmax", "LogSoftmax", "LayerNormalization", "RMSNormalization",
    "SimplifiedLayerNormalization", "Dropout", "Erf",
    "Relu", "Gelu", "Sigmoid", "Tanh", "Exp", "Log", "Neg", "Abs", "Sqrt", "Reciprocal", "Not", "IsNaN",
    "Slice", "Concat", "Split", "Tile", "Trilu", "Pad", "Softplus", "Clip", "LeakyRelu", "Elu",
    "HardSwish", "HardSigmoid", "Floor", "Ceil", "Sin", "Cos", "GatherElements", "BatchNormalization",
    "PRelu",
})
_BROADCAST = frozenset({"Add", "Sub", "Mul", "Div", "Pow", "Where", "Equal", "Less", "Greater", "And",
                        "Or", "Mod", "Max", "Min", "LessOrEqual", "GreaterOrEqual", "MatMul", "Expand"})


def value_rank(ctx, v: Value, _seen: frozenset = frozenset()) -> int | None:
    """The rank of ``v`` (``None`` when it cannot be told)."""
    x = ctx.env.get(v.name)
    if isinstance(x, Const):
        return x.array.ndim
    if isinstance(x, Sym):
        return 0 if x.scalar else 1 if x.cols is None else 2
    t = ctx.type_of(v)
    if t is not None and t.shape is not None:
        return len(t.shape)
    node = v.producer
    if node is None or v.name in _seen:
        return None
    seen = _seen | {v.name}

    def rank(i: int) -> int | None:
        if i >= len(node.inputs) or node.inputs[i] is None:
            return None
        return value_rank(ctx, node.inputs[i], seen)

    rule = _RULES.get(node.op_type)
    if rule is not None:
        return rule(ctx, node, rank)
    if node.op_type in _SAME:
        return rank(0)
    if node.op_type in _BROADCAST:
        ranks = [rank(i) for i in range(len(node.inputs))]
        if node.op_type == "Expand":
            ranks[1] = _length(ctx, node, 1)
        return None if any(r is None for r in ranks) else max(ranks)
    return None


def _length(ctx, node, index: int) -> int | None:
    x = ctx.env.get(node.inputs[index].name) if index < len(node.inputs) and node.inputs[index] else None
    if isinstance(x, Sym):
        return len(x.items)
    if isinstance(x, Const):
        return int(x.array.size)
    return None


def _axes_count(ctx, node) -> int | None:
    axes = node.attr("axes")
    if axes is not None:
        return len(axes)
    return _length(ctx, node, 1)


def _unsqueeze(ctx, node, rank) -> int | None:
    r, n = rank(0), _axes_count(ctx, node)
    return None if r is None or n is None else r + n


def _squeeze(ctx, node, rank) -> int | None:
    r, n = rank(0), _axes_count(ctx, node)
    return None if r is None or n is None else r - n


def _gather(ctx, node, rank) -> int | None:
    r, k = rank(0), rank(1)
    return None if r is None or k is None else r - 1 + k


def _transpose(ctx, node, rank) -> int | None:
    perm = node.attr("perm")
    return len(perm) if perm is not None else rank(0)


def _reduce(ctx, node, rank) -> int | None:
    r = rank(0)
    if r is None or node.attr("keepdims", 1):
        return r
    n = _axes_count(ctx, node)
    return None if n is None else r - n


def _flatten(ctx, node, rank) -> int | None:
    return 2


_RULES: dict[str, Callable] = {
    "Reshape": lambda ctx, node, rank: _length(ctx, node, 1),
    "Unsqueeze": _unsqueeze,
    "Squeeze": _squeeze,
    "Gather": _gather,
    "Transpose": _transpose,
    "ReduceMean": _reduce, "ReduceSum": _reduce, "ReduceMax": _reduce, "ReduceMin": _reduce,
    "Flatten": _flatten,
    "Shape": lambda ctx, node, rank: 1,
    "Range": lambda ctx, node, rank: 1,
    "ConstantOfShape": lambda ctx, node, rank: _length(ctx, node, 0),
}
