"""``insert-identity-bn``: an identity BatchNormalization after a chosen value. Exact."""

from __future__ import annotations

from ..ir import Graph, Value
from .base import Option, Pass, PassContext
from .layers import channels_of, find_value, identity_bn_node, insert_chain_after


class InsertIdentityBN(Pass):
    """Insert ``BatchNormalization`` (gamma 1, beta 0, mean 0, var 1-eps) after ``value``.

    It is exactly the identity in inference. In training mode a BatchNorm normalises by the
    batch statistics, so the function changes once training starts (that is the point).
    """

    name = "insert-identity-bn"
    summary = "Insert an identity BatchNorm (gamma 1, beta 0, mean 0, var 1-eps) after a value."
    option_specs = (Option("value", str, None, "the NCHW value to follow", required=True),)

    def requires(self, graph: Graph) -> tuple[Value, int]:
        v = find_value(graph, self.options["value"])
        return v, channels_of(v, self.name)

    def call(self, graph: Graph, ctx: PassContext, plan: tuple[Value, int]) -> None:
        v, channels = plan
        node = identity_bn_node(graph, v, channels, name=f"{v.name}.bn_id", dtype=v.type.dtype)
        insert_chain_after(graph, v, [node], node.output)
