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
from ..ir import Graph, Node
from ..limits import MAX_FACTOR, MAX_WIDTH
from ..morphs.lineage import ParamLineage
from ..morphs.widen import (
    MAPPING_MODES,
    channel_mapping,
    divisors,
    group_mapping,
    widen_consumer,
    widen_per_channel,
    widen_producer,
)
from ..structure.channels import Member
from ..structure.constants import constant_array
from .base import Contract, Option, Pass, PassContext
from .conv_split import APPROX_ATOL, APPROX_RTOL
from .layers import find_node

PARAM_INPUTS = {
    "BatchNormalization": (1, 2, 3, 4), "InstanceNormalization": (1, 2), "LayerNormalization": (1, 2),
    "PRelu": (1,),
}


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
        Option("factor", float, 2.0, "new width = ceil(factor x old), rounded to whole groups", low=1.0,
               high=MAX_FACTOR, low_open=True),
        Option("width", int, None, "new width (instead of --factor)", low=1, high=MAX_WIDTH),
        Option("level", str, "all", "widen every channel group produced in stage I (or 'all')"),
        Option("node", str, None, "widen the group of this conv's / linear's output"),
        Option("noise", float, 0.0, "symmetry-breaking noise on copied rows (contract: approx)", low=0.0),
        Option("mapping", str, "random", "which channels the new ones copy: random or round-robin",
               MAPPING_MODES),
    )
    one_of = (("node", "level"), ("factor", "width"))

    @property
    def contract(self) -> Contract:
        if (self.options.get("noise") or 0.0) > 0:
            return Contract.approx(APPROX_RTOL, APPROX_ATOL)
        return Contract.exact()

    def exact_variant(self) -> Pass:
        return type(self)(**{**self.options, "noise": 0.0})

    # -- what to widen ----------------------------------------------------------------------
    def _groups(self, graph: Graph) -> tuple[list[Any], list[str]]:
        from ..structure import ActivationView
        from ..structure.channels import PieceBoundary, find_channel_group, producer_axis
        from ..structure.ops import PRODUCER_OPS, SLICING_OPS
        from .deepen_generic import anatomy_of, select_stages

        node, level = self.options.get("node"), self.options.get("level")
        view = ActivationView(graph)
        if node is not None:
            return [find_channel_group(graph, find_node(graph, node), view)], []
        if level is None:
            raise PreconditionError(f"{self.name}: say which stage to widen (--level I|all)")
        an = anatomy_of(graph, self.name)
        groups, covered, skipped = [], set(), []
        for st in select_stages(an, level, self.name):
            for u in st.units:
                for n in u.nodes:
                    starts = [0] if n.op_type in PRODUCER_OPS and producer_axis(n) is not None else \
                        [k for k, o in enumerate(n.outputs) if o.uses()] if n.op_type in SLICING_OPS else []
                    for k in starts:
                        if (id(n), k) in covered:
                            continue
                        try:
                            g = find_channel_group(graph, n, view, output=k)
                        except PieceBoundary:
                            covered.add((id(n), k))  # its pieces are groups of their own
                            continue
                        except PreconditionError as e:
                            if n.op_type not in SLICING_OPS:  # a piece that is no group: nothing to say
                                skipped.append(f"{n.name}: {e}")
                            covered.add((id(n), k))
                            continue
                        covered.update((id(p), 0) for p, _ in g.producers)
                        covered.update((id(s), k) for s, k in _pieces_of(g))
                        groups.append(g)
        if not groups:
            why = "; ".join(skipped[:3]) or "no conv or linear produces a group there"
            raise PreconditionError(f"{self.name}: no channel group of stage {level} can be widened ({why})")
        return groups, skipped

    def requires(self, graph: Graph) -> tuple[list[Any], list[str]]:
        groups, skipped = self._groups(graph)
        for g in groups:
            self._plan(g)
        return groups, skipped

    def child_bytes(self, graph: Graph, plan: tuple[list[Any], list[str]]) -> int:
        """Every parameter a widened group's nodes read grows by new / old (twice for a conv between
        two widened groups)."""
        return grown_bytes(graph, [(g, self._plan(g)[0]) for g in plan[0]])

    def _plan(self, g: Any) -> tuple[int, str]:
        where = f"{self.name} of the group of {g.producers[0][0].name!r}"
        new = widened_width(g.width, self.options.get("factor"), self.options.get("width"), g.granularity,
                            where)
        return group_plan(g, new, self.options.get("mapping") or "random", where)

    # -- surgery ------------------------------------------------------------------------------
    def call(self, graph: Graph, ctx: PassContext, plan: tuple[list[Any], list[str]]) -> None:
        groups, skipped = plan
        for s in skipped:
            ctx.note(morph="widen", skipped=s)
        from ..structure import ActivationView
        from ..structure.channels import find_channel_group

        view = ActivationView(graph)
        done: set = set()
        for i, g in enumerate(groups):
            if g.producers and id(g.producers[0][0]) in done:
                continue  # widened already, after a grouped conv of an earlier group
            if i:  # an earlier group may have changed the widths around this one (a shared Concat)
                t1 = time.perf_counter()
                node, k = g.origin
                g = find_channel_group(graph, node, view, output=k)
                ctx.timings["recognise"] = ctx.timings.get("recognise", 0.0) + time.perf_counter() - t1
            new, mode = self._plan(g)
            widen_group(graph, ctx, g, new, mode=mode, noise=float(self.options.get("noise") or 0.0),
                        done=done, view=view)


class WidenLevel(Widen):
    """``widen`` of one stage (``--level I``)."""

    name = "widen-level"
    summary = "Net2WiderNet on every channel group produced in one stage (exact)."
    option_specs = tuple(o.replace(default=None, required=True) if o.name == "level" else o
                         for o in Widen.option_specs if o.name != "node")
    one_of = (("factor", "width"),)


def group_plan(g: Any, new: int, mode: str, where: str) -> tuple[int, str]:
    """``(new width, mapping mode)`` for group ``g``: a LayerNorm over the channels stays exact only
    under equal replication (an integer factor, round-robin)."""
    if g.needs_equal_replication:
        if new % g.width:
            ln = g.needs_equal_replication[0].name
            raise PreconditionError(
                f"{where}: LayerNormalization {ln!r} normalises over the channels, which stays exact "
                f"only if every channel is copied equally often; {new} is not a multiple of {g.width}"
            )
        mode = "round-robin"
    return new, mode


def grown_bytes(graph: Graph, plan: list[tuple[Any, int]]) -> int:
    """The parameter bytes once each ``(group, new width)`` of ``plan`` is widened: every parameter
    a group's nodes read grows by new / old on that axis (both axes for a weight between two groups)."""
    out: dict[int, float] = {}  # per parameter: the largest ratio of its output (or channel) axis
    inp: dict[int, float] = {}  # and of its input axis (slices of one Concat count once)
    for g, new in plan:
        ratio = new / g.width
        for role, nodes in ((out, [n for n, _ in g.producers] + list(g.through) + list(g.boundaries)),
                            (inp, [n for n, _, _ in g.consumers])):
            for p in {id(p): p for n in nodes for p in _params_of(n)}.values():
                role[id(p)] = max(role.get(id(p), 1.0), ratio)
    return int(sum(v.const.array.nbytes * out.get(id(v), 1.0) * inp.get(id(v), 1.0)
                   for v in graph.parameters if v.const is not None))


def _params_of(n: Node) -> list[Any]:
    """The constant inputs of ``n`` (through an ``Identity`` or ``Transpose`` of a parameter)."""
    out = []
    for v in n.inputs:
        if v is not None and v.const is None and v.producer is not None and \
                v.producer.op_type in ("Identity", "Transpose") and v.producer.inputs:
            v = v.producer.inputs[0]
        if v is not None and v.const is not None:
            out.append(v)
    return out


def _pieces_of(g: Any) -> list[tuple[Node, int]]:
    """``(split, output)`` of every Split / Slice output of group ``g`` (found from one of them, the
    group is the same)."""
    ids = {id(m.value) for m in g.members}
    return [(n, k) for n in g.through if n.op_type in ("Split", "Slice")
            for k, o in enumerate(n.outputs) if id(o) in ids]


def widen_group(graph: Graph, ctx: PassContext, g: Any, new: int, *, mode: str = "random",
                noise: float = 0.0, mapping: np.ndarray | None = None, done: set | None = None,
                view: Any = None) -> np.ndarray:
    """Widen channel group ``g`` to ``new`` channels; returns the channel mapping used.

    ``mapping``: the one to use (a group after a grouped conv follows the group before it);
    ``done`` collects ``id`` of every producer widened (this group's and the groups after its
    grouped-conv boundaries), so a caller does not widen them twice.
    """
    old, gs = g.width, g.granularity
    if mapping is None:
        if gs > 1:
            mapping = group_mapping(channel_mapping(old // gs, new // gs, mode=mode, rng=ctx.rng), gs)
        else:
            mapping = channel_mapping(old, new, mode=mode, rng=ctx.rng)
    elif g.needs_equal_replication and len(set(np.bincount(mapping, minlength=old).tolist())) > 1:
        ln = g.needs_equal_replication[0].name
        raise PreconditionError(
            f"LayerNormalization {ln!r}: the mapping it must follow copies channels unequally"
        )
    elif gs > 1 and not _block_structured(mapping, gs):
        raise PreconditionError(
            f"the group of {g.producers[0][0].name!r} grows by whole groups of {gs} channels, but the "
            "mapping it must follow copies single channels"
        )
    done = set() if done is None else done
    done.update(id(n) for n, _ in g.producers)
    done.update(id(m.value) for m in g.members)
    unsliced = Member(None, 0)  # the group is the whole channel axis
    for n, axis in g.producers:
        if n.op_type == "Conv" and int(n.attr("group", 1)) > 1:
            continue  # a grouped-conv boundary: already grown with the group before it
        m = g.slices.get(id(n), unsliced)
        rows = m.full_index(mapping, old)
        wi = 1 if n.op_type in ("Conv", "Gemm") else _matmul_weight_index(n)
        w = constant_array(n.inputs[wi])
        nw = widen_producer(w, rows, axis)
        if noise > 0:
            sl = [slice(None)] * nw.ndim
            sl[axis] = slice(m.offset + old, m.offset + new)
            nw = nw.copy()
            nw[tuple(sl)] += (noise * float(np.std(w)) * ctx.rng.standard_normal(nw[tuple(sl)].shape)
                              ).astype(nw.dtype)
        _set(graph, ctx, n, wi, nw, "gather", axis=axis, index=rows)
        if n.op_type in ("Conv", "Gemm") and len(n.inputs) > 2 and n.inputs[2] is not None:
            b = constant_array(n.inputs[2])
            if b is not None and b.ndim >= 1 and b.shape[-1] == m.channels(old):
                _set(graph, ctx, n, 2, widen_producer(b, rows, b.ndim - 1), "gather", axis=b.ndim - 1,
                     index=rows)
    for n, axis, inner in g.consumers:
        m = g.slices.get(id(n), unsliced)
        wi = 1 if n.op_type in ("Conv", "Gemm") else _matmul_weight_index(n)
        w = constant_array(n.inputs[wi])
        full = m.full_index(mapping, old)
        cols = full if inner == 1 else group_mapping(full, inner)
        span = m.channels(old) * inner
        _set(graph, ctx, n, wi, widen_consumer(w, cols, span, axis), "gather-divide", axis=axis,
             index=cols, divide=divisors(cols, span))
    for n in g.through:
        _widen_through(graph, ctx, n, g, mapping, g.slices.get(id(n), unsliced))
    for m in g.members:
        t = m.value.type
        shape = list(t.shape)
        shape[m.axis] = m.widened(old, new) * m.inner
        m.value.type = t.with_shape(tuple(shape))
    ctx.note(morph="widen", producers=[n.name for n, _ in g.producers], old=old, new=len(mapping),
             mapping=mode, consumers=len(g.consumers), values=len(g.members))
    for b in g.boundaries:
        _widen_boundary(graph, ctx, b, mapping, done, view)
    for c in g.sources:
        _widen_source(graph, ctx, c, mapping, done, view)
    return mapping


def _block_structured(mapping: np.ndarray, size: int) -> bool:
    """Whether ``mapping`` copies whole blocks of ``size`` channels."""
    m = np.asarray(mapping, dtype=np.int64).reshape(-1, size)
    return bool((m[:, :1] % size == 0).all() and (m - m[:, :1] == np.arange(size)).all())


def _widen_source(graph: Graph, ctx: PassContext, conv: Node, mapping: np.ndarray, done: set,
                  view: Any) -> None:
    """Grow a grouped conv that writes a widened group (per group: ``a`` inputs, ``b`` outputs) by
    whole groups, then its input group with the mapping that implies."""
    from ..structure import ActivationView
    from ..structure.channels import group_of_value

    if id(conv) in done:
        return
    done.add(id(conv))
    w = constant_array(conv.inputs[1])
    a, groups = w.shape[1], int(conv.attr("group", 1))
    b = w.shape[0] // groups
    by_group = np.asarray(mapping, dtype=np.int64).reshape(-1, b)[:, 0] // b
    view = view or ActivationView(graph)
    src = conv.inputs[0]
    before = None if id(src) in done else group_of_value(view, src)  # before the conv changes
    _set(graph, ctx, conv, 1, widen_producer(w, mapping, 0), "gather", axis=0, index=mapping)
    if len(conv.inputs) > 2 and conv.inputs[2] is not None:
        bias = constant_array(conv.inputs[2])
        _set(graph, ctx, conv, 2, widen_producer(bias, mapping, 0), "gather", axis=0, index=mapping)
    conv.set_attr("group", len(by_group))
    if before is not None:
        cols = group_mapping(by_group, a)
        widen_group(graph, ctx, before, len(cols), mapping=cols, done=done, view=view)


def _widen_boundary(graph: Graph, ctx: PassContext, conv: Node, mapping: np.ndarray, done: set,
                    view: Any) -> None:
    """Grow a grouped conv (per group: ``a`` inputs, ``b`` outputs) by whole groups, then its output
    group with the mapping that implies."""
    from ..structure import ActivationView
    from ..structure.channels import find_channel_group

    if id(conv) in done:
        return  # grown already, as the source of the group after it
    done.add(id(conv))
    w = constant_array(conv.inputs[1])
    a, groups = w.shape[1], int(conv.attr("group", 1))
    b = w.shape[0] // groups
    by_group = np.asarray(mapping, dtype=np.int64).reshape(-1, a)[:, 0] // a
    rows = group_mapping(by_group, b)
    view = view or ActivationView(graph)
    after = find_channel_group(graph, conv, view, grouped=True)  # before the conv changes
    _set(graph, ctx, conv, 1, widen_producer(w, rows, 0), "gather", axis=0, index=rows)
    if len(conv.inputs) > 2 and conv.inputs[2] is not None:
        bias = constant_array(conv.inputs[2])
        _set(graph, ctx, conv, 2, widen_producer(bias, rows, 0), "gather", axis=0, index=rows)
    conv.set_attr("group", len(by_group))
    widen_group(graph, ctx, after, len(rows), mapping=rows, done=done, view=view)


def _matmul_weight_index(n: Node) -> int:
    from ..structure.channels import weight_of

    return weight_of(n)[0]


def _widen_through(graph: Graph, ctx: PassContext, n: Node, g: Any, mapping: np.ndarray, member: Any) -> None:
    old = g.width
    op = n.op_type
    if op == "Concat":
        return
    if op in ("Split", "Slice"):
        from ..structure.channels import sliced_axes

        src = n.inputs[0]
        if member.axis in (sliced_axes(n, len(src.type.shape)) or []):  # not pieces of another axis
            _widen_pieces(graph, ctx, n, member, old, len(mapping))
        return
    if op == "Conv":  # depthwise / grouped, by whole groups
        w = constant_array(n.inputs[1])
        per = w.shape[1]
        _set(graph, ctx, n, 1, widen_producer(w, mapping, 0), "gather", axis=0, index=mapping)
        if len(n.inputs) > 2 and n.inputs[2] is not None:
            b = constant_array(n.inputs[2])
            _set(graph, ctx, n, 2, widen_producer(b, mapping, 0), "gather", axis=0, index=mapping)
        n.set_attr("group", len(mapping) // per)
        return
    if op == "Resize" and len(n.inputs) > 3 and n.inputs[3] is not None:  # sizes name the channel count
        sizes = constant_array(n.inputs[3], transpose=False).copy()
        sizes[member.axis] = member.widened(old, len(mapping))
        _set(graph, ctx, n, 3, sizes, "new")
        return
    if op in ("Resize", "Upsample"):
        return
    if op == "Reshape":  # its target names the channel (or flattened feature) count of its output
        from .transformer_surgery import retarget_reshape

        out = next((m for m in g.members if m.value is n.outputs[0]), None)
        if out is not None and n not in g.sized_at_run_time:
            rank = len(out.value.type.shape)
            before, after = out.channels(old) * out.inner, out.widened(old, len(mapping)) * out.inner
            retarget_reshape(graph, ctx, n, before, after,
                             f"widen of the group of {g.producers[0][0].name!r}", out.axis - rank)
        return
    values = {id(m.value) for m in g.members}
    idx = PARAM_INPUTS.get(op)
    if idx is None:
        idx = tuple(i for i, v in enumerate(n.inputs) if v is not None and id(v) not in values
                    and constant_array(v) is not None)
    for i in idx:
        if i >= len(n.inputs) or n.inputs[i] is None:
            continue
        p = constant_array(n.inputs[i])
        if p is None or p.ndim == 0:
            continue
        if op in ("BatchNormalization", "InstanceNormalization", "LayerNormalization"):
            ax = p.ndim - 1 if op == "LayerNormalization" else 0
        else:  # broadcast against the member value (numpy rules, aligned right)
            ax = member.axis - (len(member.value.type.shape) - p.ndim) if member.value is not None else -1
        span = member.channels(old) * member.inner
        if ax < 0 or ax >= p.ndim or p.shape[ax] != span:
            continue
        full = member.full_index(mapping, old)
        cols = full if member.inner == 1 else group_mapping(full, member.inner)
        _set(graph, ctx, n, i, widen_per_channel(p, cols, ax), "gather", axis=ax, index=cols)


def _widen_pieces(graph: Graph, ctx: PassContext, n: Node, member: Any, old: int, new: int) -> None:
    """A Split's sizes / a Slice's bounds over a channel axis in which the group grew."""
    occ = member.offsets if member.total is not None else (0,)

    def moved(x: int) -> int:  # a channel position after widening: every copy of the group before it grew
        return x + sum(new - old for o in occ if o + old <= x)

    if n.op_type == "Split":
        sizes = n.attr("split")
        from_input = sizes is None and len(n.inputs) > 1 and n.inputs[1] is not None
        if from_input:
            sizes = constant_array(n.inputs[1]).reshape(-1).tolist()
        if sizes is None:  # equal pieces: they stay equal only if each grew the same
            total, k = member.channels(old), len(n.outputs)
            sizes = [total // k] * k
        at, grown = 0, []
        for z in sizes:
            grown.append(moved(at + int(z)) - moved(at) if at + int(z) > at else 0)
            at += int(z)
        if from_input:
            dt = constant_array(n.inputs[1]).dtype
            _set(graph, ctx, n, 1, np.asarray(grown, dtype=dt), "new")
        elif n.attr("split") is not None:
            n.set_attr("split", grown)
        elif len(set(grown)) > 1 and int(graph.opset_imports.get("", 13)) < 13:
            n.set_attr("split", grown)
        elif len(set(grown)) > 1:  # num_outputs (opset 18) or implicit equal pieces: say the sizes
            sv = graph.add_parameter(f"{n.name}.split", np.asarray(grown, dtype=np.int64))
            ctx.derive(sv.name, "new", note="widened constant")
            if len(n.inputs) > 1:
                n.set_input(1, sv)
            else:
                n.append_input(sv)
            n.attributes.pop("num_outputs", None)
        return
    total = member.channels(old)
    for i in (1, 2):
        arr = constant_array(n.inputs[i])
        x = int(arr.reshape(-1)[0])
        x = x + total if x < 0 else x
        if 0 <= x <= total:
            _set(graph, ctx, n, i, np.asarray([moved(x)], dtype=arr.dtype).reshape(arr.shape), "new")


def _set(graph: Graph, ctx: PassContext, n: Node, i: int, arr: np.ndarray, kind: str, **kw: Any) -> None:
    """Give input ``i`` of ``n`` the array ``arr``: in place when only ``n`` reads that parameter.

    A weight that is a ``Transpose`` of a parameter is set through it (the parameter gets the
    inverse transpose; the lineage axis is the parameter's)."""
    v = n.inputs[i]
    t = v.producer
    if v.const is None and t is not None and t.op_type == "Transpose" and len(v.uses()) == 1 and \
            t.inputs[0] is not None and t.inputs[0].const is not None:
        perm = list(t.attr("perm") or range(arr.ndim)[::-1])
        if "axis" in kw:
            kw = {**kw, "axis": perm[kw["axis"]]}
        _set(graph, ctx, t, 0, np.transpose(arr, np.argsort(perm)), kind, **kw)
        t.outputs[0].type = t.outputs[0].type.with_shape(arr.shape) if t.outputs[0].type else None
        return
    parent = v.name if v.const is not None else None
    if v.const is not None and len(v.uses()) == 1 and not v.is_graph_input:
        graph.set_parameter(v, arr)
        name = v.name
    else:
        nv = graph.add_parameter(f"{n.name}.in{i}", arr)
        n.set_input(i, nv)
        name = nv.name
    prev = ctx.lineage.records.get(name)
    if prev is not None and prev.kind in ("gather", "gather-divide") and kind in ("gather", "gather-divide"):
        prev.then.append(ParamLineage(name, kind, None, **kw))  # a second axis of the same weight
    elif parent is None:
        ctx.derive(name, "new", note="widened constant")
    elif prev is not None and prev.kind == "new":
        pass  # created by this pass: stays new
    else:
        ctx.derive(name, kind, parent=parent, **kw)
