"""``insert-identity-conv``: an identity KxK convolution after a chosen value. Exact.

The conv maps C channels to C with a centre-tap identity kernel, stride 1 and 'same' padding, so
it computes its input exactly; it is a new trainable layer anywhere in a CNN (before a
classifier, between two stages), one layer deeper.
"""

from __future__ import annotations

from ..errors import PreconditionError
from ..ir import Graph, Value
from ..limits import MAX_KERNEL
from ..morphs.deepen import identity_kernel
from .base import Option, Pass, PassContext, parameter_bytes
from .layers import channels_of, conv_node, find_value, insert_chain_after


class InsertIdentityConv(Pass):
    """Insert ``Conv`` (C -> C, identity ``kernel`` x ``kernel`` weight, no bias) after ``value``."""

    name = "insert-identity-conv"
    summary = "Insert an identity KxK conv (centre tap 1, stride 1, 'same' padding) after a value."
    option_specs = (
        Option("value", str, None, "the NCHW value to follow", required=True),
        Option("kernel", int, 1, "kernel size of the identity conv (odd)", low=1, high=MAX_KERNEL),
    )

    def requires(self, graph: Graph) -> tuple[Value, int]:
        k = self.options["kernel"]
        if k % 2 == 0:
            raise PreconditionError(f"{self.name}: --kernel {k}: an identity conv needs an odd kernel")
        v = find_value(graph, self.options["value"])
        return v, channels_of(v, self.name)

    def child_bytes(self, graph: Graph, plan: tuple[Value, int]) -> int:
        c, k = plan[1], self.options["kernel"]
        return parameter_bytes(graph) + c * c * k * k * plan[0].type.dtype.itemsize

    def call(self, graph: Graph, ctx: PassContext, plan: tuple[Value, int]) -> None:
        v, c = plan
        k = self.options["kernel"]
        weight = identity_kernel(c, 1, (k, k), v.type.dtype)
        node = conv_node(graph, v, weight, None, name=graph.unique_node_name(f"{v.name}.conv_id"),
                         out_type=v.type)
        ctx.derive(node.inputs[1].name, "new", note=f"identity {k}x{k} conv")
        ctx.note(morph=self.name, after=v.name, kernel=f"{k}x{k}", channels=c)
        insert_chain_after(graph, v, [node], node.output)
