"""``widen`` / ``widen-level``: Net2WiderNet on channel groups, exact.

A channel group (:func:`netmorph.structure.channels.find_channel_group`) of C channels becomes
W channels: the producers' output rows are copied by a channel mapping, the consumers' input
columns are copied and divided by the replication counts, per-channel parameters (norm
gamma/beta/mean/var, PReLU slopes, per-channel constants, depthwise / grouped conv filters)
follow the mapping, grouped convs grow by whole groups (their ``group`` attribute grows), and a
``Gemm`` after a ``Flatten`` reads every spatial position of a copied channel. The arrays come
from :mod:`netmorph.morphs.widen`; every changed parameter gets a lineage record.

``--noise STD`` adds symmetry-breaking noise (STD times each weight's standard deviation) to
the copied producer rows: the contract becomes approximate and the price is measured.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np

from ..errors import PreconditionError
from ..ir import Graph, Node, Value
from ..morphs.widen import (
    MAPPING_MODES,
    channel_mapping,
    divisors,
    group_mapping,
    widen_consumer,
    widen_per_channel,
    widen_producer,
)
from .base import Contract, Option, Pass, PassContext
from .conv_split import APPROX_ATOL, APPROX_RTOL
from .layers import find_node

PARAM_INPUTS = {
    "BatchNormalization": (1, 2, 3, 4), "InstanceNormalization": (1, 2), "LayerNormalization": (1, 2),
    "PRelu": (1,),
}


def _const_input(graph: Graph, v: Value | None) -> np.ndarray | None:
    from ..structure.channels import _const

    return _const(v)


def widened_width(old: int, factor: float | None, width: int | None, granularity: int, where: str) -> int:
    """The new channel count: ``width``, or ``ceil(old · factor)``, rounded up to whole groups."""
    if width is not None:
        new = int(width)
    else:
        new = int(math.ceil(old * float(factor if factor is not None else 2.0) - 1e-9))
    new = -(-new // granularity) * granularity
    if new <= old:
        raise PreconditionError(f"{where}: widen to {new} channels is not wider than the {old} there are")
    return new


class Widen(Pass):
    """Widen one conv's channel group (``node``) or every group of a stage (``level``)."""

    name = "widen"
    summary = "Net2WiderNet on channel groups (exact): copy channels, fold consumers by replication."
    option_specs = (
        Option("factor", float, 2.0, "new width = ceil(factor x old), rounded to whole groups"),
        Option("width", int, None, "new width (instead of --factor)"),
        Option("level", str, None, "widen every channel group produced in stage I (or 'all')"),
        Option("node", str, None, "widen the group of this conv's / linear's output"),
        Option("noise", float, 0.0, "symmetry-breaking noise on copied rows (contract: approx)"),
        Option("mapping", str, "random", "which channels the new ones copy: random or round-robin",
               MAPPING_MODES),
    )
    _level_default: str | None = "all"

    def __init__(self, **options: Any):
        super().__init__(**options)
        if self.options.get("level") is None and self.options.get("node") is None:
            self.options["level"] = self._level_default

    @property
    def contract(self) -> Contract:
        if (self.options.get("noise") or 0.0) > 0:
            return Contract.approx(APPROX_RTOL, APPROX_ATOL)
        return Contract.exact()

    def exact_variant(self) -> Pass:
        return type(self)(**{**self.options, "noise": 0.0})

    # -- what to widen ----------------------------------------------------------------------
    def _groups(self, graph: Graph, ctx: PassContext | None) -> list[Any]:
        from ..structure import ActivationView
        from ..structure.channels import PRODUCER_OPS, find_channel_group, producer_axis
        from .deepen_generic import anatomy_of, select_stages

        node, level = self.options.get("node"), self.options.get("level")
        if node is not None and level is not None and self._level_default is None:
            raise PreconditionError(f"{self.name}: give one of --node NAME or --level I|all")
        view = ActivationView(graph)
        if node is not None:
            return [find_channel_group(graph, find_node(graph, node), view)]
        if level is None:
            raise PreconditionError(f"{self.name}: say which stage to widen (--level I|all)")
        an = anatomy_of(graph, self.name)
        groups, covered, skipped = [], set(), []
        for st in select_stages(an, level, self.name):
            for u in st.units:
                for n in u.nodes:
                    if id(n) in covered or n.op_type not in PRODUCER_OPS or producer_axis(n) is None:
                        continue
                    try:
                        g = find_channel_group(graph, n, view)
                    except PreconditionError as e:
                        skipped.append(f"{n.name}: {e}")
                        covered.add(id(n))
                        continue
                    covered.update(id(p) for p, _ in g.producers)
                    groups.append(g)
        if not groups:
            why = "; ".join(skipped[:3]) or "no conv or linear produces a group there"
            raise PreconditionError(f"{self.name}: no channel group of stage {level} can be widened ({why})")
        if ctx is not None:
            for s in skipped:
                ctx.note(morph="widen", skipped=s)
        return groups

    def requires(self, graph: Graph) -> None:
        for g in self._groups(graph, None):
            self._plan(g)

    def _plan(self, g: Any) -> tuple[int, str]:
        where = f"{self.name} of the group of {g.producers[0][0].name!r}"
        new = widened_width(g.width, self.options.get("factor"), self.options.get("width"), g.granularity,
                            where)
        mode = self.options.get("mapping") or "random"
        if g.needs_equal_replication:
            if new % g.width:
                ln = g.needs_equal_replication[0].name
                raise PreconditionError(
                    f"{where}: LayerNormalization {ln!r} normalises over the channels, which stays exact "
                    f"only if every channel is copied equally often; {new} is not a multiple of {g.width}"
                )
            mode = "round-robin"
        return new, mode

    # -- surgery ------------------------------------------------------------------------------
    def call(self, graph: Graph, ctx: PassContext) -> None:
        t0 = time.perf_counter()
        groups = self._groups(graph, ctx)
        ctx.timings["recognise"] = time.perf_counter() - t0
        for g in groups:
            new, mode = self._plan(g)
            widen_group(graph, ctx, g, new, mode=mode, noise=float(self.options.get("noise") or 0.0))


class WidenLevel(Widen):
    """``widen`` of one stage (``--level I``)."""

    name = "widen-level"
    summary = "Net2WiderNet on every channel group produced in one stage (exact)."
    _level_default = None


def widen_group(graph: Graph, ctx: PassContext, g: Any, new: int, *, mode: str = "random",
                noise: float = 0.0) -> np.ndarray:
    """Widen channel group ``g`` to ``new`` channels; returns the channel mapping used."""
    old, gs = g.width, g.granularity
    if gs > 1:
        mapping = group_mapping(channel_mapping(old // gs, new // gs, mode=mode, rng=ctx.rng), gs)
    else:
        mapping = channel_mapping(old, new, mode=mode, rng=ctx.rng)
    for n, axis in g.producers:
        wi = 1 if n.op_type in ("Conv", "Gemm") else _matmul_weight_index(n)
        w = _const_input(graph, n.inputs[wi])
        nw = widen_producer(w, mapping, axis)
        if noise > 0:
            sl = [slice(None)] * nw.ndim
            sl[axis] = slice(old, None)
            nw = nw.copy()
            nw[tuple(sl)] += (noise * float(np.std(w)) * ctx.rng.standard_normal(nw[tuple(sl)].shape)
                              ).astype(nw.dtype)
        _set(graph, ctx, n, wi, nw, "gather", axis=axis, index=mapping)
        if n.op_type in ("Conv", "Gemm") and len(n.inputs) > 2 and n.inputs[2] is not None:
            b = _const_input(graph, n.inputs[2])
            if b is not None and b.ndim >= 1 and b.shape[-1] == old:
                _set(graph, ctx, n, 2, widen_producer(b, mapping, b.ndim - 1), "gather", axis=b.ndim - 1,
                     index=mapping)
    for n, axis, inner in g.consumers:
        wi = 1 if n.op_type in ("Conv", "Gemm") else _matmul_weight_index(n)
        w = _const_input(graph, n.inputs[wi])
        cols = mapping if inner == 1 else group_mapping(mapping, inner)
        _set(graph, ctx, n, wi, widen_consumer(w, cols, old * inner, axis), "gather-divide", axis=axis,
             index=cols, divide=divisors(cols, old * inner))
    members = {id(m.value): m for m in g.members}
    for n in g.through:
        _widen_through(graph, ctx, n, g, mapping, members)
    for m in g.members:
        t = m.value.type
        shape = list(t.shape)
        shape[m.axis] = new * m.inner
        m.value.type = t.with_shape(tuple(shape))
    ctx.note(morph="widen", producers=[n.name for n, _ in g.producers], old=old, new=new, mapping=mode,
             consumers=len(g.consumers), values=len(g.members))
    return mapping


def _matmul_weight_index(n: Node) -> int:
    from ..structure.channels import weight_of

    return weight_of(n)[0]


def _widen_through(graph: Graph, ctx: PassContext, n: Node, g: Any, mapping: np.ndarray,
                   members: dict[int, Any]) -> None:
    old = g.width
    op = n.op_type
    if op == "Conv":  # depthwise / grouped, by whole groups
        w = _const_input(graph, n.inputs[1])
        per = w.shape[1]
        _set(graph, ctx, n, 1, widen_producer(w, mapping, 0), "gather", axis=0, index=mapping)
        if len(n.inputs) > 2 and n.inputs[2] is not None:
            b = _const_input(graph, n.inputs[2])
            _set(graph, ctx, n, 2, widen_producer(b, mapping, 0), "gather", axis=0, index=mapping)
        n.set_attr("group", len(mapping) // per)
        return
    if op == "Reshape":  # a channel-major flatten: a constant target names the new feature count
        shape = _const_input(graph, n.inputs[1]) if len(n.inputs) > 1 else None
        if shape is not None and shape.ndim == 1 and shape.size == 2 and int(shape[1]) > 0:
            out = members[id(n.outputs[0])]
            _set(graph, ctx, n, 1, np.asarray([shape[0], len(mapping) * out.inner], dtype=shape.dtype),
                 "new")
        return
    member = next((members[id(v)] for v in n.inputs if v is not None and id(v) in members), None)
    idx = PARAM_INPUTS.get(op)
    if idx is None:
        idx = tuple(i for i, v in enumerate(n.inputs) if v is not None and id(v) not in members
                    and _const_input(graph, v) is not None)
    for i in idx:
        if i >= len(n.inputs) or n.inputs[i] is None:
            continue
        p = _const_input(graph, n.inputs[i])
        if p is None or p.ndim == 0:
            continue
        if op in ("BatchNormalization", "InstanceNormalization", "LayerNormalization"):
            ax = p.ndim - 1 if op == "LayerNormalization" else 0
        else:  # broadcast against the member value (numpy rules, aligned right)
            ax = member.axis - (len(member.value.type.shape) - p.ndim) if member is not None else -1
        if ax < 0 or ax >= p.ndim or p.shape[ax] != old * (member.inner if member is not None else 1):
            continue
        cols = mapping if member is None or member.inner == 1 else group_mapping(mapping, member.inner)
        _set(graph, ctx, n, i, widen_per_channel(p, cols, ax), "gather", axis=ax, index=cols)


def _set(graph: Graph, ctx: PassContext, n: Node, i: int, arr: np.ndarray, kind: str, **kw: Any) -> None:
    """Give input ``i`` of ``n`` the array ``arr``: in place when only ``n`` reads that parameter."""
    v = n.inputs[i]
    parent = v.name if v.const is not None else None
    if v.const is not None and len(v.uses()) == 1 and not v.is_graph_input:
        graph.set_parameter(v, arr)
        name = v.name
    else:
        nv = graph.add_parameter(f"{n.name}.in{i}", arr)
        n.set_input(i, nv)
        name = nv.name
    if parent is None:
        ctx.derive(name, "new", note="widened constant")
    else:
        ctx.derive(name, kind, parent=parent, **kw)
