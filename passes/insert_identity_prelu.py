"""``insert-identity-prelu``: a PReLU with slope 1 after a chosen value. Exact."""

from __future__ import annotations

from ..ir import Graph, Node, Value
from .base import PassContext
from .insert_after import InsertAfterValue
from .layers import identity_prelu_node


class InsertIdentityPReLU(InsertAfterValue):
    """Insert ``PRelu`` with slope 1 (shape (C, 1, 1)) after ``value``: the identity (Eq. 8, a = 1)."""

    name = "insert-identity-prelu"
    summary = "Insert an identity PReLU (slope 1, shape (C,1,1)) after a value."

    def node(self, graph: Graph, ctx: PassContext, value: Value, channels: int) -> Node:
        return identity_prelu_node(graph, value, channels, name=f"{value.name}.prelu_id",
                                   dtype=value.type.dtype)
