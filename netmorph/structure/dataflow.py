"""The data-flow view of a graph: which nodes carry activations, and where the graph is cut.

Only nodes computed from the image input count (``data`` nodes); weight plumbing (Constant,
Identity of initializers, the Shape → Gather → Concat arithmetic exporters write for
``Reshape``) is *auxiliary*. A value is data when it is the graph input, or when a node that
is not a shape query (``Shape``, ``Size``; ``CastLike``'s type operand) computes it from data.

Cut values are found with dominators (networkx): a node that every input-to-output path
passes through dominates the output node; its output is a *cut value*. Between two
consecutive cut values lies a *segment*: a single node on a plain chain, or a
single-entry-single-exit region (a residual block's two branches and their Add).
"""

from __future__ import annotations

from dataclasses import dataclass

import networkx as nx
import numpy as np
from onnx import numpy_helper

from ..errors import StructureError
from ..ir import Graph, Node, Value

SHAPE_QUERY_OPS = {"Shape", "Size"}
TYPE_ONLY_INPUTS = {"CastLike": {1}}
_SOURCE = "\0input"


@dataclass
class Segment:
    """The nodes between two consecutive cut values (``entry`` excluded, ``exit`` produced)."""

    nodes: list[Node]
    entry: Value
    exit: Value

    @property
    def last(self) -> Node:
        return self.exit.producer


class DataFlow:
    """Data nodes, auxiliary nodes and the cut-value chain of a one-input, one-output graph."""

    def __init__(self, graph: Graph):
        self.graph = graph
        self.image = self._image_input()
        self.output = self._single_output()
        self.data: set[int] = {id(self.image)}
        self.data_nodes: list[Node] = []
        self.aux_nodes: list[Node] = []
        for n in graph.nodes:
            if n.op_type in SHAPE_QUERY_OPS:
                self.aux_nodes.append(n)
                continue
            skip = TYPE_ONLY_INPUTS.get(n.op_type, set())
            if any(v is not None and id(v) in self.data for i, v in enumerate(n.inputs) if i not in skip):
                self.data_nodes.append(n)
                self.data.update(id(o) for o in n.outputs)
            else:
                self.aux_nodes.append(n)
        self._ids = {id(n) for n in self.data_nodes}
        if id(self.output) not in self.data:
            raise StructureError(f"graph output {self.output.name!r} does not depend on the input")
        self.dag = self._dag()
        self.segments = self._segments()

    # -- checks and helpers --------------------------------------------------------------
    def _image_input(self) -> Value:
        ins = [v for v in self.graph.inputs if not v.is_parameter]
        if len(ins) != 1:
            names = ", ".join(v.name for v in ins) or "none"
            raise StructureError(
                f"graph has {len(ins)} data inputs ({names}); a DynamicNet takes one NCHW image batch"
            )
        v = ins[0]
        if v.type is not None and v.type.rank is not None and v.type.rank != 4:
            raise StructureError(f"input {v.name!r} has rank {v.type.rank}; a DynamicNet takes NCHW images")
        return v

    def _single_output(self) -> Value:
        if len(self.graph.outputs) != 1:
            names = ", ".join(v.name for v in self.graph.outputs)
            raise StructureError(
                f"graph has {len(self.graph.outputs)} outputs ({names}); "
                "a DynamicNet has one classifier output"
            )
        return self.graph.outputs[0]

    def is_data(self, v: Value | None) -> bool:
        return v is not None and id(v) in self.data

    def data_inputs(self, node: Node) -> list[Value]:
        skip = TYPE_ONLY_INPUTS.get(node.op_type, set())
        return [v for i, v in enumerate(node.inputs) if i not in skip and self.is_data(v)]

    def data_consumers(self, v: Value) -> list[Node]:
        """The nodes that read ``v`` as an activation (shape queries and type operands excluded)."""
        return [n for n in v.consumers() if any(d is v for d in self.data_inputs(n)) and id(n) in self._ids]

    def data_output(self, node: Node) -> Value:
        used = [o for o in node.outputs if o.uses() or o.is_graph_output]
        if len(used) != 1:
            raise StructureError(
                f"node {node.name!r} ({node.op_type}) has {len(used)} used outputs; expected one"
            )
        return used[0]

    @staticmethod
    def _one_output(node: Node) -> bool:
        return sum(1 for o in node.outputs if o.uses() or o.is_graph_output) == 1

    def _dag(self) -> nx.DiGraph:
        """Vertices are ``id(node)`` (names may be empty or repeated in foreign files)."""
        dag = nx.DiGraph()
        dag.add_node(_SOURCE)
        for n in self.data_nodes:
            dag.add_node(id(n))
            for v in self.data_inputs(n):
                dag.add_edge(_SOURCE if v.producer is None else id(v.producer), id(n))
        sink = self.output.producer
        if sink is None:
            raise StructureError(f"graph output {self.output.name!r} is the input itself")
        live = nx.ancestors(dag, id(sink)) | {id(sink)}
        for n in self.data_nodes:
            if id(n) not in live:
                raise StructureError(
                    f"node {n.name!r} ({n.op_type}) computes from the input but does not reach "
                    f"the output {self.output.name!r} (a second head or dead branch)"
                )
        return dag

    def _segments(self) -> list[Segment]:
        by_id = {id(n): n for n in self.data_nodes}
        idom = nx.immediate_dominators(self.dag, _SOURCE)
        chain = [id(self.output.producer)]
        while chain[-1] != _SOURCE:
            chain.append(idom[chain[-1]])
        chain.reverse()  # source, d1, d2, ..., sink
        # a node with several used outputs (Split, a CSP stage's two halves) is no cut value: it
        # opens the region its outputs meet again in
        chain = [d for d in chain if d == _SOURCE or d == chain[-1] or self._one_output(by_id[d])]
        on_chain = set(chain)
        groups: dict = {d: [] for d in chain[:-1]}
        for n in self.data_nodes:
            d = idom[id(n)]
            while d not in on_chain:
                d = idom[d]
            groups[d].append(n)
        segments = []
        entry = self.image
        for d, nxt in zip(chain[:-1], chain[1:], strict=True):
            exit_ = self.data_output(by_id[nxt])
            segments.append(Segment(groups[d], entry, exit_))
            entry = exit_
        return segments

    # -- constants ------------------------------------------------------------------------
    def constant(self, v: Value | None) -> np.ndarray | None:
        """The value of ``v`` when it is a constant (initializer, Constant node, or an
        Identity / Cast / CastLike / Reshape / Expand / Unsqueeze of one), else ``None``."""
        for _ in range(8):
            if v is None or self.is_data(v):
                return None
            if v.const is not None:
                return v.const.array
            n = v.producer
            if n is None:
                return None
            if n.op_type == "Constant":
                return _constant_attr(n)
            if n.op_type not in ("Identity", "Cast", "CastLike", "Reshape", "Expand", "Unsqueeze", "Squeeze"):
                return None
            v = n.inputs[0]
        return None


    def constant_shape(self, v: Value | None) -> tuple[int, ...] | None:
        """The shape of a constant ``v`` (read without materialising initializers), else ``None``."""
        for _ in range(8):
            if v is None or self.is_data(v):
                return None
            if v.const is not None:
                return tuple(v.const.shape)
            n = v.producer
            if n is None:
                return None
            if n.op_type == "Constant":
                arr = _constant_attr(n)
                return None if arr is None else arr.shape
            if n.op_type not in ("Identity", "Cast", "CastLike"):
                return None
            v = n.inputs[0]
        return None


def _constant_attr(n: Node) -> np.ndarray | None:
    for key in ("value", "value_float", "value_floats", "value_int", "value_ints"):
        if key in n.attributes:
            val = n.attr(key)
            return numpy_helper.to_array(val) if key == "value" else np.asarray(val)
    return None
