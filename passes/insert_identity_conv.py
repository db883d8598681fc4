"""``insert-identity-conv``: an identity KxK convolution after a chosen value. Exact.

The conv maps C channels to C with a centre-tap identity kernel, stride 1 and 'same' padding, so
it computes its input exactly; it is a new trainable layer anywhere in a CNN (before a
classifier, between two stages), one layer deeper.
"""

from __future__ import annotations

from ..errors import PreconditionError
from ..ir import Graph, Node, Value
from ..limits import MAX_KERNEL
from ..morphs.deepen import identity_kernel
from .base import Option, PassContext, parameter_bytes
from .insert_after import VALUE, InsertAfterValue
from .layers import conv_node


class InsertIdentityConv(InsertAfterValue):
    """Insert ``Conv`` (C -> C, identity ``kernel`` x ``kernel`` weight, no bias) after ``value``."""

    name = "insert-identity-conv"
    summary = "Insert an identity KxK conv (centre tap 1, stride 1, 'same' padding) after a value."
    option_specs = (
        VALUE,
        Option("kernel", int, 1, "kernel size of the identity conv (odd)", low=1, high=MAX_KERNEL),
    )

    def requires(self, graph: Graph) -> tuple[Value, int]:
        k = self.options["kernel"]
        if k % 2 == 0:
            raise PreconditionError(f"{self.name}: --kernel {k}: an identity conv needs an odd kernel")
        return super().requires(graph)

    def child_bytes(self, graph: Graph, plan: tuple[Value, int]) -> int:
        c, k = plan[1], self.options["kernel"]
        return parameter_bytes(graph) + c * c * k * k * plan[0].type.dtype.itemsize

    def node(self, graph: Graph, ctx: PassContext, value: Value, channels: int) -> Node:
        k = self.options["kernel"]
        weight = identity_kernel(channels, 1, (k, k), value.type.dtype)
        node = conv_node(graph, value, weight, None, name=graph.unique_node_name(f"{value.name}.conv_id"),
                         out_type=value.type)
        ctx.derive(node.inputs[1].name, "new", note=f"identity {k}x{k} conv")
        ctx.note(morph=self.name, after=value.name, kernel=f"{k}x{k}", channels=channels)
        return node
