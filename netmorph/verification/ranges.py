"""The valid values of integer inputs, read off the graph that consumes them.

A token id feeding ``Gather(table, ids)`` is valid in ``0 .. rows-1``; a class index feeding
``OneHot(idx, depth)`` in ``0 .. depth-1``. Ids reach those ops through shape-only ops
(``Reshape``, ``Unsqueeze``, ``Cast`` …), which are followed, and through ``Add``/``Sub`` of an
integer scalar constant (position ids offset by a padding index), which shift the range.
Comparisons with constants (``Equal(ids, 0)``, ``Less(pos, 50)``) are *hints*: used only where
no op bounds the input, so the generated values fall on both sides of every constant.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

PASS_THROUGH = frozenset({
    "Identity", "Cast", "Reshape", "Unsqueeze", "Squeeze", "Flatten", "Transpose", "Expand", "Tile",
    "Slice", "Concat", "Split", "Gather", "GatherElements",
})
"""Ops whose first (data) input's values reach their output unchanged (for ``Gather``: input 0)."""

COMPARISONS = frozenset({"Equal", "Less", "LessOrEqual", "Greater", "GreaterOrEqual"})


@dataclass(frozen=True)
class IntRange:
    """Inclusive integer range ``lo .. hi`` and why (``"Gather 'emb' rows"``, ``"default"`` …)."""

    lo: int
    hi: int
    source: str

    @property
    def size(self) -> int:
        return self.hi - self.lo + 1


def _constants(graph: onnx.GraphProto) -> dict[str, np.ndarray]:
    out = {t.name: t for t in graph.initializer}
    arrays: dict[str, np.ndarray] = {}
    for n in graph.node:
        if n.op_type == "Constant" and n.domain in ("", "ai.onnx"):
            for a in n.attribute:
                if a.name == "value":
                    out[n.output[0]] = a.t
                elif a.name in ("value_int", "value_ints"):
                    arrays[n.output[0]] = np.asarray(onnx.helper.get_attribute_value(a))
    for name, t in out.items():
        if t.data_location != onnx.TensorProto.EXTERNAL or t.raw_data:
            try:
                arrays[name] = numpy_helper.to_array(t)
            except (ValueError, TypeError):  # pragma: no cover - exotic element types
                pass
    return arrays


def _static_shapes(graph: onnx.GraphProto) -> dict[str, tuple]:
    shapes: dict[str, tuple] = {t.name: tuple(t.dims) for t in graph.initializer}  # external data too
    for vi in [*graph.input, *graph.value_info, *graph.output]:
        tt = vi.type.tensor_type
        if vi.type.WhichOneof("value") == "tensor_type" and tt.HasField("shape"):
            shapes[vi.name] = tuple(d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim)
    return shapes


def _attr(node: onnx.NodeProto, name: str, default):
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def _follow(node: onnx.NodeProto, shift: int, seen: set[str], todo: list[tuple[str, int]]) -> None:
    for out in node.output:
        if out and out not in seen:
            seen.add(out)
            todo.append((out, shift))


def infer_int_ranges(model: onnx.ModelProto, names: list[str]) -> dict[str, IntRange]:
    """Valid ranges of the integer graph inputs ``names`` that the graph bounds (others are left out).

    Bounds from several ops intersect (the input must be valid for all of them); if they do not
    overlap, the narrowest one is kept. Comparison hints span ``min(c) - 1 .. max(c) + 1`` of
    the constants compared with, widened to include ``0 .. 3``.
    """
    g = model.graph
    consts = _constants(g)
    shapes = _static_shapes(g)
    uses: dict[str, list[tuple[onnx.NodeProto, int]]] = defaultdict(list)
    for n in g.node:
        for i, x in enumerate(n.input):
            if x:
                uses[x].append((n, i))
    found: dict[str, IntRange] = {}
    for name in names:
        bounds: list[IntRange] = []
        hints: list[np.ndarray] = []
        as_bool = False  # read as a 0/1 mask (Cast to bool): 0 and 1 reach every behaviour
        # (value, shift): value = input + shift, for ids that pass through Add/Sub of a constant
        seen, todo = {name}, [(name, 0)]
        while todo:
            v, shift = todo.pop()
            for node, i in uses.get(v, []):
                op = node.op_type if node.domain in ("", "ai.onnx") else ""
                if op in ("Gather", "GatherElements") and i == 1:
                    data = node.input[0]
                    shape = shapes.get(data, consts[data].shape if data in consts else None)
                    axis = int(_attr(node, "axis", 0))
                    if shape is not None and -len(shape) <= axis < len(shape) and shape[axis]:
                        src = f"{op} {data!r} rows" + (f" (ids {shift:+d})" if shift else "")
                        bounds.append(IntRange(-shift, int(shape[axis]) - 1 - shift, src))
                elif op == "OneHot" and i == 0 and node.input[1] in consts:
                    depth = int(np.asarray(consts[node.input[1]]).reshape(-1)[0])
                    if depth > 0:
                        bounds.append(IntRange(-shift, depth - 1 - shift, f"OneHot depth {depth}"))
                elif op == "Cast" and int(_attr(node, "to", 0)) == onnx.TensorProto.BOOL and shift == 0:
                    as_bool = True
                elif op in COMPARISONS:
                    other = node.input[1 - i] if len(node.input) == 2 else ""
                    if other in consts and np.asarray(consts[other]).size:
                        hints.append(np.asarray(consts[other]).reshape(-1) - shift)
                elif op in ("Add", "Sub") and len(node.input) == 2 and (op == "Add" or i == 0):
                    c = consts.get(node.input[1 - i])
                    if c is not None and c.size == 1 and c.dtype.kind in "iu":
                        step = int(c.reshape(-1)[0]) * (1 if op == "Add" else -1)
                        _follow(node, shift + step, seen, todo)
                elif op in PASS_THROUGH and i == 0 or op == "Concat":
                    _follow(node, shift, seen, todo)
        if bounds:
            lo, hi = max(b.lo for b in bounds), min(b.hi for b in bounds)
            if lo <= hi:
                src = bounds[0].source if len(bounds) == 1 else " & ".join(sorted({b.source for b in bounds}))
                found[name] = IntRange(lo, hi, src)
            else:
                found[name] = min(bounds, key=lambda b: b.size)
        elif hints:
            c = np.concatenate(hints)
            if c.dtype.kind in "iub" or np.all(np.isfinite(c)):
                lo = min(0, int(np.floor(c.min())) - 1)
                hi = max(3, int(np.ceil(c.max())) + 1)
                found[name] = IntRange(lo, hi, "comparisons with constants")
        elif as_bool:
            found[name] = IntRange(0, 1, "Cast to bool (a 0/1 mask)")
    return found
