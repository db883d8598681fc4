"""What transformer exports contain: LayerNormalization, embeddings, masks, splits, comparisons.

``LayerNormalization`` over the last axes becomes ``nn.LayerNorm``; a ``Gather`` from a 2-D
graph parameter by run-time ids becomes ``nn.Embedding``. Causal masks (``Range``,
``Trilu``, ``Where``, ``Equal``, ``Not``) work on tensors and, where exporters build them
from shapes, on shape values (:class:`~netmorph.lowering.values.Sym`), whose entries stay
Python ints or run-time ints, so dynamic sequence lengths keep working.
"""

from __future__ import annotations

import operator

import numpy as np
import torch
import torch.fx as fx
from torch import nn

from ..errors import LoweringError
from .dispatch import converter
from .names import label
from .values import Const, Sym


def _sym_items(x) -> tuple | None:
    if isinstance(x, Sym):
        return x.items
    if isinstance(x, Const) and x.array.dtype.kind in "iub" and x.array.ndim <= 1:
        return tuple(v.item() for v in x.array.reshape(-1))
    return None


def _tensor(ctx, x) -> fx.Node:
    """``x`` as an fx tensor node (constants become buffers, shape values int64 tensors)."""
    if isinstance(x, Const):
        return ctx.buffer(x)
    return ctx.operand(x)


def _sym_apply(ctx, node, fn, *xs) -> Sym | None:
    """``fn`` item by item over shape values (broadcast), or ``None`` if one is a real tensor."""
    items = [_sym_items(x) for x in xs]
    if any(i is None for i in items) or not any(isinstance(x, Sym) for x in xs):
        return None
    n = max(len(i) for i in items)
    if any(len(i) not in (1, n) for i in items):
        lengths = [len(i) for i in items]
        raise LoweringError(f"{node.op_type} node {label(node)}: shape values of lengths {lengths}")
    items = [i * (n // len(i)) for i in items]
    out = []
    for args in zip(*items, strict=True):
        if any(isinstance(a, fx.Node) for a in args):
            out.append(ctx.call(fn, *args))
        else:
            out.append(fn(*args))
    scalar = all(x.scalar if isinstance(x, Sym) else np.ndim(x.array) == 0 for x in xs)
    return Sym(tuple(out), scalar=scalar)


# -- normalisation ------------------------------------------------------------------------
@converter("LayerNormalization")
def layer_norm(ctx, node):
    x = ctx.operand(ctx.input(node, 0))
    rank = ctx.rank(node, 0)
    axis = int(node.attr("axis", -1)) % rank
    eps = float(node.attr("epsilon", 1e-5))
    scale, bias = ctx.input(node, 1), ctx.input(node, 2)
    if isinstance(scale, Const) and (bias is None or isinstance(bias, Const)):
        shape = tuple(scale.array.shape)
        if len(shape) == rank - axis and (bias is None or tuple(bias.array.shape) == shape):
            m = nn.LayerNorm(shape, eps=eps, bias=bias is not None)
            ctx.load(m, "weight", node, 1)
            if bias is not None:
                ctx.load(m, "bias", node, 2)
            return ctx.call_module(node, m, x)
    dims = list(range(axis, rank))
    mean = ctx.call(torch.mean, x, dims, keepdim=True)
    var = ctx.call(torch.var, x, dims, keepdim=True, correction=0)
    y = ctx.call(operator.truediv, ctx.call(operator.sub, x, mean),
                 ctx.call(torch.sqrt, ctx.call(operator.add, var, eps)))
    y = ctx.call(operator.mul, y, _tensor(ctx, scale))
    if bias is not None:
        y = ctx.call(operator.add, y, _tensor(ctx, bias))
    return y


def rms_norm(x: torch.Tensor, dims: list[int], eps: float) -> torch.Tensor:
    """``x / sqrt(mean(x^2) + eps)`` over ``dims`` (RMSNorm without its weight)."""
    return x * torch.rsqrt(torch.mean(x * x, dims, keepdim=True) + eps)


@converter("RMSNormalization", "SimplifiedLayerNormalization")
def rms_norm_op(ctx, node):
    """ONNX ``RMSNormalization`` (opset 23) and ORT's ``SimplifiedLayerNormalization``: an
    ``nn.RMSNorm`` over the last axes when the scale is a constant of their shape."""
    if len([o for o in node.outputs if o.uses() or o.is_graph_output]) > 1:
        raise LoweringError(f"{node.op_type} node {label(node)}: its inverse-RMS output is used")
    x = ctx.operand(ctx.input(node, 0))
    rank = ctx.rank(node, 0)
    axis = int(node.attr("axis", -1)) % rank
    eps = float(node.attr("epsilon", 1e-5))
    scale = ctx.input(node, 1)
    if isinstance(scale, Const) and len(scale.array.shape) == rank - axis:
        m = nn.RMSNorm(tuple(scale.array.shape), eps=eps)
        ctx.load(m, "weight", node, 1)
        return ctx.call_module(node, m, x)
    y = ctx.call(rms_norm, x, list(range(axis, rank)), eps)
    return ctx.call(operator.mul, y, _tensor(ctx, scale), name=node.outputs[0].name)


# -- embeddings and indexing --------------------------------------------------------------
@converter("Gather")
def gather_op(ctx, node):
    """``nn.Embedding`` for rows of a 2-D float graph parameter picked by run-time ids."""
    x, idx = ctx.input(node, 0), ctx.input(node, 1)
    if (isinstance(x, Const) and x.origin is not None and x.array.ndim == 2 and x.array.dtype.kind == "f"
            and int(node.attr("axis", 0)) == 0 and isinstance(idx, fx.Node)):
        rows, dim = x.array.shape
        m = nn.Embedding(rows, dim)
        ctx.load(m, "weight", node, 0)
        return ctx.call_module(node, m, idx)
    from .ops_shapes import gather_op as plain

    return plain(ctx, node)


def gather_elements(x: torch.Tensor, indices: torch.Tensor, axis: int) -> torch.Tensor:
    """ONNX ``GatherElements`` (negative indices count from the end)."""
    idx = torch.where(indices < 0, indices + x.size(axis), indices)
    return torch.gather(x, axis, idx)


@converter("GatherElements")
def gather_elements_op(ctx, node):
    x, idx = _tensor(ctx, ctx.input(node, 0)), _tensor(ctx, ctx.input(node, 1))
    return ctx.call(gather_elements, x, idx, int(node.attr("axis", 0)), name=node.outputs[0].name)


@converter("Split")
def split(ctx, node):
    x = _tensor(ctx, ctx.input(node, 0))
    axis = int(node.attr("axis", 0))
    sizes = node.attr("split")
    if sizes is None and ctx.opset >= 13 and ctx.input(node, 1) is not None:
        sizes = ctx.ints(node, 1, "split")
    n = len(node.outputs)
    if sizes is None:
        shape = ctx.static_shape(node, 0)
        dim = None if shape is None else shape[axis]
        if not isinstance(dim, int):
            dim = ctx.size(x, axis)
            chunks = ctx.call(torch.tensor_split, x, n, axis)
            return [ctx.call(operator.getitem, chunks, i, name=o.name) for i, o in enumerate(node.outputs)]
        step = -(-dim // n)
        sizes = [min(step, dim - i * step) for i in range(n)]
    parts = ctx.call(torch.split, x, list(sizes), axis)
    return [ctx.call(operator.getitem, parts, i, name=o.name) for i, o in enumerate(node.outputs)]


@converter("Tile")
def tile(ctx, node):
    x = _tensor(ctx, ctx.input(node, 0))
    reps = ctx.input(node, 1)
    reps = list(reps.items) if isinstance(reps, Sym) else ctx.ints(node, 1, "repeats")
    return ctx.method("repeat", x, reps, name=node.outputs[0].name)


# -- masks: ranges, triangles, comparisons, selection -------------------------------------
@converter("Range")
def range_op(ctx, node):
    start, limit, delta = (ctx.input(node, i) for i in range(3))
    vals = [_sym_items(v) for v in (start, limit, delta)]
    t = ctx.type_of(node.outputs[0]) or ctx.type_of(node.inputs[0])
    floating = t is not None and t.elem_type and t.dtype.kind == "f"
    if not floating and all(v is not None and len(v) == 1 for v in vals):
        (s,), (e,), (d,) = vals
        if not any(isinstance(a, fx.Node) for a in (s, e, d)):
            return Const(np.arange(s, e, d, dtype=np.int64 if t is None else t.dtype))
        return ctx.call(torch.arange, s, e, d, dtype=torch.int64, name=node.outputs[0].name)
    args = [ctx.call(operator.methodcaller("item"), _tensor(ctx, v)) if not isinstance(v, Const)
            else v.array.reshape(()).item() for v in (start, limit, delta)]
    dtype = ctx.dtype if floating else torch.int64
    return ctx.call(torch.arange, *args, dtype=dtype, name=node.outputs[0].name)


@converter("Trilu")
def trilu(ctx, node):
    x = _tensor(ctx, ctx.input(node, 0))
    k = 0 if ctx.input(node, 1) is None else int(ctx.const(node, 1, "k").array.reshape(()))
    fn = torch.triu if node.attr("upper", 1) else torch.tril
    return ctx.call(fn, x, k, name=node.outputs[0].name)


def _mod(a, b):
    return a % b


def _fmod(a, b):
    return torch.fmod(a, b) if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor) else np.fmod(a, b)


_COMPARE = {
    "Equal": (operator.eq, torch.eq), "Less": (operator.lt, torch.lt), "Greater": (operator.gt, torch.gt),
    "LessOrEqual": (operator.le, torch.le), "GreaterOrEqual": (operator.ge, torch.ge),
    "And": (operator.and_, torch.logical_and), "Or": (operator.or_, torch.logical_or),
    "Mod": (_mod, torch.remainder),
}


@converter(*_COMPARE)
def compare(ctx, node):
    a, b = ctx.input(node, 0), ctx.input(node, 1)
    on_ints, on_tensors = _COMPARE[node.op_type]
    if node.op_type == "Mod" and node.attr("fmod", 0):
        on_ints, on_tensors = _fmod, torch.fmod
    sym = _sym_apply(ctx, node, on_ints, a, b)
    if sym is not None:
        return sym
    return ctx.call(on_tensors, _tensor(ctx, a), _tensor(ctx, b), name=node.outputs[0].name)


@converter("Not")
def logical_not(ctx, node):
    x = ctx.input(node, 0)
    sym = _sym_apply(ctx, node, operator.not_, x)
    if sym is not None:
        return sym
    return ctx.call(torch.logical_not, _tensor(ctx, x), name=node.outputs[0].name)


def _select(c, a, b):
    return a if c else b


def where(cond: torch.Tensor, a, b) -> torch.Tensor:
    """ONNX ``Where`` with scalar branches allowed (typed like the tensor branch)."""
    if not isinstance(a, torch.Tensor) and not isinstance(b, torch.Tensor):
        a = torch.tensor(a, dtype=torch.get_default_dtype() if isinstance(a, float) else torch.int64)
    return torch.where(cond, a, b)


@converter("Where")
def where_op(ctx, node):
    c, a, b = (ctx.input(node, i) for i in range(3))
    sym = _sym_apply(ctx, node, _select, c, a, b)
    if sym is not None:
        return sym
    ra = ctx.rank(node, 1) if not isinstance(ctx.input(node, 1), fx.Node) else None
    rb = ctx.rank(node, 2) if not isinstance(ctx.input(node, 2), fx.Node) else None
    return ctx.call(where, _tensor(ctx, c), ctx.operand(a, other_rank=rb), ctx.operand(b, other_rank=ra),
                    name=node.outputs[0].name)


def cumsum(x: torch.Tensor, axis: int, exclusive: bool, reverse: bool) -> torch.Tensor:
    """ONNX ``CumSum`` (position ids from an attention mask)."""
    if reverse:
        x = torch.flip(x, (axis,))
    y = torch.cumsum(x, axis)
    if exclusive:
        y = y - x
    return torch.flip(y, (axis,)) if reverse else y


@converter("CumSum")
def cumsum_op(ctx, node):
    x = _tensor(ctx, ctx.input(node, 0))
    axis = int(ctx.const(node, 1, "axis").array.reshape(()))
    return ctx.call(cumsum, x, axis, bool(node.attr("exclusive", 0)), bool(node.attr("reverse", 0)),
                    name=node.outputs[0].name)


def gather_nd(x: torch.Tensor, indices: torch.Tensor, batch_dims: int) -> torch.Tensor:
    """ONNX ``GatherND``."""
    k = indices.shape[-1]
    lead = x.shape[:batch_dims]
    xb = x.reshape(-1, *x.shape[batch_dims:])
    ib = indices.reshape(-1, *indices.shape[batch_dims:])
    ib = torch.where(ib < 0, ib + torch.tensor(x.shape[batch_dims:batch_dims + k], device=ib.device), ib)
    b = torch.arange(xb.shape[0], device=x.device).reshape(-1, *([1] * (ib.dim() - 2)))
    out = xb[(b.expand(ib.shape[:-1]), *ib.unbind(-1))]
    return out.reshape(*lead, *out.shape[1:])


@converter("GatherND")
def gather_nd_op(ctx, node):
    x, idx = _tensor(ctx, ctx.input(node, 0)), _tensor(ctx, ctx.input(node, 1))
    return ctx.call(gather_nd, x, idx, int(node.attr("batch_dims", 0)), name=node.outputs[0].name)


def _variadic(fn_int, fn_tensor):
    def lower(ctx, node):
        xs = [ctx.input(node, i) for i in range(len(node.inputs))]
        sym = _sym_apply(ctx, node, fn_int, *xs) if len(xs) == 2 else None
        if sym is not None:
            return sym
        y = _tensor(ctx, xs[0])
        for x in xs[1:]:
            y = ctx.call(fn_tensor, y, _tensor(ctx, x))
        return y

    return lower


converter("Max")(_variadic(max, torch.maximum))
converter("Min")(_variadic(min, torch.minimum))
