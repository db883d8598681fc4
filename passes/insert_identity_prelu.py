"""``insert-identity-prelu``: a PReLU with slope 1 after a chosen value. Exact."""

from __future__ import annotations

from ..errors import PreconditionError
from ..ir import Graph
from .base import Option, Pass, PassContext
from .layers import channels_of, find_value, identity_prelu_node, insert_chain_after


class InsertIdentityPReLU(Pass):
    """Insert ``PRelu`` with slope 1 (shape (C, 1, 1)) after ``value``: the identity (Eq. 8, a = 1)."""

    name = "insert-identity-prelu"
    summary = "Insert an identity PReLU (slope 1, shape (C,1,1)) after a value."
    option_specs = (Option("value", str, None, "the NCHW value to follow (required)"),)

    def requires(self, graph: Graph) -> None:
        if not self.options["value"]:
            raise PreconditionError(f"{self.name}: say which value to follow (--value NAME)")
        channels_of(find_value(graph, self.options["value"]), self.name)

    def call(self, graph: Graph, ctx: PassContext) -> None:
        v = graph.value(self.options["value"])
        node = identity_prelu_node(graph, v, channels_of(v, self.name), name=f"{v.name}.prelu_id",
                                   dtype=v.type.dtype)
        insert_chain_after(graph, v, [node], node.output)
