"""Classify each segment of the cut-value chain as a DynamicNet layer *unit*.

A single-node segment is one layer (conv, norm, activation, pooling, classifier op …). A
multi-node segment must be a residual unit (the one matcher, :func:`.residual.match_residual`)
in the paper's narrower form: two simple chains from the entry value, joined by an ``Add``; one
(the main path) holds only conv / norm / activation layers, the other (the shortcut) is the
identity, a scalar ``Mul`` (``r·Id``) or a conv (+ norm).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import StructureError
from ..ir import Node
from .dataflow import DataFlow, Segment
from .ops import OP_CLASSES
from .residual import ResidualUnit, match_residual

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


def _residual(flow: DataFlow, seg: Segment) -> Unit:
    """The DynamicNet reading of the residual unit closing ``seg`` (:func:`.residual.match_residual`):
    both sides simple chains from the segment's entry, a main path of conv / norm / activation
    layers, and a shortcut that is the identity, ``r·Id`` or a conv (+ norm)."""
    join = seg.last
    ins = flow.data_inputs(join)
    if op_class(flow, join) != "join" or len(ins) != 2:
        raise StructureError(
            f"node {join.name!r} ({join.op_type}) closes a region of {len(seg.nodes)} nodes that "
            f"starts at {seg.entry.name!r}; only an Add of a main path and a shortcut forms a "
            "residual block (long skips, concatenations and attention are not DynamicNet blocks)"
        )
    where = f"the region from {seg.entry.name!r} to {seg.exit.name!r}"
    m = match_residual(join, flow)
    if isinstance(m, str):
        raise StructureError(f"{where} is no residual block: {m}")
    if m.entry is not seg.entry:
        raise StructureError(f"value {m.entry.name!r} reaches {join.name!r} from outside its block")
    main, short = m.branch, m.shortcut
    for n in main:
        k = len(flow.data_inputs(n))
        if k != 1:
            raise StructureError(
                f"node {n.name!r} ({n.op_type}) joins {k} activations inside {where}; only one Add of a "
                "main path and a shortcut forms a residual block"
            )
        users = flow.data_consumers(flow.data_output(n))
        if len(users) != 1:
            raise StructureError(
                f"node {n.name!r} ({n.op_type}) has {len(users)} consumers inside {where}; a residual "
                "branch is a simple chain"
            )
    used = {id(n) for n in m.nodes}
    for n in seg.nodes:
        if id(n) not in used:
            raise StructureError(
                f"node {n.name!r} ({n.op_type}) is on neither branch of the residual block ending "
                f"at {join.name!r}"
            )
    if not any(n.op_type == "Conv" for n in main):
        raise StructureError(f"residual join {join.name!r} has no conv on either branch")
    for n in main:
        if op_class(flow, n) not in MAIN_PATH_CLASSES:
            raise StructureError(
                f"node {n.name!r} ({n.op_type}) is on the main path of the residual block ending at "
                f"{join.name!r}; a block's main path holds only conv, normalisation and activation layers"
            )
    kind = _shortcut_kind(flow, m)
    return Unit(
        "residual", seg, convs=[n for n in main if n.op_type == "Conv"], shortcut=kind,
        residual_ratio=m.residual_ratio if kind != "conv" else None, add=join, shortcut_nodes=short,
    )


def _shortcut_kind(flow: DataFlow, m: ResidualUnit) -> str:
    """``identity``, ``scaled`` or ``conv`` (a conv + norms / affine ops) of a DynamicNet block."""
    if m.shortcut_kind in ("identity", "scaled"):
        return m.shortcut_kind
    core = [n for n in m.shortcut if op_class(flow, n) != "transparent"]
    classes = [op_class(flow, n) for n in core]
    if classes and classes[0] == "conv" and all(c in ("norm", "affine") for c in classes[1:]):
        return "conv"
    ops = ", ".join(f"{n.name} ({n.op_type})" for n in core)
    raise StructureError(
        f"the shortcut of the residual block ending at {m.add.name!r} is not the identity, a scalar "
        f"Mul or a conv (+BN): it holds {ops}"
    )
