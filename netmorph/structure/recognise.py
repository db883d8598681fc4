"""Find the DynamicNet structure (stem, levels of switch + template blocks, tail) of a graph.

How a block is decided, in four steps (see ``docs/dynamicnet.md``):

1. *Cut values* (:mod:`.dataflow`): the activations every input-to-output path passes through,
   from the dominator tree of the data-flow DAG. Consecutive cut values bound *segments*.
2. *Units* (:mod:`.units`): a one-node segment is a layer; a larger segment must be a residual
   join (main path of conv/norm/activation layers + identity, ``r·Id`` or conv shortcut).
3. *Blocks*: a plain block is one conv with the norm/activation layers after it; a residual
   block is one residual join with the activation after it. Pooling before a block belongs to
   that block (or to the stem, before the first level). The tail starts at the first global
   pooling / Flatten / Gemm. The stem is everything before the first residual block (ResNet),
   or the leading convs whose kernel differs from the body's usual kernel (PlainNet).
4. *Levels*: a level starts where the width changes, the feature map shrinks, or a projection
   (conv) shortcut appears; that first block is the channel switch ``C`` when it does one of
   those things (netmorph's own models always have one). All other blocks of a level must be
   isomorphic (``nx.is_isomorphic``, matching op class and conv attributes): the template ``T``.

Names and metadata are hints only: a netmorph model's metadata says it has a stem and a switch
in every level, which the graph alone cannot tell when they have the template's shape; the hint
is taken only where the node names agree (``stem.*``, ``levelK.block1.*``).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

import networkx as nx

from ..errors import StructureError
from ..ir import Graph, IRError, Node, infer_types
from .dataflow import DataFlow
from .model import Block, Level, Structure
from .units import Unit, classify, op_class

_SWITCH_NAME = re.compile(r"level\d+\.block1\.")
TAIL_START = {"gpool", "flatten", "fc"}
TAIL_CLASSES = {"gpool", "flatten", "fc", "affine", "act", "transparent", "softmax", "pool"}
SUFFIX_CLASSES = {"norm", "act", "affine", "transparent"}


@dataclass
class _Group:
    """A candidate block: leading units (pools …), one head (conv or residual), trailing layers."""

    head: Unit
    prefix: list[Unit] = field(default_factory=list)
    suffix: list[Unit] = field(default_factory=list)

    @property
    def units(self) -> list[Unit]:
        return [*self.prefix, self.head, *self.suffix]

    @property
    def residual(self) -> bool:
        return self.head.kind == "residual"

    def data_nodes(self) -> list[Node]:
        return [n for u in self.units for n in u.nodes]


def recognise(graph: Graph) -> Structure:
    """Find stem, levels (channel switch + template blocks) and tail of a DynamicNet graph.

    Parameters
    ----------
    graph : Graph
        Any imported model (not modified: recognition works on a clone).

    Returns
    -------
    Structure

    Raises
    ------
    StructureError
        When the graph does not have the DynamicNet shape; the message names the node and why.
    """
    g = graph.clone()
    try:
        infer_types(g)
    except (IRError, ValueError, RuntimeError, TypeError):
        pass  # shapes are a help (spatial sizes), not a need: unknown ops may defeat inference
    if not g.find_nodes("Conv"):
        ops = ", ".join(sorted({n.op_type for n in g.nodes})) or "none"
        raise StructureError(
            f"graph {g.name!r} has no Conv node (its ops: {ops}); a DynamicNet is a convolutional network"
        )
    return _Recogniser(g).run()


class _Recogniser:
    def __init__(self, graph: Graph):
        self.graph = graph
        self.flow = DataFlow(graph)
        hints = dict(graph.metadata_props)
        self.built_here = hints.get("netmorph.family") in ("plain", "resnet")
        self.hint_stem = self.built_here and hints.get("netmorph.stem", "none") != "none"

    # -- driver ----------------------------------------------------------------------------
    def run(self) -> Structure:
        units = [classify(self.flow, s) for s in self.flow.segments]
        for u in units:
            if u.kind in ("other", "join"):
                n = u.node
                raise StructureError(
                    f"node {n.name!r} ({n.op_type}) is not a layer of a DynamicNet "
                    "(conv, BatchNorm, activation, pooling, residual Add, classifier)"
                )
        body_units, tail_units = self._split_tail(units)
        groups, trailing = self._group(body_units)
        tail_units = trailing + tail_units
        stem_units, body = self._split_stem(groups)
        family = "resnet" if any(gr.residual for gr in body) else "plain"
        levels = self._levels(body)
        owners = self._aux_owners(stem_units, body, tail_units)
        stem = None
        if stem_units:
            stem = self._block("stem", "stem", stem_units, owners)
        blocks_out: list[Level] = []
        for li, lv in enumerate(levels, start=1):
            blocks = []
            for bi, (gr, kind) in enumerate(lv, start=1):
                blocks.append(self._block(f"level{li}.block{bi}", kind, gr.units, owners, gr.head))
            last = blocks[-1]
            blocks_out.append(Level(li, last.out_channels, blocks, self._spatial(last.output)))
        tail = self._block("tail", "tail", tail_units, owners)
        fcs = sum(1 for u in tail_units if u.kind == "fc")
        depth = (0 if stem is None else len(stem.convs)) + sum(
            len(b.convs) for lv in blocks_out for b in lv.blocks) + fcs
        return Structure(family, stem, blocks_out, tail, depth)

    # -- tail --------------------------------------------------------------------------------
    def _split_tail(self, units: list[Unit]) -> tuple[list[Unit], list[Unit]]:
        start = next((i for i, u in enumerate(units) if u.kind in TAIL_START), None)
        if start is None:
            raise StructureError(
                f"no classifier tail: nothing like GlobalAveragePool / Flatten / Gemm before the "
                f"output {self.flow.output.name!r}"
            )
        tail = units[start:]
        for u in tail:
            if u.kind not in TAIL_CLASSES:
                first = units[start].node
                raise StructureError(
                    f"node {u.node.name!r} ({u.node.op_type}) comes after the classifier tail began at "
                    f"{first.name!r} ({first.op_type}); the tail holds only pooling, Flatten, "
                    "Gemm/MatMul, activations and Softmax"
                )
        if not any(u.kind == "fc" for u in tail):
            raise StructureError(
                f"the classifier tail from {units[start].node.name!r} has no Gemm/MatMul layer"
            )
        return units[:start], tail

    # -- blocks ------------------------------------------------------------------------------
    def _group(self, units: list[Unit]) -> tuple[list[_Group], list[Unit]]:
        groups: list[_Group] = []
        pending: list[Unit] = []
        for u in units:
            if u.kind in ("conv", "residual"):
                groups.append(_Group(u, prefix=pending))
                pending = []
            elif u.kind in SUFFIX_CLASSES and groups and not pending:
                groups[-1].suffix.append(u)
            elif u.kind in SUFFIX_CLASSES or u.kind == "pool":
                pending.append(u)
            else:
                raise StructureError(
                    f"node {u.node.name!r} ({u.node.op_type}) sits among the convolution layers; "
                    "expected conv, BatchNorm, activation or pooling there"
                )
        if not groups:
            raise StructureError("no convolution layer before the classifier tail")
        return groups, pending

    def _split_stem(self, groups: list[_Group]) -> tuple[list[Unit], list[_Group]]:
        first_res = next((i for i, gr in enumerate(groups) if gr.residual), None)
        if first_res is not None:
            stem_groups, body = groups[:first_res], groups[first_res:]
            for gr in body:
                if not gr.residual:
                    raise StructureError(
                        f"conv layer {gr.head.node.name!r} sits between residual blocks; every block "
                        "of a ResNet level must be a residual block"
                    )
        else:
            kernels = Counter(self._kernel(gr.head.node) for gr in groups)
            usual = kernels.most_common(1)[0][0]
            s = 0
            while s < len(groups) - 1 and self._kernel(groups[s].head.node) != usual:
                s += 1
            if s == 0 and self.hint_stem and len(groups) > 1 and groups[0].head.node.name.startswith("stem."):
                s = 1  # metadata and node name agree: a stem with the template's shape
            stem_groups, body = groups[:s], groups[s:]
        stem_units = [u for gr in stem_groups for u in gr.units]
        head = body[0]
        if stem_units or any(u.kind == "pool" for u in head.prefix):
            # pooling right before the first level is the stem's (ImageNet: conv7x7/2 + maxpool)
            stem_units += head.prefix
            head.prefix = []
        return stem_units, body

    def _levels(self, body: list[_Group]) -> list[list[tuple[_Group, str]]]:
        levels: list[list[_Group]] = []
        prev_out = None
        for gr in body:
            cin, cout, stride = self._widths(gr)
            starts = (
                not levels or cout != prev_out or stride > 1
                or any(u.kind == "pool" for u in gr.prefix) or gr.head.shortcut == "conv"
            )
            if starts:
                levels.append([])
            levels[-1].append(gr)
            prev_out = cout
        out = []
        for li, lv in enumerate(levels, start=1):
            first = lv[0]
            cin, cout, stride = self._widths(first)
            switch = (
                cin != cout or stride > 1 or first.head.shortcut == "conv"
                or any(u.kind == "pool" for u in first.prefix)
                # a netmorph model always has a switch; trusted when metadata and name agree
                or (self.built_here and _SWITCH_NAME.match(first.head.convs[0].name) is not None)
            )
            kinds = ["switch" if switch and i == 0 else "template" for i in range(len(lv))]
            templates = [gr for gr, k in zip(lv, kinds, strict=True) if k == "template"]
            self._check_templates(li, lv, templates, switch)
            out.append(list(zip(lv, kinds, strict=True)))
        return out

    def _check_templates(self, li: int, lv: list[_Group], templates: list[_Group], switch: bool) -> None:
        if len(templates) < 2:
            return
        ref = templates[0]
        ref_graph = self._block_graph(ref)
        same = lambda a, b: a["sig"] == b["sig"]  # noqa: E731
        for t in templates[1:]:
            if not nx.is_isomorphic(ref_graph, self._block_graph(t), node_match=same):
                i_ref = lv.index(ref) + 1
                i_t = lv.index(t) + 1
                raise StructureError(
                    f"no repeatable template block in level {li}: block {i_t} (at "
                    f"{t.head.node.name!r}: {self._describe(t)}) differs from block {i_ref} (at "
                    f"{ref.head.node.name!r}: {self._describe(ref)})"
                )

    # -- helpers -----------------------------------------------------------------------------
    def _kernel(self, conv: Node) -> tuple[int, ...]:
        return self._sig(conv)[1]

    def _conv_out(self, conv: Node) -> int | None:
        w = self.flow.constant_shape(conv.inputs[1])
        if w is not None and len(w) == 4:
            return int(w[0])
        t = conv.outputs[0].type
        if t is not None and t.shape is not None and len(t.shape) == 4 and isinstance(t.shape[1], int):
            return t.shape[1]
        return None

    def _conv_in(self, conv: Node) -> int | None:
        w = self.flow.constant_shape(conv.inputs[1])
        if w is not None and len(w) == 4:
            return int(w[1]) * int(conv.attr("group", 1))
        return None

    def _widths(self, gr: _Group) -> tuple[int | None, int | None, int]:
        convs = gr.head.convs
        stride = 1
        for c in convs:
            stride *= max(c.attr("strides", [1, 1]) or [1])
        for u in gr.prefix:
            if u.kind == "pool":
                stride *= max(u.node.attr("strides", [1, 1]) or [1])
        return self._conv_in(convs[0]), self._conv_out(convs[-1]), stride

    def _sig(self, n: Node) -> tuple:
        cls = op_class(self.flow, n)
        if cls in ("conv", "pool"):
            kernel = tuple(n.attr("kernel_shape", ()) or ())
            if not kernel and cls == "conv":
                w = self.flow.constant_shape(n.inputs[1])
                kernel = () if w is None else tuple(w[2:])
            ones = (1,) * len(kernel)
            return (cls, kernel, tuple(n.attr("strides", ()) or ones), int(n.attr("group", 1)),
                    tuple(n.attr("dilations", ()) or ones))
        return (cls,)

    def _block_graph(self, gr: _Group) -> nx.DiGraph:
        nodes = gr.data_nodes()
        ids = {id(n) for n in nodes}
        bg = nx.DiGraph()
        for n in nodes:
            bg.add_node(id(n), sig=self._sig(n))
            for v in self.flow.data_inputs(n):
                if v.producer is not None and id(v.producer) in ids:
                    bg.add_edge(id(v.producer), id(n))
        return bg

    def _describe(self, gr: _Group) -> str:
        parts = []
        for n in gr.data_nodes():
            s = self._sig(n)
            if s[0] == "conv":
                stride = max(s[2]) if s[2] else 1
                parts.append(f"conv{'x'.join(map(str, s[1]))}" + (f"/{stride}" if stride > 1 else ""))
            else:
                parts.append(n.op_type)
        return "-".join(parts)

    def _spatial(self, value_name: str) -> tuple[int, int] | None:
        t = self.graph.value(value_name).type
        if t is None or t.shape is None or len(t.shape) != 4:
            return None
        h, w = t.shape[2:]
        return (h, w) if isinstance(h, int) and isinstance(w, int) else None

    def _aux_owners(self, stem: list[Unit], body: list[_Group], tail: list[Unit]) -> dict[int, str]:
        """Block name owning each auxiliary (weight plumbing) node, when only one block reads it."""
        owner: dict[int, str] = {}
        for n in stem:
            for m in n.nodes:
                owner[id(m)] = "stem"
        for i, gr in enumerate(body):
            for m in gr.data_nodes():
                owner[id(m)] = f"body{i}"
        for n in tail:
            for m in n.nodes:
                owner[id(m)] = "tail"
        for n in reversed(self.flow.aux_nodes):
            users = {owner.get(id(c)) for o in n.outputs for c in o.consumers()}
            if len(users) == 1 and None not in users:
                owner[id(n)] = users.pop()
        return owner

    def _block(self, name: str, kind: str, units: list[Unit], owners: dict[int, str],
               head: Unit | None = None) -> Block:
        data_ids = {id(n) for u in units for n in u.nodes}
        key = owners.get(next(iter(data_ids))) if data_ids else None
        aux = {id(n) for n in self.flow.aux_nodes}
        nodes = [n.name for n in self.graph.nodes if id(n) in data_ids or (
            key is not None and id(n) in aux and owners.get(id(n)) == key)]
        convs = [c for u in units if u.kind in ("conv", "residual") for c in u.convs]
        stride = 1
        for u in units:
            if u.kind == "pool":
                stride *= max(u.node.attr("strides", [1, 1]) or [1])
            for c in u.convs:
                stride *= max(c.attr("strides", [1, 1]) or [1])
        cin = self._conv_in(convs[0]) if convs else None
        cout = self._conv_out(convs[-1]) if convs else None
        return Block(
            name=name, kind=kind, nodes=nodes, input=units[0].segment.entry.name,
            output=units[-1].segment.exit.name, convs=[c.name for c in convs],
            shortcut=None if head is None else head.shortcut,
            residual_ratio=None if head is None else head.residual_ratio,
            add=None if head is None or head.add is None else head.add.name,
            stride=stride, in_channels=cin, out_channels=cout,
        )
