"""Which values of a graph carry activations: the view every structure finder starts from.

A value is an *activation* when it is a non-parameter graph input, or when a node computes it
from an activation (shape queries ``Shape`` / ``Size`` and ``CastLike``'s type operand do not
count: their outputs are weight plumbing). This view works for any graph (several inputs,
several outputs: images, token ids, masks); :class:`~netmorph.structure.dataflow.DataFlow` is
this view of a one-input graph that is also cut into segments (dominators).

Built once in O(nodes + edges); every query after that is a dictionary lookup.
"""

from __future__ import annotations

from ..ir import Graph, IRError, Node, Value, infer_types
from .ops import SHAPE_QUERY_OPS, TYPE_ONLY_INPUTS


class ActivationView:
    """Activation values and nodes of ``graph`` with their activation inputs and readers.

    Attributes
    ----------
    graph : Graph
    inputs : list of Value, optional
        The values activations start from (default: every non-parameter graph input).
    nodes : list of Node
        Nodes that compute an activation, in graph (topological) order.
    position : dict
        ``id(node) -> index`` in ``graph.nodes`` (for ordering and ``earlier`` tests).
    """

    def __init__(self, graph: Graph, inputs: list[Value] | None = None):
        self.graph = graph
        sources = [v for v in graph.inputs if not v.is_parameter] if inputs is None else inputs
        self._data: set[int] = {id(v) for v in sources}
        self._inputs: dict[int, list[Value]] = {}
        self._readers: dict[int, list[Node]] = {}
        self.position = {id(n): i for i, n in enumerate(graph.nodes)}
        self.nodes: list[Node] = []
        for n in graph.nodes:
            if n.op_type in SHAPE_QUERY_OPS:
                continue
            skip = TYPE_ONLY_INPUTS.get(n.op_type, frozenset())
            ins = [v for i, v in enumerate(n.inputs)
                   if i not in skip and v is not None and id(v) in self._data]
            if not ins:
                continue
            self.nodes.append(n)
            self._inputs[id(n)] = ins
            seen: set[int] = set()
            for v in ins:
                if id(v) not in seen:
                    seen.add(id(v))
                    self._readers.setdefault(id(v), []).append(n)
            self._data.update(id(o) for o in n.outputs)

    def is_activation(self, v: Value | None) -> bool:
        return v is not None and id(v) in self._data

    def is_data_node(self, n: Node) -> bool:
        return id(n) in self._inputs

    def inputs(self, n: Node) -> list[Value]:
        """The activation inputs of ``n`` (in input order, repeats kept)."""
        return self._inputs.get(id(n), [])

    def other_nodes(self) -> list[Node]:
        """Nodes that compute no activation (weight plumbing, shape arithmetic), in graph order."""
        return [n for n in self.graph.nodes if id(n) not in self._inputs]

    def readers(self, v: Value) -> list[Node]:
        """The nodes that read activation ``v`` as an activation (each once)."""
        return self._readers.get(id(v), [])

    def output(self, n: Node) -> Value | None:
        """The one output of ``n`` that something reads (or that is a graph output), else ``None``."""
        used = [o for o in n.outputs if self._readers.get(id(o)) or o.is_graph_output]
        return used[0] if len(used) == 1 else None


def ensure_types(graph: Graph) -> None:
    """Infer the value types ``graph`` lacks, in place (structure unchanged); unknown ops may
    defeat inference, which is then left as far as it got."""
    if any(o.type is None or o.type.shape is None for n in graph.nodes for o in n.outputs):
        try:
            infer_types(graph)
        except (IRError, ValueError, RuntimeError, TypeError):
            pass
