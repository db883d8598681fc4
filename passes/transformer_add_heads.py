"""``add-heads``: new attention heads, read with weight zero.

Each new head gets fresh Q/K/V units (drawn like the existing weights, biases zero), appended
after the old heads in each of Q, K and V (a fused ``[Q | K | V]`` projection grows in each
block; a per-head fused ``[q k v]`` one, GPT-NeoX / Falcon, gets whole new heads at its end);
the output projection gets zero rows for them, so the new heads change nothing until training
moves those rows. The head count in the attention's shape arithmetic (reshape
targets, split sizes, ``batch x heads`` products) follows.
"""

from __future__ import annotations

import numpy as np

from ..errors import PreconditionError
from ..ir import Graph
from ..limits import MAX_HEADS
from ..morphs.transformer import fresh_units, zero_rows
from ..structure.axes import AxisRoles
from .base import Option, Pass, PassContext, parameter_bytes
from .transformer_surgery import (
    apply_targets,
    attention_atoms,
    between,
    forget_types,
    parse_layers,
    plan_targets_layers,
    plus,
    refuse_relaid,
    retarget_entry,
    retarget_shapes,
    set_param,
    transformer_of,
)


def attention_projections(att, what: str):
    """``(in-projections, fused)`` of an attention unit: one fused Q/K/V (``[Q|K|V]`` blocks, or
    each head's ``[q k v]`` together: ``att.qkv_layout == "heads"``, GPT-NeoX / Falcon) or three
    separate."""
    ins = att.linears[:-1]
    width = att.out_proj.in_features
    if len(ins) == 1 and ins[0].out_features == 3 * width:
        return ins, True
    if len(ins) == 3 and all(x.out_features == width for x in ins):
        return ins, False
    if len(ins) == 3 and att.kv_heads is not None and att.kv_heads < att.heads:  # grouped-query attention
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
        Option("heads", int, 1, "heads to add to each attention", low=1, high=MAX_HEADS),
        Option("level", str, None, "comma list of layer indices (default: every layer)"),
    )

    def _plan(self, graph: Graph):
        st = transformer_of(graph, self.name)
        refuse_relaid(st, self.name, "its window partitions and per-head relative-position tables are "
                      "not rewritten")
        hn = int(self.options["heads"])
        if hn < 1:
            raise PreconditionError(f"{self.name}: --heads {hn}: add at least one head")
        work = []
        for i in parse_layers(self.options["level"], len(st.layers), self.name):
            att = st.layers[i].attention
            ins, fused = attention_projections(att, f"{self.name}: layer {i}")
            groups = att.kv_heads if att.kv_heads is not None and att.kv_heads < att.heads else None
            if groups is not None:
                if hn % groups:
                    raise PreconditionError(
                        f"{self.name}: layer {i} has grouped-query attention ({att.heads} heads in {groups} "
                        f"K/V groups): add a multiple of {groups} heads (the same number to each group)")
                if len(att.repeat_kv) == 0:
                    raise PreconditionError(f"{self.name}: layer {i}: no K/V head repeat (Unsqueeze + "
                                            f"Expand) found for its {groups} K/V groups")
            region: dict[int, object] = {}
            for lin in ins:
                for n in between(st.flow, lin.output, att.out_proj.node):
                    region[id(n)] = n
            nodes = [n for n in graph.nodes if id(n) in region]
            work.append((i, att, ins, fused, nodes))
        sources: dict[int, tuple] = {}
        for _, att, ins, fused, _ in work:
            sources.update(attention_atoms(att, ins, fused))
        roles = AxisRoles(graph, st.flow, sources)  # which axis holds the heads, from the data flow
        return st, hn, work, roles

    def requires(self, graph: Graph):
        return self._plan(graph)

    def child_bytes(self, graph: Graph, plan) -> int:
        """Each attention's Q/K/V and output projection grow by ``heads / H``."""
        _, hn, work, _ = plan
        extra = sum(p.weight.const.array.nbytes * hn / att.heads
                    for _, att, ins, _, _ in work for p in (*ins, att.out_proj))
        return parameter_bytes(graph) + int(extra)

    def call(self, graph: Graph, ctx: PassContext, plan) -> None:
        st, hn, work, roles = plan
        plans = plan_targets_layers(graph, st.flow, [
            ([n for n in nodes if n.op_type == "Reshape"], att.out_proj.in_features,
             f"{self.name}: layer {i}") for i, att, _, _, nodes in work])  # one parent probe, all layers
        targets = {id(att): p for (_, att, _, _, _), p in zip(work, plans, strict=True)}
        for i, att, ins, fused, nodes in work:
            h, dh = att.heads, att.head_size
            width, extra = h * dh, hn * dh
            per_head = fused and att.qkv_layout == "heads"  # [H, 3, D]: whole new heads at the end
            blocks = 3 if fused and not per_head else 1
            groups = att.kv_heads if att.kv_heads is not None and att.kv_heads < h else None
            if groups is not None:  # GQA: new query heads join each K/V group; K and V stay
                self._grouped(graph, ctx, i, att, ins, groups, hn)
                retarget_shapes(graph, ctx, roles, nodes, {"head": plus(hn), "rep": plus(hn // groups)},
                                f"{self.name}: layer {i}", heads=(h, h + hn))
                apply_targets(graph, ctx, targets[id(att)], width + extra)
                forget_types([*nodes, *(x.node for x in ins), *(x.bias_node for x in ins if x.bias_node)])
                continue
            for lin in ins:
                w = lin.weight.const.array
                grow = 3 * extra if per_head else extra
                parts = [fresh_units(p, grow, lin.out_axis, ctx.rng)
                         for p in np.split(w, blocks, lin.out_axis)]
                set_param(graph, ctx, *lin.weight_site, np.concatenate(parts, lin.out_axis), kind="new",
                          hint=lin.weight.name, note=f"old units kept, {hn} fresh heads appended per block")
                if lin.bias is not None:
                    node, slot = lin.bias_site
                    b = lin.bias.const.array
                    parts = [zero_rows(p, grow, 0) for p in np.split(b, blocks)]
                    set_param(graph, ctx, node, slot, np.concatenate(parts), kind="new", hint=lin.bias.name,
                              note="old biases kept, zeros for the new heads")
            out = att.out_proj
            set_param(graph, ctx, out.node, 1, zero_rows(out.weight.const.array, extra, out.in_axis),
                      kind="new", hint=out.weight.name, note=f"zero rows read the {hn} new heads")
            retarget_shapes(graph, ctx, roles, nodes, {"head": plus(hn)}, f"{self.name}: layer {i}",
                            heads=(h, h + hn))
            apply_targets(graph, ctx, targets[id(att)], width + extra)
            forget_types([*nodes, *(x.node for x in ins), *(x.bias_node for x in ins if x.bias_node)])

    def _grouped(self, graph: Graph, ctx: PassContext, i: int, att, ins, groups: int, hn: int) -> None:
        """Grouped-query attention: ``hn / groups`` fresh query heads appended inside each K/V group's
        block of Q (query head ``j`` reads group ``j // r``, so a group's heads stay contiguous),
        zero rows at the same places in the output projection, and the group size ``r`` in each
        K/V repeat (``Expand`` to ``[N, G, r, T, D]``) grown by position. Rotary-safe: the head
        size stays and the Sin/Cos tables broadcast over heads."""
        dh, width = att.head_size, att.out_proj.in_features
        per, r = hn // groups, att.heads // groups
        q = next(x for x in ins if x.out_features == width)
        w = q.weight.const.array
        parts = [fresh_units(p, per * dh, q.out_axis, ctx.rng) for p in np.split(w, groups, q.out_axis)]
        set_param(graph, ctx, q.node, 1, np.concatenate(parts, q.out_axis), kind="new", hint=q.weight.name,
                  note=f"old query heads kept, {per} fresh heads appended to each of {groups} K/V groups")
        if q.bias is not None:
            node, slot = q.bias_site
            parts = [zero_rows(p, per * dh, 0) for p in np.split(q.bias.const.array, groups)]
            set_param(graph, ctx, node, slot, np.concatenate(parts), kind="new", hint=q.bias.name,
                      note="old biases kept, zeros for the new heads")
        out = att.out_proj
        blocks = np.split(out.weight.const.array, groups, out.in_axis)
        parts = [zero_rows(p, per * dh, out.in_axis) for p in blocks]
        set_param(graph, ctx, out.node, 1, np.concatenate(parts, out.in_axis), kind="new",
                  hint=out.weight.name, note=f"zero rows read the {hn} new heads")
        for expand, axis in att.repeat_kv:
            retarget_entry(graph, ctx, expand, 1, axis, r, r + per, f"{self.name}: layer {i}")
