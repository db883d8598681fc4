"""``insert-identity-linear``: an identity linear layer (``x @ I + 0``) after a chosen value. Exact.

The layer maps the last axis of ``value`` (any rank >= 2: ``[N, C]``, a transformer's
``[N, T, D]``) to itself with an identity weight and a zero bias, so it computes its input
exactly; it is a new trainable layer before a classifier, between two transformer layers or on
the residual stream. Written as ``MatMul`` by a 2-D weight then ``Add`` of the bias, the form
the structure layer and the lowering read as one linear layer.
"""

from __future__ import annotations

import numpy as np

from ..errors import PreconditionError
from ..ir import Graph, Node, Value
from .base import Option, PassContext, parameter_bytes
from .insert_after import InsertAfterValue
from .layers import find_value, insert_chain_after


class InsertIdentityLinear(InsertAfterValue):
    """Insert ``MatMul(value, I_D)`` + ``Add(0)`` after ``value`` (``D`` its last axis)."""

    name = "insert-identity-linear"
    summary = "Insert an identity linear layer (weight I, bias 0) over the last axis of a value."
    option_specs = (
        Option("value", str, None, "the value to follow (rank >= 2, last axis = features)", required=True),
        Option("bias", str, "zero", "zero: a zero bias (a full linear layer); none: weight only",
               choices=("zero", "none")),
    )

    def requires(self, graph: Graph) -> tuple[Value, int]:
        v = find_value(graph, self.options["value"])
        t = v.type
        if t is None or t.dtype is None or not np.issubdtype(t.dtype, np.floating):
            raise PreconditionError(f"{self.name}: value {v.name!r} is not a float tensor (type {t})")
        if t is None or t.shape is None or len(t.shape) < 2 or not isinstance(t.shape[-1], int):
            raise PreconditionError(f"{self.name}: value {v.name!r} needs rank >= 2 and a known last "
                                    f"axis (type {t})")
        if t.dtype is None or not np.issubdtype(t.dtype, np.floating):
            raise PreconditionError(f"{self.name}: value {v.name!r} is not a float tensor (type {t})")
        return v, t.shape[-1]

    def child_bytes(self, graph: Graph, plan: tuple[Value, int]) -> int:
        d, item = plan[1], plan[0].type.dtype.itemsize
        return parameter_bytes(graph) + (d * d + d * (self.options["bias"] == "zero")) * item

    def call(self, graph: Graph, ctx: PassContext, plan: tuple[Value, int]) -> None:
        v, d = plan
        base = graph.unique_node_name(f"{v.name}.linear_id")
        weight = graph.add_parameter(f"{base}.weight", np.eye(d, dtype=v.type.dtype))
        mm = graph.create_node("MatMul", [v, weight], name=base, output_types=[v.type])
        nodes: list[Node] = [mm]
        ctx.derive(weight.name, "new", note=f"identity {d}x{d} linear")
        if self.options["bias"] == "zero":
            bias = graph.add_parameter(f"{base}.bias", np.zeros(d, dtype=v.type.dtype))
            nodes.append(graph.create_node("Add", [mm.output, bias], name=f"{base}.add",
                                           output_types=[v.type]))
            ctx.derive(bias.name, "new", note="zero bias")
        ctx.note(morph=self.name, after=v.name, features=d, bias=self.options["bias"])
        insert_chain_after(graph, v, nodes, nodes[-1].output)
