"""``insert-identity-prelu``: a PReLU with slope 1 after a chosen value. Exact."""

from __future__ import annotations

from ..ir import Graph, Value
from .base import Option, Pass, PassContext
from .layers import channels_of, find_value, identity_prelu_node, insert_chain_after


class InsertIdentityPReLU(Pass):
    """Insert ``PRelu`` with slope 1 (shape (C, 1, 1)) after ``value``: the identity (Eq. 8, a = 1)."""

    name = "insert-identity-prelu"
    summary = "Insert an identity PReLU (slope 1, shape (C,1,1)) after a value."
    option_specs = (Option("value", str, None, "the NCHW value to follow", required=True),)

    def requires(self, graph: Graph) -> tuple[Value, int]:
        v = find_value(graph, self.options["value"])
        return v, channels_of(v, self.name)

    def call(self, graph: Graph, ctx: PassContext, plan: tuple[Value, int]) -> None:
        v, channels = plan
        node = identity_prelu_node(graph, v, channels, name=f"{v.name}.prelu_id", dtype=v.type.dtype)
        insert_chain_after(graph, v, [node], node.output)
