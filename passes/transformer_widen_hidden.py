"""``widen-hidden``: the residual stream's width d -> n·d, HyperCloning-style, exactly.

Every stream vector ``h`` becomes ``[h, …, h]`` (``n`` copies), and so does every width inside
the layers (attention width, MLP width): a linear layer gets ``W.repeat(n, n) / n`` (its rows
and columns repeated, divided by ``n`` so each output sums its ``n`` copies of each input), its
bias repeated; embeddings, position tables, class tokens, patch convolutions and LayerNorm
gamma/beta are repeated without division (LayerNorm stays exact: ``[h, h]`` has ``h``'s mean
and variance); the classifier or unembedding only divides its repeated input rows, so the
logits do not change.

Heads (``--heads-mode``): ``count`` (default) repeats the heads (``n·H`` heads of the old size,
each copy scoring as the original); ``size`` repeats each head's units (``H`` heads of size
``n·dh``), whose dot products are ``n`` times larger: Q and K are scaled so the scores stay
(by ``n^-1/2`` each under a constant softmax scale, ``n^-1/4`` each when the scale is computed
from the head size at run time, the ``1/sqrt`` correction).
"""

from __future__ import annotations

import numpy as np

from ..errors import PreconditionError
from ..ir import Graph, Node, Value
from ..limits import MAX_FACTOR
from ..morphs.lineage import ParamLineage
from ..morphs.transformer import gather, head_index, tile_index
from ..structure.axes import AxisRoles
from ..structure.transformer import TransformerStructure, as_linear
from .base import Option, Pass, PassContext, parameter_bytes
from .transformer_add_heads import attention_projections
from .transformer_surgery import (
    _resolved,
    attention_atoms,
    forget_types,
    refuse_relaid,
    retarget_entry,
    retarget_shapes,
    role_index,
    set_param,
    times,
    transformer_of,
)


def _kind(divide: np.ndarray) -> str:
    return "gather" if np.all(divide == 1.0) else "gather-divide"


def _float_param(v: Value | None) -> Value | None:
    p = _resolved(v)
    if p is None or p.const is None or p.const.array.dtype.kind != "f" or p.const.array.size <= 1:
        return None
    return p


def _downstream_linear(flow, lin) -> bool:
    """Whether another linear layer reads (transitively) ``lin``'s output."""
    seen: set[int] = set()
    frontier = [lin.output]
    while frontier:
        v = frontier.pop()
        for n in flow.data_consumers(v):
            if id(n) in seen:
                continue
            seen.add(id(n))
            if as_linear(flow, n) is not None:
                return True
            frontier.extend(n.outputs)
    return False


def _scores_matmul(flow, att) -> Node:
    soft = next(n for n in att.branch if n.op_type == "Softmax")
    v = soft.inputs[0]
    for _ in range(16):
        p = v.producer
        if p is None:
            break
        if p.op_type == "MatMul" and len(flow.data_inputs(p)) == 2:
            return p
        ins = flow.data_inputs(p)
        if len(ins) != 1:
            break
        v = ins[0]
    raise PreconditionError(f"widen-hidden: no Q·K MatMul before the Softmax {soft.name!r}")


def _reaches(flow, start: Value, target: Node, stop: set[int]) -> bool:
    seen: set[int] = set()
    frontier = [start]
    while frontier:
        v = frontier.pop()
        for n in flow.data_consumers(v):
            if n is target:
                return True
            if id(n) in seen or id(n) in stop:
                continue
            seen.add(id(n))
            frontier.extend(n.outputs)
    return False


def _runtime_scale(graph: Graph, flow, att) -> bool:
    """Whether the attention's softmax scale is computed from a shape (``Sqrt`` of a ``Shape``)."""
    def from_shape(v, depth=0) -> bool:
        p = v.producer if v is not None else None
        if p is None or depth > 8:
            return False
        if p.op_type == "Shape":
            return True
        return any(from_shape(x, depth + 1) for x in p.inputs if x is not None)

    for n in att.branch:
        for v in n.inputs:
            if v is None or flow.is_data(v) or v.producer is None:
                continue
            if v.producer.op_type in ("Sqrt", "Div", "Reciprocal", "Pow") and from_shape(v):
                return True
    return False


class WidenHidden(Pass):
    """Hidden width d -> n·d for the whole residual stream (integer ``--factor``), exactly."""

    name = "widen-hidden"
    summary = ("Transformer: hidden width d -> n*d HyperCloning-style ([h, h]; W.repeat(n, n)/n; heads "
               "repeated or widened).")
    option_specs = (
        Option("factor", float, 2.0, "integer factor n of the hidden width", low=1.0, high=MAX_FACTOR,
               low_open=True),
        Option("heads_mode", str, "count", "grow the head count or the head size", ("count", "size")),
    )

    def _factor(self) -> int:
        f = float(self.options["factor"])
        if f != int(f) or f < 2:
            raise PreconditionError(f"{self.name}: --factor {f:g}: give an integer >= 2 (each vector h "
                                    "becomes n copies [h, ..., h]; a fractional width has no exact clone)")
        return int(f)

    def _plan(self, graph: Graph):
        n = self._factor()
        st = transformer_of(graph, self.name)
        refuse_relaid(st, self.name, "its window partitions, patch merges and per-stage widths are "
                      "not rewritten")
        mode = self.options["heads_mode"]
        if st.head is None:
            raise PreconditionError(
                f"{self.name}: the model's output {st.flow.output.name!r} is the hidden stream itself (no "
                "linear head after the last layer): widening the stream would change the output's width, "
                "so the child could not replace the parent; grow a model with its head (LM head, classifier)")
        atts = [lay.attention for lay in st.layers]
        heads = {a.heads for a in atts}
        sizes = {a.head_size for a in atts}
        if mode == "size" and any(a.rotary for a in atts):
            raise PreconditionError(
                f"{self.name}: --heads-mode size grows the head size, which the rotary position embedding "
                "fixes (its Sin/Cos tables rotate pairs of a head's units by frequencies set by the head "
                "size): use --heads-mode count (whole heads repeated, rotary exact)")
        if mode == "size" and any(a.kv_heads is not None and a.kv_heads < a.heads for a in atts):
            raise PreconditionError(f"{self.name}: --heads-mode size is not implemented for grouped-query "
                                    "attention: use --heads-mode count (heads and K/V groups repeated)")
        moving = heads if mode == "count" else sizes
        grow = {r: times(n) for r in ("d", "m", *(("head", "kv") if mode == "count" else ("unit",)))}
        roles = AxisRoles(graph, st.flow, self._sources(st, mode))  # which axis holds what, by data flow
        return n, st, mode, (grow, roles, {}), moving

    def _sources(self, st: TransformerStructure, mode: str) -> dict[int, tuple]:
        """The axes the clone repeats, where they are written: each attention in-projection's
        (blocks of) heads of units, the stream (``d``: out-projections, MLP down-projections, the
        patch conv, embedding tables) and the MLP width (``m``); other linear layers' outputs
        grow as the stream does unless nothing linear reads them (the head)."""
        flow = st.flow
        out: dict[int, tuple] = {}
        mlp: set[int] = set()
        for lay in st.layers:
            att = lay.attention
            ins, fused = attention_projections(att, f"{self.name}: layer {lay.index}")
            out.update(attention_atoms(att, ins, fused))
            mlp.update(id(x.node) for x in (lay.up, lay.gate_proj) if x is not None)
        stream = {id(x.node) for lay in st.layers for x in (lay.attention.out_proj, lay.down)}
        d = st.hidden
        for node in flow.data_nodes:
            if id(node) in out:
                continue
            lin = as_linear(flow, node)
            if lin is not None:
                if id(node) in mlp:
                    out[id(node)] = (("m", lin.out_features),)
                elif id(node) in stream or _downstream_linear(flow, lin):
                    out[id(node)] = (("d", lin.out_features),)
                continue
            w = _float_param(node.inputs[1]) if node.op_type == "Conv" and len(node.inputs) > 1 else None
            if w is not None and w.const.array.shape[0] == d:
                out[id(node)] = (("d", d),)
            t = _float_param(node.inputs[0]) if node.op_type == "Gather" else None
            if t is not None and t.const.array.ndim == 2 and t.const.array.shape[1] == d \
                    and flow.is_data(node.inputs[1]):
                out[id(node)] = (("d", d),)
        return out

    def requires(self, graph: Graph):
        n, st, mode, axes, moving = self._plan(graph)
        return n, st, mode, axes, moving, self._sites(graph, st, n, mode, axes)


    def child_bytes(self, graph: Graph, plan) -> int:
        """Every parameter the clone repeats grows ``n`` times along each repeated axis."""
        n, sites = plan[0], plan[5]
        new = sum(p.const.array.nbytes * n ** len(rules) for _, _, p, rules, _, _ in sites)
        old = {id(p): p.const.array.nbytes for _, _, p, _, _, _ in sites}
        return parameter_bytes(graph) + int(new) - sum(old.values())

    def _sites(self, graph: Graph, st: TransformerStructure, n: int, mode: str, axes: tuple
               ) -> list[tuple]:
        """``(node, slot, param, [(axis, index, divide), …], scale, lineage)`` for every parameter
        that meets a growing axis in the data flow (``axes``: the growth rules and the
        :class:`AxisRoles`); others (rotary frequencies, masks) stay."""
        flow = st.flow
        roles: dict[int, tuple] = {}  # id(linear node) -> (kind, extra)
        for lay in st.layers:
            att = lay.attention
            ins, fused = attention_projections(att, f"{self.name}: layer {lay.index}")
            h, width = att.heads, att.out_proj.in_features
            scores = _scores_matmul(flow, att)
            soft = {id(x) for x in att.branch if x.op_type == "Softmax"}
            qk_scale = n ** (-0.25 if _runtime_scale(graph, flow, att) else -0.5) if mode == "size" else 1.0
            per_head = fused and att.qkv_layout == "heads"  # [H, 3, D] (GPT-NeoX, Falcon), not [Q | K | V]
            for lin in ins:
                if fused:
                    qk = [True, True, False]
                else:
                    qk = [_reaches(flow, lin.output, scores, soft)]  # Q and K feed the scores, V does not
                roles[id(lin.node)] = ("in", dict(blocks=3 if fused else 1, heads=h, width=width, qk=qk,
                                                 scale=qk_scale, per_head=per_head))
            roles[id(att.out_proj.node)] = ("out", dict(heads=h, width=width))
        sites = []
        seen_linear: set[int] = set()
        for node in graph.nodes:
            if node.op_type == "Identity":
                continue  # its readers resolve through it
            lin = as_linear(flow, node) if id(node) in {id(x) for x in flow.data_nodes} else None
            if lin is not None:
                seen_linear.add(id(node))
                sites += self._linear_sites(flow, lin, roles.get(id(node)), n, mode)
                continue
            grow, axis_roles, _ = axes
            for slot, v in enumerate(node.inputs):
                p = _float_param(v)
                if p is None or (lin is None and _is_linear_bias(flow, node, slot)):
                    continue
                meets = axis_roles.param_axes.get((id(node), slot))
                if not meets:
                    continue  # no axis meets a growing one in the data flow: masks, rotary tables stay
                what = f"{self.name}: parameter {p.name!r} {tuple(p.const.array.shape)} read by {node.name!r}"
                rule = [(axis, index, 1.0) for axis, atoms in sorted(meets.items())
                        if (index := role_index(atoms, n, grow, what)) is not None]
                if rule:
                    sites.append((node, slot, p, rule, None, None))
        axes[2].update(_keep_tie(st, sites, n))
        return sites

    def _linear_sites(self, flow, lin, role, n: int, mode: str) -> list[tuple]:
        fin, fout = lin.in_features, lin.out_features
        final = role is None and not _downstream_linear(flow, lin)
        if role is not None and role[0] == "out" and mode == "size":
            in_index = head_index(fin, n, role[1]["heads"])
        else:
            in_index = tile_index(fin, n)
        out_index, scale = None, None
        if final:
            out_index = None
        elif role is not None and role[0] == "in":
            r = role[1]
            blocks = r["blocks"]
            if mode == "count":  # [Q, Q | K, K | V, V]; per-head [q k v] (GPT-NeoX, Falcon): [heads, heads]
                out_index = tile_index(fout, n, 1 if r["per_head"] else blocks)
            else:  # each head's units (of each block) repeated in place
                out_index = head_index(fout, n, blocks * r["heads"])
            scale = np.ones(fout * n, dtype=np.float64)
            # per head: [H', 3, D'] (H' = n·H heads or D' = n·D units); else [3, H·D·n]
            view = scale.reshape(r["heads"] * (n if mode == "count" else 1), blocks, -1) if r["per_head"] \
                else scale.reshape(1, blocks, -1)
            for b, is_qk in enumerate(r["qk"]):
                if is_qk:
                    view[:, b, :] = r["scale"]
        else:
            out_index = tile_index(fout, n)
        rules = [(lin.in_axis, in_index, float(n))]
        if out_index is not None:
            rules.append((lin.out_axis, out_index, 1.0))
        scaled = scale if scale is not None and (scale != 1).any() else None
        sites = [(*lin.weight_site, lin.weight, rules, scaled, lin.out_axis)]
        if lin.bias is not None and out_index is not None:
            node, slot = lin.bias_site
            sites.append((node, slot, lin.bias, [(0, out_index, 1.0)],
                          scale if scale is not None and (scale != 1).any() else None, 0))
        return sites

    def call(self, graph: Graph, ctx: PassContext, plan) -> None:
        n, st, mode, axes, moving, sites = plan
        flow = st.flow
        data = list(flow.data_nodes)
        for node, slot, p, rules, scale, scale_axis in sites:
            a = p.const.array
            for axis, index, divide in rules:
                a = gather(a, index, axis, divide)
            if scale is not None:
                shape = [1] * a.ndim
                shape[scale_axis] = -1
                a = (a.astype(np.float64) * scale.reshape(shape)).astype(p.const.array.dtype)
            steps = [(axis, index, np.full(len(index), divide)) for axis, index, divide in rules]
            if scale is not None:  # Q/K scaled: a divide by 1/scale on the output axis, index unchanged
                steps.append((scale_axis, np.arange(a.shape[scale_axis]), 1.0 / scale))
            (axis, index, div), rest = steps[0], steps[1:]
            then = [ParamLineage("", _kind(d), axis=ax, index=ix, divide=d) for ax, ix, d in rest]
            note = f"HyperCloning x{n}" + ("; Q/K scaled" if scale is not None else "")
            set_param(graph, ctx, node, slot, a, kind=_kind(div), parent=p, axis=axis, index=index,
                      divide=div, then=then, note=note)
        grow, roles, tie = axes
        if tie:
            ctx.note(**tie)
        heads = next(iter(moving)) if mode == "count" and len(moving) == 1 else None
        retarget_shapes(graph, ctx, roles, data, grow, self.name,
                        heads=None if heads is None else (heads, n * heads), head_ops=("Mul", "Div"))
        for lay in st.layers:  # grouped-query attention: the K/V groups repeat with the heads
            att = lay.attention
            if mode == "count" and att.kv_heads is not None and att.kv_heads < att.heads:
                what = f"{self.name}: layer {lay.index}"
                for expand, axis in att.repeat_kv:
                    retarget_entry(graph, ctx, expand, 1, axis - 1, att.kv_heads, n * att.kv_heads, what)
        forget_types(graph.nodes)


def _is_linear_bias(flow, node: Node, slot: int) -> bool:
    """Whether input ``slot`` of ``node`` is the bias of a MatMul's linear layer (handled with it)."""
    if node.op_type != "Add":
        return False
    for v in node.inputs:
        if v is not None and v.producer is not None and v.producer.op_type == "MatMul":
            lin = as_linear(flow, v.producer)
            if lin is not None and lin.bias_node is node:
                return True
    return False


_PLAIN_OPS = ("Reshape", "Identity", "Cast", "Squeeze", "Unsqueeze", "Flatten")
_NORMS = ("LayerNormalization", "RMSNormalization", "SimplifiedLayerNormalization")


def _keep_tie(st: TransformerStructure, sites: list[tuple], n: int) -> dict:
    """Tied embeddings (the unembedding is the token table, transposed): keep them tied.

    HyperCloning divides the head's repeated input rows by ``n`` (``[e, e]ᵀ / n``), which would
    untie them from the table's ``[e, e]``. Where the head reads a norm with its own scale (GPT-2's
    final LayerNorm, Llama's final RMSNorm), the ``1/n`` moves into that norm's scale (and bias)
    instead: the norm writes ``[y, y] / n``, the head is ``[e, e]ᵀ`` -- the table's clone, still
    equal to it. Elsewhere they are untied, and the note says why. Returns the report note
    (edits ``sites`` in place); ``{}`` when the embeddings are not tied.
    """
    flow = st.flow
    tokens = [e for e in st.embeddings if e["kind"] == "token"]
    head = next((lin for x in flow.data_nodes if st.head and x.name == st.head["name"]
                 and (lin := as_linear(flow, x)) is not None), None)
    if not tokens or head is None:
        return {}
    gather = next(x for x in flow.data_nodes if x.name == tokens[0]["name"])
    table = _resolved(gather.inputs[0])
    w = head.weight.const.array
    t = table.const.array
    if not (head.weight is table or (w.shape == t.T.shape and head.in_axis == 0 and np.array_equal(w, t.T))
            or (w.shape == t.shape and head.in_axis == 1 and np.array_equal(w, t))):
        return {}
    v = head.node.inputs[0]
    p = v.producer
    while p is not None and p.op_type in _PLAIN_OPS and len(flow.data_inputs(p)) == 1:
        p = flow.data_inputs(p)[0].producer
    slots = []
    if p is not None and p.op_type in _NORMS:
        slots = [k for k in (1, 2) if k < len(p.inputs) and p.inputs[k] is not None]
    elif p is not None and p.op_type == "Mul":
        slots = [k for k, x in enumerate(p.inputs) if _float_param(x) is not None and x.const is not None]
    norm = [i for i, site in enumerate(sites) if site[0] is p and site[1] in slots]
    if not slots or len(norm) != len(slots):
        why = (f"the head reads {p.op_type} {p.name!r}, not a norm with its own scale" if p is not None
               else "the head reads no norm")
        return {"tied_embeddings": "untied", "why": f"{why}: the head's repeated rows must be divided by {n} "
                f"([e, e]^T / {n}) while the table's columns are repeated undivided ([e, e])"}
    for i in norm:  # the 1/n moves into the final norm's scale and bias
        node, slot, param, rules, scale, lin_axis = sites[i]
        (axis, index, _), *rest = rules
        sites[i] = (node, slot, param, [(axis, index, float(n)), *rest], scale, lin_axis)
    for i, site in enumerate(sites):
        if site[0] is head.weight_site[0] and site[1] == head.weight_site[1]:
            node, slot, param, rules, scale, lin_axis = site
            sites[i] = (node, slot, param, [(ax, ix, 1.0) for ax, ix, _ in rules], scale, lin_axis)
    return {"tied_embeddings": "kept", "table": table.name, "head": head.name,
            "how": f"the final norm {p.name!r} scales by 1/{n}; the head is the table's clone [e, e]^T"}
