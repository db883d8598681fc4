"""``transformer-deepen`` (and ``deepen`` on a transformer): insert identity layers.

Each new layer is a copy of the layer before it. Pre-LN (``x + f(LN(x))``) and parallel
(``x + attn(LN(x)) + mlp(LN'(x))``: GPT-NeoX, Phi, Falcon, GPT-J; one residual unit, two terms):
the copy's attention out-projection and MLP down-projection (weights and biases) are zero, so
its residual branches add zero (LLaMA Pro's block expansion). Post-LN (``LN(x + f(x))``): a
zero branch still normalises, so the copy is gated, ``h + g ⊙ (layer(h) − h)`` with a trainable
per-unit ``g = 0`` (MSG's masked growth), which is the identity and lets training open the gate.
"""

from __future__ import annotations

from ..errors import PreconditionError, StructureError
from ..ir import Graph
from ..limits import MAX_LAYERS
from ..morphs.transformer import zero_gate, zero_like
from ..structure.transformer import TransformerStructure
from .base import Option, Pass, PassContext
from .transformer_surgery import clone_layer, parse_layers, refuse_relaid, rewire, set_param, transformer_of


class TransformerDeepen(Pass):
    """Insert an identity layer after every layer (L -> 2L), after ``--after`` layers, or ``--layers K``."""

    name = "transformer-deepen"
    summary = ("Transformer: insert identity layers (pre-LN, parallel: copies with zero out-projections; "
               "post-LN: gated copies h + g*(layer(h) - h), g = 0).")
    option_specs = (
        Option("after", str, None, "comma list of layer indices to insert after (default: every layer)"),
        Option("layers", int, None, "insert this many layers, after evenly spaced layers", low=1,
               high=MAX_LAYERS),
    )
    one_of = ("after", "layers")

    def _targets(self, count: int) -> list[int]:
        if self.options["layers"] is not None:
            k = int(self.options["layers"])
            if not 1 <= k <= count:
                raise PreconditionError(f"{self.name}: --layers {k}: give 1..{count} (one per existing layer "
                                        "at most; repeat the pass to grow further)")
            return sorted({(i * count) // k + (count // k) - 1 for i in range(k)})
        return parse_layers(self.options["after"], count, self.name)

    def requires(self, graph: Graph) -> tuple[TransformerStructure, list[int]]:
        return self.plan_of(transformer_of(graph, self.name))

    def plan_of(self, st: TransformerStructure) -> tuple[TransformerStructure, list[int]]:
        """The plan on a recognised transformer: ``(structure, layers to insert after)``."""
        refuse_relaid(st, self.name, "a copy would read the merged layout (`deepen` copies a residual "
                      "unit instead)")
        return st, self._targets(len(st.layers))

    def call(self, graph: Graph, ctx: PassContext, plan: tuple[TransformerStructure, list[int]]) -> None:
        st, targets = plan
        for k, i in enumerate(reversed(targets)):  # from the end: earlier layers' objects stay valid
            layer = st.layers[i]
            suffix = f"_grown{len(st.layers) + k}"
            old_uses = list(layer.output.uses())
            nmap, out = clone_layer(graph, ctx, st, layer, suffix)
            if st.norm == "pre":  # pre-LN or parallel: both output projections of the copy are zero
                for unit in (layer.attention, layer.mlp):
                    lin = unit.out_proj
                    node = nmap[id(lin.node)]
                    w = node.inputs[1]
                    set_param(graph, ctx, node, 1, zero_like(w.const.array), kind="new", hint=w.name)
                    if lin.bias is not None:
                        site, bi = lin.bias_site
                        bnode = nmap[id(site)]
                        b = bnode.inputs[bi]
                        set_param(graph, ctx, bnode, bi, zero_like(b.const.array), kind="new", hint=b.name)
                rewire(graph, old_uses, out, layer.output)
                continue
            h = layer.output
            gate = graph.add_parameter(f"{layer.mlp.add.name}{suffix}_gate",
                                       zero_gate(st.hidden, h.type.dtype if h.type and h.type.elem_type
                                                 else "float32"))
            ctx.derive(gate.name, "new", note="post-LN gate g of h + g*(layer(h) - h)")
            sub = graph.create_node("Sub", [out, h], name=f"{layer.mlp.add.name}{suffix}_delta",
                                    output_types=[h.type])
            mul = graph.create_node("Mul", [gate, sub.outputs[0]], name=f"{layer.mlp.add.name}{suffix}_gated",
                                    output_types=[h.type])
            add = graph.create_node("Add", [h, mul.outputs[0]], name=f"{layer.mlp.add.name}{suffix}_out",
                                    output_types=[h.type])
            graph.insert_after(out.producer, sub, mul, add)
            rewire(graph, old_uses, add.outputs[0], h)

    def ensures(self, graph: Graph, plan: tuple[TransformerStructure, list[int]]) -> None:
        expected = len(plan[0].layers) + len(plan[1])
        st = transformer_of(graph, self.name)
        if len(st.layers) != expected:
            raise StructureError(f"{self.name}: after deepening the model has {len(st.layers)} layers, "
                                 f"expected {expected}")
