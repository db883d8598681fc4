"""``insert-identity-bn``: an identity BatchNormalization after a chosen value. Exact."""

from __future__ import annotations

from ..ir import Graph, Node, Value
from .base import PassContext
from .insert_after import InsertAfterValue
from .layers import identity_bn_node


class InsertIdentityBN(InsertAfterValue):
    """Insert ``BatchNormalization`` (gamma 1, beta 0, mean 0, var 1-eps) after ``value``.

    It is exactly the identity in inference. In training mode a BatchNorm normalises by the
    batch statistics, so the function changes once training starts (that is the point).
    """

    name = "insert-identity-bn"
    summary = "Insert an identity BatchNorm (gamma 1, beta 0, mean 0, var 1-eps) after a value."

    def node(self, graph: Graph, ctx: PassContext, value: Value, channels: int) -> Node:
        return identity_bn_node(graph, value, channels, name=f"{value.name}.bn_id", dtype=value.type.dtype)
