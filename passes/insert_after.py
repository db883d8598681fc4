"""What the ``insert-identity-*`` passes share: one new node after a chosen NCHW value."""

from __future__ import annotations

from ..ir import Graph, Node, Value
from .base import Option, Pass, PassContext
from .layers import channels_of, find_value, insert_chain_after

VALUE = Option("value", str, None, "the NCHW value to follow", required=True)


class InsertAfterValue(Pass):
    """Base of passes inserting one node after ``value`` (its readers then read the node's output).

    The plan is ``(value, channels)``; subclasses build the node in :meth:`node`.
    """

    option_specs = (VALUE,)

    def requires(self, graph: Graph) -> tuple[Value, int]:
        v = find_value(graph, self.options["value"])
        return v, channels_of(v, self.name)

    def node(self, graph: Graph, ctx: PassContext, value: Value, channels: int) -> Node:
        raise NotImplementedError

    def call(self, graph: Graph, ctx: PassContext, plan: tuple[Value, int]) -> None:
        v, channels = plan
        node = self.node(graph, ctx, v, channels)
        insert_chain_after(graph, v, [node], node.output)
