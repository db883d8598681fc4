"""Classify each segment of the cut-value chain as a layer *unit*.

A single-node segment is one layer (conv, norm, activation, pooling, classifier op …). A
multi-node segment must be a residual unit: two branches from the entry value, joined by an
``Add``; one branch (the main path) holds only conv / norm / activation layers, the other
(the shortcut) is the identity, a scalar ``Mul`` (``r·Id``) or a conv (+ norm).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import StructureError
from ..ir import Node
from .dataflow import DataFlow, Segment

OP_CLASSES = {
    "Conv": "conv",
    "BatchNormalization": "norm",
    "Relu": "act", "Clip": "act", "PRelu": "act", "LeakyRelu": "act",
    "MaxPool": "pool", "AveragePool": "pool",
    "GlobalAveragePool": "gpool", "GlobalMaxPool": "gpool",
    "Flatten": "flatten", "Reshape": "flatten", "Squeeze": "flatten",
    "Gemm": "fc", "MatMul": "fc",
    "Softmax": "softmax", "LogSoftmax": "softmax",
    "Identity": "transparent", "Dropout": "transparent",
}
ELEMENTWISE = {"Mul", "Add", "Sub", "Div"}
MAIN_PATH_CLASSES = {"conv", "norm", "act", "affine", "transparent"}


@dataclass
class Unit:
    """One layer, or one residual join, on the cut-value chain."""

    kind: str  # an op class, or "residual"
    segment: Segment
    convs: list[Node] = field(default_factory=list)  # main-path convs
    shortcut: str | None = None
    residual_ratio: float | None = None
    add: Node | None = None
    shortcut_nodes: list[Node] = field(default_factory=list)

    @property
    def nodes(self) -> list[Node]:
        return self.segment.nodes

    @property
    def node(self) -> Node:
        return self.segment.last


def op_class(flow: DataFlow, node: Node) -> str:
    """The layer class of ``node`` (``"conv"``, ``"act"`` …; ``"other"`` when unknown)."""
    if node.op_type in ELEMENTWISE:
        data = flow.data_inputs(node)
        if len(data) == 1:
            return "affine"
        return "join" if node.op_type in ("Add", "Sum") else "other"
    if node.op_type == "ReduceMean":
        return "gpool" if _reduces_spatial(flow, node) else "other"
    if node.op_type == "MatMul" and len(flow.data_inputs(node)) > 1:
        return "other"
    return OP_CLASSES.get(node.op_type, "other")


def _reduces_spatial(flow: DataFlow, node: Node) -> bool:
    axes = node.attr("axes")
    if axes is None and len(node.inputs) > 1:
        arr = flow.constant(node.inputs[1])
        axes = None if arr is None else arr.reshape(-1).tolist()
    return axes is not None and sorted(int(a) % 4 for a in axes) == [2, 3]


def classify(flow: DataFlow, seg: Segment) -> Unit:
    """The :class:`Unit` of one segment; raises :class:`StructureError` when it is no layer."""
    if len(seg.nodes) == 1:
        return Unit(op_class(flow, seg.nodes[0]), seg, convs=[n for n in seg.nodes if n.op_type == "Conv"])
    return _residual(flow, seg)


def _branch(flow: DataFlow, seg: Segment, start, members: set[int], join: Node) -> list[Node]:
    """Walk back from ``start`` to the segment entry; the branch's nodes, first to last."""
    nodes: list[Node] = []
    v = start
    while v is not seg.entry:
        n = v.producer
        if n is None or id(n) not in members:
            raise StructureError(f"value {v.name!r} reaches {join.name!r} from outside its block")
        ins = flow.data_inputs(n)
        if len(ins) != 1:
            raise StructureError(
                f"node {n.name!r} ({n.op_type}) joins {len(ins)} activations inside the region from "
                f"{seg.entry.name!r} to {seg.exit.name!r}; only one Add of a main path and a shortcut "
                "forms a residual block"
            )
        users = flow.data_consumers(flow.data_output(n))
        if len(users) != 1:
            raise StructureError(
                f"node {n.name!r} ({n.op_type}) has {len(users)} consumers inside the region from "
                f"{seg.entry.name!r} to {seg.exit.name!r}; a residual branch is a simple chain"
            )
        nodes.append(n)
        v = ins[0]
    nodes.reverse()
    return nodes


def _residual(flow: DataFlow, seg: Segment) -> Unit:
    join = seg.last
    ins = flow.data_inputs(join)
    if op_class(flow, join) != "join" or len(ins) != 2:
        raise StructureError(
            f"node {join.name!r} ({join.op_type}) closes a region of {len(seg.nodes)} nodes that "
            f"starts at {seg.entry.name!r}; only an Add of a main path and a shortcut forms a "
            "residual block (long skips, concatenations and attention are not DynamicNet blocks)"
        )
    members = {id(n) for n in seg.nodes}
    a, b = (_branch(flow, seg, v, members, join) for v in ins)
    used = {id(n) for n in a + b} | {id(join)}
    for n in seg.nodes:
        if id(n) not in used:
            raise StructureError(
                f"node {n.name!r} ({n.op_type}) is on neither branch of the residual block ending "
                f"at {join.name!r}"
            )
    main, short = _split_main(flow, a, b, join)
    for n in main:
        if op_class(flow, n) not in MAIN_PATH_CLASSES:
            raise StructureError(
                f"node {n.name!r} ({n.op_type}) is on the main path of the residual block ending at "
                f"{join.name!r}; a block's main path holds only conv, normalisation and activation layers"
            )
    kind, r = _shortcut_kind(flow, short, join)
    return Unit(
        "residual", seg, convs=[n for n in main if n.op_type == "Conv"], shortcut=kind,
        residual_ratio=r, add=join, shortcut_nodes=short,
    )


def _split_main(flow: DataFlow, a: list[Node], b: list[Node], join: Node) -> tuple[list[Node], list[Node]]:
    def weight(br):
        convs = [n for n in br if n.op_type == "Conv"]
        k = max((int(np.prod(n.attr("kernel_shape", [1, 1]))) for n in convs), default=0)
        return (len(convs), k, len(br))

    main, short = (a, b) if weight(a) >= weight(b) else (b, a)
    if not any(n.op_type == "Conv" for n in main):
        raise StructureError(f"residual join {join.name!r} has no conv on either branch")
    return main, short


def _shortcut_kind(flow: DataFlow, short: list[Node], join: Node) -> tuple[str, float | None]:
    core = [n for n in short if op_class(flow, n) != "transparent"]
    if not core:
        return "identity", 1.0
    if len(core) == 1 and core[0].op_type == "Mul":
        n = core[0]
        operands = [v for v in n.inputs if not flow.is_data(v)]
        shape = flow.constant_shape(operands[0]) if len(operands) == 1 else None
        small = len(operands) == 1 and (shape is None or int(np.prod(shape)) == 1)
        const = flow.constant(operands[0]) if small else None
        if const is not None and const.size == 1:
            val = const.reshape(())
            # shortest decimal that round-trips the stored float32 (0.7, not 0.699999988…)
            return "scaled", float(str(val)) if val.dtype == np.float32 else float(val)
    classes = [op_class(flow, n) for n in core]
    if classes[0] == "conv" and all(c in ("norm", "affine") for c in classes[1:]):
        return "conv", None
    ops = ", ".join(f"{n.name} ({n.op_type})" for n in core)
    raise StructureError(
        f"the shortcut of the residual block ending at {join.name!r} is not the identity, a scalar "
        f"Mul or a conv (+BN): it holds {ops}"
    )
