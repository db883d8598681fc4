"""The graph view of a one-input, one-output graph cut into segments at its dominators.

:class:`DataFlow` is the :class:`~netmorph.structure.activations.ActivationView` of a graph with
one data input (an NCHW image batch for the DynamicNet and CNN readings; token ids or images
with ``images=False``), plus where every input-to-output path passes through. Nodes computed
from the input are *data* nodes (the view's nodes); weight plumbing (Constant, Identity of
initializers, the Shape → Gather → Concat arithmetic exporters write for ``Reshape``) is
*auxiliary*.

Cut values are found with dominators (networkx): a node that every input-to-output path
passes through dominates the output node; its output is a *cut value* (a node with several
used outputs, a ``Split``, is none: it opens the region its outputs meet again in). Between two
consecutive cut values lies a *segment*: a single node on a plain chain, or a
single-entry-single-exit region (a residual block's two branches and their Add).
"""

from __future__ import annotations

from dataclasses import dataclass

import networkx as nx
import numpy as np

from ..errors import StructureError
from ..ir import Graph, Node, Value
from .activations import ActivationView
from .constants import constant_array, constant_shape

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


class DataFlow(ActivationView):
    """Data nodes, auxiliary nodes and the cut-value chain of a one-input, one-output graph.

    ``images``: the input must be an NCHW batch (the CNN readings); ``False`` takes any one
    data input (token ids, images: the transformer reading).
    """

    def __init__(self, graph: Graph, *, images: bool = True, source: Value | None = None):
        self.graph = graph
        self.images = images
        # ``source``: the data input the flow is read over when there are several (token ids next
        # to an attention mask); the others are side inputs, read like constants
        self.image = source if source is not None else self._image_input()
        self.output = self._single_output()
        super().__init__(graph, [self.image])
        self.data_nodes: list[Node] = self.nodes
        self.aux_nodes: list[Node] = self.other_nodes()
        if not self.is_activation(self.output):
            raise StructureError(f"graph output {self.output.name!r} does not depend on the input")
        self.dag = self._dag()
        self.segments = self._segments()

    # -- checks and helpers --------------------------------------------------------------
    def _image_input(self) -> Value:
        ins = [v for v in self.graph.inputs if not v.is_parameter]
        if len(ins) != 1:
            names = ", ".join(v.name for v in ins) or "none"
            want = "a DynamicNet takes one NCHW image batch" if self.images else \
                "expected one (token ids or images)"
            raise StructureError(f"graph has {len(ins)} data inputs ({names}); {want}")
        v = ins[0]
        if self.images and v.type is not None and v.type.rank is not None and v.type.rank != 4:
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

    @property
    def data(self) -> set[int]:
        """``id`` of every data value."""
        return self._data

    def is_data(self, v: Value | None) -> bool:
        return self.is_activation(v)

    def data_inputs(self, node: Node) -> list[Value]:
        return self.inputs(node)

    def data_consumers(self, v: Value) -> list[Node]:
        """The nodes that read ``v`` as an activation (shape queries and type operands excluded)."""
        return self.readers(v)

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

    # -- constants (read by netmorph.structure.constants) ------------------------------------
    def constant(self, v: Value | None) -> np.ndarray | None:
        """The value of ``v`` when it is a constant (seen through casts and reshapes), else ``None``."""
        return None if self.is_data(v) else constant_array(v, transpose=False, cast=True, reshape=True)

    def constant_shape(self, v: Value | None) -> tuple[int, ...] | None:
        """The shape of a constant ``v`` (read without materialising initializers), else ``None``."""
        return None if self.is_data(v) else constant_shape(v)
