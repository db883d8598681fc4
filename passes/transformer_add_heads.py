"""``add-heads``: new attention heads, read with weight zero.

Each new head gets fresh Q/K/V units (drawn like the existing weights, biases zero), appended
after the old heads in each of Q, K and V (a fused ``[Q | K | V]`` projection grows in each
block); the output projection gets zero rows for them, so the new heads change nothing until
training moves those rows. The head count in the attention's shape arithmetic (reshape
targets, split sizes, ``batch x heads`` products) follows.
"""

from __future__ import annotations

import time

import numpy as np

from ..errors import PreconditionError
from ..ir import Graph
from ..morphs.transformer import fresh_units, zero_rows
from .base import Option, Pass, PassContext
from .transformer_surgery import (
    apply_targets,
    between,
    forget_types,
    parse_layers,
    plan_targets_layers,
    rescale_shape_constants,
    set_param,
    transformer_of,
)


def attention_projections(att, what: str):
    """``(in-projections, fused)`` of an attention unit: one fused ``[Q|K|V]`` or three separate."""
    ins = att.linears[:-1]
    width = att.out_proj.in_features
    if len(ins) == 1 and ins[0].out_features == 3 * width:
        return ins, True
    if len(ins) == 3 and all(x.out_features == width for x in ins):
        return ins, False
    shapes = ", ".join(f"{x.name} ({x.in_features} -> {x.out_features})" for x in ins)
    raise PreconditionError(f"{what}: the attention ending at {att.add.name!r} has in-projections "
                            f"{shapes or 'none'}; expected one fused Q/K/V of {3 * width} outputs or "
                            f"three of {width}")


class AddHeads(Pass):
    """``--heads H`` new heads in every (or each ``--level``) attention unit, exactly."""

    name = "add-heads"
    summary = "Transformer: add attention heads (fresh Q/K/V, zero rows in the output projection)."
    option_specs = (
        Option("heads", int, 1, "heads to add to each attention"),
        Option("level", str, None, "comma list of layer indices (default: every layer)"),
    )

    def _plan(self, graph: Graph):
        st = transformer_of(graph, self.name)
        hn = int(self.options["heads"])
        if hn < 1:
            raise PreconditionError(f"{self.name}: --heads {hn}: add at least one head")
        work = []
        for i in parse_layers(self.options["level"], len(st.layers), self.name):
            att = st.layers[i].attention
            ins, fused = attention_projections(att, f"{self.name}: layer {i}")
            if att.heads in (att.head_size, att.out_proj.in_features):
                raise PreconditionError(
                    f"{self.name}: layer {i} has {att.heads} heads of size {att.head_size}: the head count "
                    "equals a size that must stay, so the shape constants holding it are ambiguous (grow "
                    "the head size first, e.g. widen-hidden --heads-mode size)")
            region: dict[int, object] = {}
            for lin in ins:
                for n in between(st.flow, lin.output, att.out_proj.node):
                    region[id(n)] = n
            nodes = [n for n in graph.nodes if id(n) in region]
            work.append((i, att, ins, fused, nodes))
        return st, hn, work

    def requires(self, graph: Graph) -> None:
        self._plan(graph)

    def call(self, graph: Graph, ctx: PassContext) -> None:
        t0 = time.perf_counter()
        st, hn, work = self._plan(graph)
        ctx.timings["recognise"] = time.perf_counter() - t0
        plans = plan_targets_layers(graph, st.flow, [
            ([n for n in nodes if n.op_type == "Reshape"], att.out_proj.in_features,
             f"{self.name}: layer {i}") for i, att, _, _, nodes in work])  # one parent probe, all layers
        targets = {id(att): p for (_, att, _, _, _), p in zip(work, plans, strict=True)}
        for _i, att, ins, fused, nodes in work:
            h, dh = att.heads, att.head_size
            width, extra = h * dh, hn * dh
            blocks = 3 if fused else 1
            for lin in ins:
                w = lin.weight.const.array
                parts = [fresh_units(p, extra, lin.out_axis, ctx.rng)
                         for p in np.split(w, blocks, lin.out_axis)]
                set_param(graph, ctx, lin.node, 1, np.concatenate(parts, lin.out_axis), kind="new",
                          hint=lin.weight.name, note=f"old units kept, {hn} fresh heads appended per block")
                if lin.bias is not None:
                    node, slot = lin.bias_site
                    b = lin.bias.const.array
                    parts = [zero_rows(p, extra, 0) for p in np.split(b, blocks)]
                    set_param(graph, ctx, node, slot, np.concatenate(parts), kind="new", hint=lin.bias.name,
                              note="old biases kept, zeros for the new heads")
            out = att.out_proj
            set_param(graph, ctx, out.node, 1, zero_rows(out.weight.const.array, extra, out.in_axis),
                      kind="new", hint=out.weight.name, note=f"zero rows read the {hn} new heads")
            apply_targets(graph, ctx, targets[id(att)], width + extra)
            rescale_shape_constants(graph, ctx, nodes, {width: width + extra, 3 * width: 3 * (width + extra),
                                                   h: h + hn}, heads=(h, h + hn))
            forget_types([*nodes, *(x.node for x in ins), *(x.bias_node for x in ins if x.bias_node)])
