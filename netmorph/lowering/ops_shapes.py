"""Shape and layout ops: Shape, Gather, Slice, (Un)Squeeze, Concat, Reshape, Flatten, Transpose,
Expand, ConstantOfShape, Pad.

On shape values (:class:`~netmorph.lowering.values.Sym`) they compute lists of ints while
lowering; on tensors they become the matching torch calls.
"""

from __future__ import annotations

import operator

import numpy as np
import torch
import torch.nn.functional as F
from onnx import numpy_helper

from ..errors import LoweringError
from .dispatch import converter
from .names import label
from .padding import torch_pad_list
from .values import Const, Sym, is_weight


def _items(ctx, node, index, what) -> list:
    """A shape-like input (constant or shape value) as a list of ints / run-time ints."""
    x = ctx.input(node, index)
    if isinstance(x, Sym):
        return list(x.items)
    return ctx.ints(node, index, what)


def _axes(ctx, node, index: int, what: str = "axes") -> list[int] | None:
    axes = node.attr("axes")
    if axes is None and ctx.opset >= 13:
        axes = ctx.ints(node, index, what)
    return None if axes is None else [int(a) for a in axes]


@converter("Shape")
def shape(ctx, node):
    x = ctx.input(node, 0)
    rank = ctx.rank(node, 0)
    start, end = int(node.attr("start", 0)), node.attr("end")
    dims = range(rank)[slice(start, None if end is None else int(end))]
    if isinstance(x, Sym):
        return Const(np.asarray([len(x.items)], dtype=np.int64)[list(dims)])
    return Sym(tuple(ctx.size(x, i) for i in dims))


def gather(x: torch.Tensor, indices: torch.Tensor, axis: int) -> torch.Tensor:
    """ONNX ``Gather`` of any index rank (negative indices count from the end)."""
    idx = torch.where(indices < 0, indices + x.size(axis), indices)
    out = torch.index_select(x, axis, idx.reshape(-1))
    return out.reshape(*x.shape[:axis], *indices.shape, *x.shape[axis + 1:])


@converter("Gather")
def gather_op(ctx, node):
    x, idx = ctx.input(node, 0), ctx.input(node, 1)
    axis = int(node.attr("axis", 0))
    if isinstance(x, Sym):
        if x.cols is not None:
            raise LoweringError(f"Gather node {label(node)}: a rank-2 shape value is indexed")
        ind = ctx.const(node, 1, "indices").array
        items = x.items
        picked = tuple(items[int(i)] for i in ind.reshape(-1))
        return Sym(picked, scalar=ind.ndim == 0)
    if isinstance(idx, Const) and idx.array.ndim == 0:
        return ctx.call(torch.select, ctx.operand(x), axis, int(idx.array), name=node.outputs[0].name)
    return ctx.call(gather, ctx.operand(x), ctx.operand(idx), axis, name=node.outputs[0].name)


@converter("Slice")
def slice_op(ctx, node):
    x = ctx.input(node, 0)
    if ctx.opset < 10:
        starts, ends = node.attr("starts"), node.attr("ends")
        axes, steps = node.attr("axes"), None
    else:
        starts, ends = _items(ctx, node, 1, "starts"), _items(ctx, node, 2, "ends")
        axes, steps = ctx.ints(node, 3, "axes"), ctx.ints(node, 4, "steps")
    axes = list(range(len(starts))) if axes is None else list(axes)
    steps = [1] * len(starts) if steps is None else list(steps)
    if isinstance(x, Sym) and x.cols is not None:  # rows of a rank-2 shape value (F.pad's pads)
        rows = [x.items[i:i + x.cols] for i in range(0, len(x.items), x.cols)]
        if axes not in ([0], [-2]) or not isinstance(steps[0], int) or steps[0] == 0:
            raise LoweringError(f"Slice node {label(node)}: a rank-2 shape value is sliced by rows only")
        s, e = starts[0], ends[0]
        big = 2 ** 62  # ONNX's "to the end" sentinels, as Python slices read them
        s, e = (None if abs(s) >= big else s), (None if abs(e) >= big else e)
        picked = rows[slice(s, e, steps[0])]
        return Sym(tuple(v for r in picked for v in r), cols=x.cols)
    if any(not isinstance(s, int) or s <= 0 for s in steps):
        raise LoweringError(f"Slice node {label(node)}: steps {steps} are not supported (positive only)")
    if isinstance(x, Sym):
        if axes not in ([0], [-1]):
            raise LoweringError(f"Slice node {label(node)}: a shape value has one axis")
        return Sym(tuple(x.items[slice(starts[0], ends[0], steps[0])]))
    rank = ctx.rank(node, 0)
    index: list = [slice(None)] * rank
    for a, s, e, st in zip(axes, starts, ends, steps, strict=True):
        index[a % rank] = slice(s, e, st)
    xo = ctx.weight(node, 0) if is_weight(x) else ctx.operand(x)
    return ctx.call(operator.getitem, xo, tuple(index), name=node.outputs[0].name)


@converter("Squeeze")
def squeeze(ctx, node):
    x = ctx.input(node, 0)
    axes = _axes(ctx, node, 1)
    if isinstance(x, Sym):
        if len(x.items) != 1:
            raise LoweringError(
                f"Squeeze node {label(node)}: cannot squeeze a shape value of length {len(x.items)}"
            )
        return Sym(x.items, scalar=True)
    xo = ctx.operand(x)
    if axes is None:
        return ctx.call(torch.squeeze, xo, name=node.outputs[0].name)
    return ctx.call(torch.squeeze, xo, tuple(axes), name=node.outputs[0].name)


@converter("Unsqueeze")
def unsqueeze(ctx, node):
    x = ctx.input(node, 0)
    axes = _axes(ctx, node, 1)
    if axes is None:
        raise LoweringError(f"Unsqueeze node {label(node)}: no axes")
    if isinstance(x, Sym):
        if not x.scalar or len(axes) != 1:
            raise LoweringError(f"Unsqueeze node {label(node)}: only a scalar shape value can be unsqueezed")
        return Sym(x.items)
    out_rank = ctx.rank(node, 0) + len(axes)
    y = ctx.operand(x)
    for a in sorted(a % out_rank for a in axes):
        y = ctx.call(torch.unsqueeze, y, a)
    return y


@converter("Concat")
def concat(ctx, node):
    parts = [ctx.input(node, i) for i in range(len(node.inputs))]
    if any(isinstance(p, Sym) and p.cols is not None for p in parts):
        raise LoweringError(f"Concat node {label(node)}: a rank-2 shape value is concatenated")
    if any(isinstance(p, Sym) for p in parts):
        items: list = []
        for i, p in enumerate(parts):
            items += list(p.items) if isinstance(p, Sym) else ctx.ints(node, i, "shape part")
        return Sym(tuple(items))
    tensors = [ctx.weight(node, i) if is_weight(p) else ctx.buffer(p) if isinstance(p, Const)
               else p for i, p in enumerate(parts)]
    return ctx.call(torch.cat, tensors, int(node.attr("axis")), name=node.outputs[0].name)


@converter("Reshape")
def reshape(ctx, node):
    x = ctx.input(node, 0)
    target = _items(ctx, node, 1, "shape")
    if isinstance(x, Sym):
        cols = target[1] if len(target) == 2 and isinstance(target[1], int) and target[1] > 0 else None
        if cols and len(x.items) % cols == 0 and target[0] in (-1, len(x.items) // cols):
            return Sym(x.items, cols=cols)  # F.pad's pads, [-1, 2]
        if len(target) > 1:
            raise LoweringError(f"Reshape node {label(node)}: a shape value reshaped to rank > 2")
        return Sym(x.items, scalar=len(target) == 0)
    xo = ctx.operand(x)
    if not node.attr("allowzero", 0):
        target = [ctx.size(xo, i) if isinstance(d, int) and d == 0 else d for i, d in enumerate(target)]
    return ctx.method("reshape", xo, target, name=node.outputs[0].name)


@converter("Flatten")
def flatten(ctx, node):
    x = ctx.operand(ctx.input(node, 0))
    rank = ctx.rank(node, 0)
    axis = int(node.attr("axis", 1))
    axis = axis + rank if axis < 0 else axis
    if axis == 0:
        return ctx.method("reshape", x, [1, -1], name=node.outputs[0].name)
    if axis == 1 and rank >= 2:
        return ctx.call(torch.flatten, x, 1, name=node.outputs[0].name)
    lead = ctx.size(x, 0)
    for i in range(1, axis):
        lead = ctx.arith(operator.mul, lead, ctx.size(x, i))
    return ctx.method("reshape", x, [lead, -1], name=node.outputs[0].name)


@converter("Transpose")
def transpose(ctx, node):
    x = ctx.input(node, 0)
    if isinstance(x, Sym) and x.cols is not None:  # a rank-2 shape value (F.pad's pads)
        rows = len(x.items) // x.cols
        return Sym(tuple(x.items[r * x.cols + c] for c in range(x.cols) for r in range(rows)), cols=rows)
    x = ctx.operand(x)
    perm = node.attr("perm")
    if perm is None:
        perm = list(range(ctx.rank(node, 0)))[::-1]
    return ctx.method("permute", x, list(perm), name=node.outputs[0].name)


def expand(x: torch.Tensor, shape: list) -> torch.Tensor:
    """ONNX ``Expand``: broadcast ``x`` and ``shape`` against each other."""
    return x.expand(torch.broadcast_shapes(x.shape, tuple(shape)))


@converter("Expand")
def expand_op(ctx, node):
    x = ctx.input(node, 0)
    if is_weight(x):
        xo = ctx.weight(node, 0)
    else:
        xo = ctx.buffer(x) if isinstance(x, Const) else ctx.operand(x)
    return ctx.call(expand, xo, _items(ctx, node, 1, "shape"), name=node.outputs[0].name)


@converter("ConstantOfShape")
def constant_of_shape(ctx, node):
    a = node.attributes.get("value")
    value = np.zeros(1, np.float32) if a is None else numpy_helper.to_array(a.t)
    dtype = torch.from_numpy(np.array(value)).dtype
    if dtype.is_floating_point:
        dtype = ctx.dtype
    return ctx.call(torch.full, _items(ctx, node, 0, "shape"), value.reshape(-1)[0].item(), dtype=dtype,
                    name=node.outputs[0].name)


_PAD_MODES = {"constant": "constant", "reflect": "reflect", "edge": "replicate", "wrap": "circular"}


def _zero(x) -> bool:
    return isinstance(x, int) and x == 0


@converter("Pad")
def pad(ctx, node):
    x = ctx.operand(ctx.input(node, 0))
    mode = node.attr("mode", b"constant")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    if mode not in _PAD_MODES:
        raise LoweringError(f"Pad node {label(node)}: mode {mode!r} is not supported")
    rank = ctx.rank(node, 0)
    if ctx.opset < 11:
        pads, value, axes = list(node.attr("pads")), float(node.attr("value", 0.0)), None
    else:
        given = ctx.input(node, 1)  # run-time pads (a window padding computed from the size) stay ints
        pads = list(given.items) if isinstance(given, Sym) else ctx.ints(node, 1, "pads")
        c = ctx.input(node, 2)
        value = 0.0 if c is None else ctx.const(node, 2, "constant_value").array.reshape(()).item()
        axes = ctx.ints(node, 3, "axes")
    axes = list(range(rank)) if axes is None else [a % rank for a in axes]
    n = len(axes)
    begins, ends = [0] * rank, [0] * rank
    for i, a in enumerate(axes):
        begins[a], ends[a] = pads[i], pads[i + n]
    first = next((i for i in range(rank) if not (_zero(begins[i]) and _zero(ends[i]))), rank)
    if first == rank:
        return x
    flat = torch_pad_list(begins[first:], ends[first:])
    kwargs = {"value": value} if mode == "constant" else {}
    return ctx.call(F.pad, x, flat, mode=_PAD_MODES[mode], name=node.outputs[0].name, **kwargs)

