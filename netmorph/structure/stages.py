"""Units and stages of any CNN: the general reading every CNN morph is said in.

The graph's activation chain is cut at the values every input-to-output path passes through
(:class:`~netmorph.structure.dataflow.DataFlow`). Each piece between two cuts becomes part of a
*unit*:

- ``residual``: a region closed by an ``Add`` of a branch and a shortcut from the region's
  entry (:func:`~netmorph.structure.residual.match_residual`; the branch may hold anything);
- ``plain``: one conv;
- ``concat``: a multi-branch region closed by a ``Concat`` (Inception, dense layers, Fire
  modules, ShuffleNet splits): never deepened inside;
- ``region``: any other multi-node region (kept whole, never deepened inside).

Norms, activations (``Relu``, ``Clip``, ``HardSwish`` …, and gates such as ``x·sigmoid(x)`` or
an SE block closed by a ``Mul``) that follow a unit are its *trailing* layers; pooling and
other one-node layers (reshapes of a channel shuffle) lead into the next unit (its *prefix*).
The *head* starts at the first global pooling / flatten / linear after the last conv.

A *stage* is a maximal run of units whose outputs have the same width and resolution. The
first unit of a stage usually changes them (the paper's channel switch).

>>> a = anatomy(netmorph.load("resnet50.onnx"))
>>> print(a.summary())
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import StructureError
from ..ir import Graph, Node, Value
from .activations import ActivationView, ensure_types
from .dataflow import DataFlow, Segment
from .ops import ACTIVATION_OPS
from .residual import ResidualUnit, match_residual
from .units import op_class

TRAILING_CLASSES = {"norm", "act", "affine", "transparent"}
HEAD_START = {"gpool", "flatten", "fc"}


@dataclass
class StageUnit:
    """One unit of a CNN's chain.

    Attributes
    ----------
    name : str
        ``"s2.u3"``: third unit of stage 2.
    kind : str
        ``"residual"``, ``"plain"``, ``"concat"`` or ``"region"``.
    core : list of Node
        The unit's own nodes (the conv; or the region / residual unit's nodes).
    prefix, trailing : list of Node
        Pooling / reshapes before it; norms, activations and gates after it.
    input, output : Value
        What enters the unit (before its prefix) and what leaves it (after its trailing layers).
    core_output : Value
        The core's output (the ``Add`` of a residual unit, before the trailing layers).
    residual : ResidualUnit or None
    width : int or None
        Channels of ``output``.
    spatial : (int, int) or None
        Height and width of ``output``.
    """

    name: str
    kind: str
    core: list[Node]
    input: Value
    output: Value
    core_output: Value
    prefix: list[Node] = field(default_factory=list)
    trailing: list[Node] = field(default_factory=list)
    residual: ResidualUnit | None = None
    width: int | None = None
    spatial: tuple[int, int] | None = None

    @property
    def nodes(self) -> list[Node]:
        return [*self.prefix, *self.core, *self.trailing]

    @property
    def convs(self) -> list[Node]:
        """Conv nodes of the unit (a residual unit's branch and shortcut included)."""
        return [n for n in self.nodes if n.op_type == "Conv"]

    @property
    def conv(self) -> Node | None:
        """The conv of a plain unit."""
        return self.core[0] if self.kind == "plain" else None

    def describe(self) -> str:
        if self.kind == "plain":
            c = self.core[0]
            k = "x".join(str(int(d)) for d in (c.attr("kernel_shape") or ()))
            s = max(c.attr("strides", [1]) or [1])
            g = int(c.attr("group", 1))
            text = f"conv{k}" + (f"/{s}" if s > 1 else "") + (f" g{g}" if g > 1 else "")
        elif self.kind == "residual":
            r = self.residual
            short = r.shortcut_kind if r.shortcut_kind != "scaled" else f"{r.residual_ratio:g}·Id"
            text = f"residual[{short}] {len(r.branch)}-node branch"
        else:
            text = f"{self.kind} of {len(self.core)} nodes ({self.core[-1].op_type})"
        after = [n.op_type for n in self.trailing]
        return text + (f" + {'-'.join(after)}" if after else "")

    def to_dict(self) -> dict:
        return {
            "name": self.name, "kind": self.kind, "input": self.input.name, "output": self.output.name,
            "core": [n.name for n in self.core], "prefix": [n.name for n in self.prefix],
            "trailing": [n.name for n in self.trailing], "width": self.width,
            "spatial": None if self.spatial is None else list(self.spatial),
            "residual": None if self.residual is None else self.residual.to_dict(),
            "describe": self.describe(),
        }


@dataclass
class Stage:
    """A maximal run of units with outputs of equal width and resolution."""

    index: int
    units: list[StageUnit]

    @property
    def width(self) -> int | None:
        return self.units[-1].width

    @property
    def spatial(self) -> tuple[int, int] | None:
        return self.units[-1].spatial

    def to_dict(self) -> dict:
        return {"index": self.index, "width": self.width,
                "spatial": None if self.spatial is None else list(self.spatial),
                "units": [u.to_dict() for u in self.units]}


@dataclass
class Anatomy:
    """Units grouped into stages, and the head (classifier) nodes after them."""

    stages: list[Stage]
    head: list[Node]

    @property
    def units(self) -> list[StageUnit]:
        return [u for s in self.stages for u in s.units]

    def unit(self, name: str) -> StageUnit:
        for u in self.units:
            if u.name == name:
                return u
        raise KeyError(name)

    def select(self, level) -> list[Stage]:
        """Stages named by ``level``: an index (1-based) or ``"all"``."""
        if level is None or level == "all":
            return list(self.stages)
        return [s for s in self.stages if s.index == int(level)]

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for u in self.units:
            out[u.kind] = out.get(u.kind, 0) + 1
        return out

    def to_dict(self) -> dict:
        return {"stages": [s.to_dict() for s in self.stages], "head": [n.name for n in self.head],
                "counts": self.counts()}

    def summary(self) -> str:
        counts = ", ".join(f"{v} {k}" for k, v in self.counts().items())
        lines = [f"{len(self.stages)} stages, {len(self.units)} units ({counts})"]
        for s in self.stages:
            size = "" if s.spatial is None else f" {s.spatial[0]}x{s.spatial[1]}"
            kinds: list[str] = []
            for u in s.units:
                d = u.describe()
                if kinds and kinds[-1].endswith(d) and kinds[-1][0].isdigit():
                    n, _, rest = kinds[-1].partition("x ")
                    kinds[-1] = f"{int(n) + 1}x {rest}"
                elif kinds and kinds[-1] == d:
                    kinds[-1] = f"2x {d}"
                else:
                    kinds.append(d)
            lines.append(f"  stage{s.index}  {s.width} ch{size}: {'; '.join(kinds)}")
        lines.append(f"  head    {len(self.head)} nodes"
                     + (f" ({'-'.join(n.op_type for n in self.head[:6])})" if self.head else ""))
        return "\n".join(lines)


def anatomy(graph: Graph) -> Anatomy:
    """Units and stages of a one-input, one-output CNN.

    Parameters
    ----------
    graph : Graph
        Structurally unchanged; value types it lacks are inferred in place, or measured once in
        ONNX Runtime where inference cannot follow (so the units name this graph's own nodes
        and values, with their widths).

    Raises
    ------
    StructureError
        When the graph has no conv, several inputs or outputs, or a region that cannot be cut.
    """
    g = graph
    ensure_types(g)  # fills in missing types only: the returned units name this graph's own nodes
    from .shapes import fill_unknown_shapes

    fill_unknown_shapes(g)  # what inference cannot follow (ShuffleNet's reshapes): measured once
    if not g.find_nodes("Conv"):
        raise StructureError(f"graph {g.name!r} has no Conv node; units and stages are a CNN's")
    flow = DataFlow(g)
    view = ActivationView(g)
    segs = flow.segments
    last_conv = max((i for i, s in enumerate(segs) if any(n.op_type == "Conv" for n in s.nodes)))
    head_at = next((i for i in range(last_conv + 1, len(segs))
                    if len(segs[i].nodes) == 1 and op_class(flow, segs[i].nodes[0]) in HEAD_START),
                   len(segs))
    units: list[StageUnit] = []
    pending: list[Segment] = []
    for seg in segs[:head_at]:
        kind, res = _kind(flow, view, seg)
        if kind == "trailing" and units and not pending:
            units[-1].trailing.extend(seg.nodes)
            units[-1].output = seg.exit
        elif kind in ("trailing", "lead"):
            pending.append(seg)
        else:
            prefix = [n for s in pending for n in s.nodes]
            entry = pending[0].entry if pending else seg.entry
            units.append(StageUnit("", kind, list(seg.nodes), entry, seg.exit, seg.exit, prefix=prefix,
                                   residual=res))
            pending = []
    if not units:
        raise StructureError("no conv unit before the classifier head")
    head = [n for s in pending for n in s.nodes] + [n for s in segs[head_at:] for n in s.nodes]
    for u in units:
        u.width, u.spatial = _shape(u.output)
    stages: list[Stage] = []
    prev = None
    for u in units:
        key = (u.width, u.spatial)
        if key != prev or not stages:
            stages.append(Stage(len(stages) + 1, []))
        stages[-1].units.append(u)
        u.name = f"s{stages[-1].index}.u{len(stages[-1].units)}"
        prev = key
    return Anatomy(stages, head)


def _kind(flow: DataFlow, view: ActivationView, seg: Segment) -> tuple[str, ResidualUnit | None]:
    last = seg.last
    if len(seg.nodes) == 1:
        if last.op_type == "Conv":
            return "plain", None
        cls = op_class(flow, last)
        return ("trailing", None) if cls in TRAILING_CLASSES or last.op_type in ACTIVATION_OPS \
            else ("lead", None)
    if last.op_type == "Add":
        m = match_residual(last, view)
        if isinstance(m, ResidualUnit) and m.entry is seg.entry and not m.side_inputs:
            return "residual", m
    if last.op_type == "Concat":
        return "concat", None
    if last.op_type == "Mul" and not any(n.op_type == "Conv" and int(n.attr("group", 1)) == 1
                                         and _spatial_kernel(n) for n in seg.nodes):
        return "trailing", None  # a gate: x·sigmoid(x), HardSwish decomposed, squeeze-excitation
    return "region", None


def _spatial_kernel(n: Node) -> bool:
    k = n.attr("kernel_shape") or ()
    return any(int(d) > 1 for d in k)


def _shape(v: Value) -> tuple[int | None, tuple[int, int] | None]:
    t = v.type
    if t is None or t.shape is None or len(t.shape) != 4:
        return None, None
    c, h, w = t.shape[1:]
    return (c if isinstance(c, int) else None,
            (h, w) if isinstance(h, int) and isinstance(w, int) else None)
