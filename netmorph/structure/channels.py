"""Channel groups: the values whose channel axis must grow together, with producers and consumers.

Starting from one producer (a conv of group 1, a ``Gemm``, a ``MatMul`` with a constant weight),
the group is closed over every op that keeps channels aligned:

- *through* ops, whose output channel ``c`` depends only on input channel ``c``: activations
  (``Relu``, ``Clip``, ``HardSwish``, ``Sigmoid``, ``Erf`` …), per-channel norms
  (``BatchNormalization``, ``InstanceNormalization``; ``LayerNormalization`` over the channel
  axis, exact only under equal replication), ``PRelu``, pooling, spatial reductions,
  ``Transpose`` (the axis moves), ``Flatten`` (channel-major: each channel becomes ``inner``
  columns), arithmetic with constants, and depthwise / grouped convs with as many input as
  output channels per group (widened by whole groups);
- *joins* (``Add``, ``Mul``, ``Sub``, ``Div`` of two activations): every operand with the full
  channel count joins the group (a residual stream, an SE gate ``x·s``);
- *producers*: the convs / linears whose output rows form the group; *consumers*: the convs /
  linears that read it (their input columns are folded by Net2Wider).

Anything else that reads a member (``Concat``, ``Split``, ``Reshape`` to another layout, a graph
output) stops the group with a sentence naming the node: widening would not be exact there.

The finder knows nothing about the arithmetic (``netmorph.morphs.widen``); it is shared by CNN
``widen`` and a transformer's hidden-width growth (channel axis last).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import PreconditionError
from ..ir import Graph, Node, Value
from .activations import ActivationView, ensure_types
from .constants import constant_array
from .ops import BINARY_OPS, CHANNEL_FIRST_NORMS, POOL_OPS, REDUCE_OPS, RESHAPE_OPS, SLICING_OPS, UNARY_OPS


class PieceBoundary(PreconditionError):
    """The group is cut by a ``Split`` / ``Slice``: each piece is found as a group of its own."""


@dataclass
class Member:
    """A value of the group, its channel ``axis``, and ``inner`` columns per channel (Flatten).

    After a ``Concat`` (or a ``Split`` / ``Slice`` back from one) the group is a slice of the
    value's channels: ``offsets`` says where each copy of the group starts (a concatenation of
    two values of the same group holds it twice: DLA's roots, GhostNet's ``[x, dw(x)]``), ``total``
    the channels in all (``None``: the group is the whole axis).
    """

    value: Value
    axis: int
    inner: int = 1
    offsets: tuple[int, ...] = (0,)
    total: int | None = None

    @property
    def offset(self) -> int:
        return self.offsets[0]

    def full_index(self, mapping: np.ndarray, width: int) -> np.ndarray:
        """The index over the value's whole channel axis (old positions) for a group ``mapping``."""
        if self.total is None:
            return np.asarray(mapping, dtype=np.int64)
        parts, at = [], 0
        for o in self.offsets:
            parts += [np.arange(at, o), o + np.asarray(mapping, dtype=np.int64)]
            at = o + width
        parts.append(np.arange(at, self.total))
        return np.concatenate(parts).astype(np.int64)

    def channels(self, width: int) -> int:
        return width if self.total is None else self.total

    def widened(self, old: int, new: int) -> int:
        """Channels of the value once the group is ``new`` wide."""
        return self.channels(old) + len(self.offsets) * (new - old)


@dataclass
class ChannelGroup:
    """One channel group.

    Attributes
    ----------
    width : int
        Channels now.
    members : list of Member
    producers : list of (Node, int)
        Nodes whose output channels are the group, with the weight axis that holds them.
    consumers : list of (Node, int, int)
        ``(node, weight axis of the input channels, inner)``: ``inner`` columns per channel
        (a ``Gemm`` after a ``Flatten`` of C×H×W reads H·W columns per channel).
    through : list of Node
        Nodes that keep channels aligned and may hold per-channel parameters.
    granularity : int
        Channels per indivisible block (a grouped conv's channels per group; 1 otherwise).
    needs_equal_replication : list of Node
        LayerNorms over the channel axis: exact only if every channel is copied equally often.
    """

    width: int
    members: list[Member] = field(default_factory=list)
    producers: list[tuple[Node, int]] = field(default_factory=list)
    consumers: list[tuple[Node, int, int]] = field(default_factory=list)
    through: list[Node] = field(default_factory=list)
    granularity: int = 1
    needs_equal_replication: list[Node] = field(default_factory=list)
    boundaries: list[Node] = field(default_factory=list)
    """Grouped convs with different input and output channels per group that read the group: each
    grows by whole groups, and its output (another group) follows with a derived mapping."""
    sources: list[Node] = field(default_factory=list)
    """Grouped convs with different input and output channels per group that write the group: each
    grows by whole groups, and its input (another group) follows with a derived mapping."""
    slices: dict[int, Member] = field(default_factory=dict)
    """``id(node) -> Member`` it reads or writes (a slice of a concatenation has its own index)."""
    sized_at_run_time: list[Node] = field(default_factory=list)
    """Reshapes whose target reads the channel count from a member's shape at run time (``x.reshape(
    n, h * w, c)`` with ``c`` from ``x.shape``): they follow the widened group with no change."""
    origin: tuple[Node, int] | None = None
    """``(node, output)`` the group was found from (:func:`find_channel_group` finds it again)."""

    def describe(self) -> str:
        names = ", ".join(n.name for n, _ in self.producers[:3]) + (" …" if len(self.producers) > 3 else "")
        return (f"{self.width} channels: {len(self.producers)} producers ({names}), "
                f"{len(self.consumers)} consumers, {len(self.members)} values")

    def to_dict(self) -> dict:
        return {"width": self.width, "producers": [n.name for n, _ in self.producers],
                "consumers": [n.name for n, _, _ in self.consumers],
                "through": [n.name for n in self.through], "values": [m.value.name for m in self.members],
                "granularity": self.granularity}


def weight_of(node: Node) -> tuple[int, np.ndarray] | None:
    """``(input index, array)`` of a node's constant weight (conv / Gemm B / MatMul operand)."""
    if node.op_type in ("Conv", "Gemm"):
        idx = [1]
    elif node.op_type == "MatMul":
        idx = [1, 0]
    else:
        return None
    for i in idx:
        if i < len(node.inputs):
            a = constant_array(node.inputs[i])
            if a is not None:
                return i, a
    return None


def _rank(v: Value) -> int | None:
    t = v.type
    return None if t is None or t.shape is None else len(t.shape)


def _dim(v: Value, axis: int):
    t = v.type
    return None if t is None or t.shape is None or axis >= len(t.shape) else t.shape[axis]


def producer_axis(node: Node) -> int | None:
    """The weight axis holding a producer's output channels (``None``: not a producer)."""
    if node.op_type == "Conv":
        return 0 if int(node.attr("group", 1)) == 1 else None
    w = weight_of(node)
    if w is None:
        return None
    i, arr = w
    if node.op_type == "Gemm":
        return 0 if node.attr("transB", 0) else 1
    return arr.ndim - 1 if i == 1 else None  # MatMul(x, W): W's last axis


def find_channel_group(graph: Graph, producer: Node, view: ActivationView | None = None, *,
                       grouped: bool = False, output: int = 0) -> ChannelGroup:
    """The channel group of ``producer``'s output; :class:`PreconditionError` says where it stops.

    Value types ``graph`` lacks are inferred in place first. ``grouped``: ``producer`` may be a
    grouped conv (the group after a grouped conv with different input and output channels per
    group, which widens with a mapping derived from the group before it). ``producer`` may be a
    ``Split`` / ``Slice`` on the channel axis: the group is its output ``output`` (a CSP stage's
    halves), produced by a slice of the rows of the conv before it.
    """
    if view is None:
        ensure_types(graph)
        view = ActivationView(graph)
    if producer.op_type in SLICING_OPS:
        return group_of_piece(view, producer, output)
    if grouped and producer.op_type == "Conv":
        out = producer.outputs[0]
        width = _dim(out, 1)
        if not isinstance(width, int):
            raise PreconditionError(f"node {producer.name!r}: its output channel count is unknown")
        g = _Closure(view, width).run(producer, out, 1, axis0=True)
        g.origin = (producer, 0)
        return g
    if producer_axis(producer) is None:
        raise PreconditionError(
            f"node {producer.name!r} ({producer.op_type}) does not produce a channel group (a conv of "
            "group 1, a Gemm or a MatMul with a constant weight does)"
        )
    out = producer.outputs[0]
    rank = _rank(out)
    if rank is None:
        raise PreconditionError(f"node {producer.name!r}: the rank of its output is unknown")
    axis = 1 if producer.op_type in ("Conv", "Gemm") else rank - 1
    width = _dim(out, axis)
    if not isinstance(width, int):
        raise PreconditionError(f"node {producer.name!r}: its output channel count is unknown ({out.type})")
    g = _Closure(view, width).run(producer, out, axis)
    g.origin = (producer, 0)
    return g


def group_of_piece(view: ActivationView, node: Node, output: int = 0) -> ChannelGroup:
    """The group of output ``output`` of a ``Split`` / ``Slice`` over the channel axis (axis 1)."""
    g = group_of_value(view, node.outputs[output])
    g.origin = (node, output)
    return g


def group_of_value(view: ActivationView, v: Value, axis: int = 1) -> ChannelGroup:
    """The group whose channels are ``v``'s axis ``axis`` (whole), from any value of it."""
    width = _dim(v, axis)
    if not isinstance(width, int) or _rank(v) is None:
        raise PreconditionError(f"value {v.name!r}: its channel count is unknown")
    g = _Closure(view, width).run(None, v, axis)
    g.origin = (v.producer, next(i for i, o in enumerate(v.producer.outputs) if o is v)) \
        if v.producer is not None else None
    return g


class _Closure:
    def __init__(self, view: ActivationView, width: int):
        self.view = view
        self.g = ChannelGroup(width)
        self.seen_values: dict[int, Member] = {}
        # a node is visited once from its output side and once from its input side: a conv that reads
        # and writes the same group (RepVGG's 1x1 and kxk branches on the stream) is both a consumer
        # and a producer; an op that keeps channels aligned is tied once
        self.seen_back: set[int] = set()
        self.seen_fwd: set[int] = set()
        self.tied: set[int] = set()
        self.queue: list[Member] = []
        self._cur: Member | None = None
        self.pending: list[Node] = []  # concatenations reached, read when the rest is closed
        self.concats: dict[int, tuple[Node, tuple[bool, ...]]] = {}
        self.shape_reads: list[tuple[Node, Value, int]] = []  # (reshape, value, axis) read at run time

    def fail(self, node: Node, why: str) -> None:
        raise PreconditionError(
            f"the {self.g.width}-channel group stops at {node.name!r} ({node.op_type}): {why}"
        )

    def add(self, v: Value, axis: int, inner: int = 1, *, offsets: tuple[int, ...] | None = None,
            total: int | None = -1) -> None:
        cur = self._cur
        if offsets is None:
            offsets = (0,) if cur is None else cur.offsets
        if total == -1:
            total = None if cur is None else cur.total
        if id(v) in self.seen_values:
            m = self.seen_values[id(v)]
            if (m.axis, m.inner, m.offsets, m.total) != (axis, inner, tuple(offsets), total):
                raise PreconditionError(f"value {v.name!r} carries the group on two different axes or slices")
            return
        m = Member(v, axis, inner, tuple(offsets), total)
        self.seen_values[id(v)] = m
        self.g.members.append(m)
        self.queue.append(m)

    def run(self, producer: Node | None, out: Value, axis: int, axis0: bool = False) -> ChannelGroup:
        if producer is not None:
            self.seen_back.add(id(producer))
            self.g.producers.append((producer, 0 if axis0 else producer_axis(producer)))
        self.add(out, axis)
        self._close()
        # a concatenation is read once the rest of the group is known: which of its inputs are
        # members (two of them in DLA's roots) decides where the group lies in its output
        while self.pending:
            n = self.pending.pop(0)
            self._concat(n)
            self._close()
        for n, inputs in self.concats.values():
            now = tuple(id(v) in self.seen_values for v in n.inputs if v is not None)
            if now != inputs:
                self.fail(n, "a concatenation whose inputs joined the group after it was read")
        for n, v, axis in self.shape_reads:  # the size read at run time must be the group's own axis
            m = self.seen_values.get(id(v))
            r = _rank(v)
            if m is None or r is None or m.axis != axis % r or m.inner != 1 or m.total is not None:
                self.fail(n, f"a Reshape whose target reads axis {axis} of {v.name!r}, which is not this "
                          "group's channel axis")
        self._check_width_reads()
        return self.g

    _SHAPE_SINKS = frozenset({"Reshape", "Expand", "Tile", "Resize", "Upsample", "ConstantOfShape", "Range",
                              "Pad", "Slice", "Split", "OneHot", "TopK", "Unsqueeze", "Squeeze", "ReduceSum",
                              "ReduceMean"})

    def _check_width_reads(self) -> None:
        """The group's width read at run time (``Shape`` of a member, its channel entry kept) may size
        only the reshapes the group itself retargets by that read; any other use (a reshape outside
        the group, an ``Expand``) would take the widened count where the parent's is meant."""
        ok = {id(n) for n in self.g.sized_at_run_time}
        for m in self.g.members:
            for shape, _ in m.value.uses():
                if shape.op_type != "Shape":
                    continue
                todo, seen = [shape.outputs[0]], set()
                while todo:
                    v = todo.pop()
                    if id(v) in seen:
                        continue
                    seen.add(id(v))
                    piece = _shape_piece(v)
                    if piece is not None and piece[0] is m.value and not piece[1] <= m.axis < piece[2]:
                        continue  # only other axes (batch, tokens, pixels) are read here
                    for reader, k in v.uses():
                        if reader.op_type in self._SHAPE_SINKS and k >= 1:
                            if reader.op_type == "Reshape" and id(reader) in ok:
                                continue
                            self.fail(reader, f"its {('target', 'size')[reader.op_type != 'Reshape']} reads "
                                      f"the group's width at run time (Shape of {m.value.name!r}), and it "
                                      "lies outside the group")
                        todo.extend(o for o in reader.outputs)

    def _close(self) -> None:
        while self.queue:
            m = self.queue.pop()
            self._cur = m
            v = m.value
            if v.is_graph_output:
                raise PreconditionError(
                    f"the {self.g.width}-channel group reaches the graph output {v.name!r}; widening "
                    "it would change the model's interface"
                )
            p = v.producer
            if p is None:
                raise PreconditionError(
                    f"the {self.g.width}-channel group reaches the graph input {v.name!r}"
                )
            if id(p) not in self.seen_back:
                self.seen_back.add(id(p))
                self.backward(p, m)
            for r in self.view.readers(v):
                if id(r) not in self.seen_fwd:
                    self.seen_fwd.add(id(r))
                    self.forward(r, m)

    # -- the producer side of a member ------------------------------------------------------
    def backward(self, p: Node, m: Member) -> None:
        ax = producer_axis(p)
        if ax is not None and m.inner == 1 and self._out_axis_ok(p, m):
            self.g.producers.append((p, ax))
            self.g.slices[id(p)] = m
            return
        self.through(p, m, backward=True)

    def _out_axis_ok(self, p: Node, m: Member) -> bool:
        r = _rank(m.value)
        if p.op_type in ("Conv", "Gemm"):
            return m.axis == 1
        return r is not None and m.axis == r - 1

    # -- a reader of a member ---------------------------------------------------------------
    def forward(self, n: Node, m: Member) -> None:
        op = n.op_type
        if op == "Conv" and int(n.attr("group", 1)) == 1 and n.inputs[0] is m.value:
            if m.axis != 1 or m.inner != 1:
                self.fail(n, "a conv reads the group off its channel axis")
            self.g.consumers.append((n, 1, 1))
            self.g.slices[id(n)] = m
            return
        if op == "Gemm" and n.inputs[0] is m.value and weight_of(n) is not None:
            if m.axis != 1 or n.attr("transA", 0):
                self.fail(n, "a Gemm reads the group off its input-feature axis")
            self.g.consumers.append((n, 1 if n.attr("transB", 0) else 0, m.inner))
            self.g.slices[id(n)] = m
            return
        if op == "MatMul" and n.inputs[0] is m.value and weight_of(n) is not None and weight_of(n)[0] == 1:
            r = _rank(m.value)
            if r is None or m.axis != r - 1:
                self.fail(n, "a MatMul reads the group off its last axis")
            self.g.consumers.append((n, weight_of(n)[1].ndim - 2, m.inner))
            self.g.slices[id(n)] = m
            return
        self.through(n, m, backward=False)

    # -- ops that keep channels aligned -----------------------------------------------------
    def through(self, n: Node, m: Member, *, backward: bool) -> None:
        if id(n) in self.tied:
            return  # tied from its other side already (the first visit ties every operand)
        self.tied.add(id(n))
        op = n.op_type
        data = self.view.inputs(n)
        out = self.view.output(n) if n.outputs else None
        if op in UNARY_OPS or op in CHANNEL_FIRST_NORMS or op in POOL_OPS or op == "PRelu":
            if op in CHANNEL_FIRST_NORMS and m.axis != 1:
                self.fail(n, "a channel-first norm off the channel axis")
            if op in POOL_OPS and m.axis != 1:
                self.fail(n, "pooling off the channel axis")
            self._tie(n, data[:1], out, m.axis, m.inner)
            return
        if op in ("Resize", "Upsample"):  # spatial resampling, channel by channel
            self._resize(n, m, data, out)
            return
        sliced = m.total is not None
        if op == "Concat" and not backward:
            self.pending.append(n)
            return
        if op in ("Split", "Slice") and m.inner == 1:
            self._split(n, m, backward)
            return
        if sliced and op in ("LayerNormalization", "Conv"):
            self.fail(n, f"a {op} of a group that is a slice of a concatenation")
        if op == "LayerNormalization":
            r = _rank(m.value)
            ax = int(n.attr("axis", -1)) % r if r else None
            if ax != r - 1 or m.axis != r - 1:
                self.fail(n, "a LayerNormalization over more than the channel axis")
            self.g.needs_equal_replication.append(n)
            self._tie(n, data[:1], out, m.axis, m.inner)
            return
        if op == "Conv":  # grouped / depthwise, or a conv reading the group as its weight
            w = weight_of(n)
            groups = int(n.attr("group", 1))
            if w is None or n.inputs[0] is not data[0] or m.axis != 1:
                self.fail(n, "a conv with a computed weight")
            per_in, per_out = w[1].shape[1], w[1].shape[0] // groups
            if per_in != per_out:
                if groups == 1 or (backward and m.total is not None):
                    self.fail(n, f"a grouped conv with {per_in} input but {per_out} output channels per "
                              "group, producing a slice of the group")
                if backward:
                    # a source: it grows by whole groups of its outputs, its input group follows with
                    # the mapping that implies (FastViT's downsampling convs, 1 input : 2 outputs)
                    self.g.granularity = int(np.lcm(self.g.granularity, per_out))
                    self.g.sources.append(n)
                    self.g.slices[id(n)] = m
                    return
                # a boundary: its output is another group, widened with the mapping this one implies
                self.g.granularity = int(np.lcm(self.g.granularity, per_in))
                self.g.boundaries.append(n)
                self.g.slices[id(n)] = m
                return
            self.g.granularity = int(np.lcm(self.g.granularity, per_in))
            self._tie(n, data[:1], out, 1, 1)
            return
        if op in BINARY_OPS:
            full = [v for v in data if _dim(v, self._axis_in(v, m)) == self._width_of(m)]
            if op in ("Sub", "Div") and backward and len(data) == 2 and data[1] is m.value and \
                    _dim(data[0], self._axis_in(data[0], m)) != self._width_of(m):
                self.fail(n, "a broadcast operand on the left of a non-commutative op")
            self._tie(n, full, out, m.axis, m.inner)
            return
        if op == "Transpose":
            r = _rank(m.value)
            perm = list(n.attr("perm") or range(r or 0)[::-1])
            if len(perm) != r:
                self.fail(n, "a Transpose of unknown rank")
            if backward:
                self._tie(n, data[:1], None, perm[m.axis], m.inner)
            else:
                self._tie(n, [], out, perm.index(m.axis), m.inner)
            return
        if op in REDUCE_OPS or op in RESHAPE_OPS:
            self._reshape_like(n, m, data, out, backward)
            return
        self.fail(n, "this op does not keep channels aligned (a known limit of widen)")

    def _resize(self, n: Node, m: Member, data: list[Value], out: Value | None) -> None:
        """A ``Resize`` / ``Upsample`` keeps channels aligned when it does not resample the channel
        axis: its scale there is 1, or its ``sizes`` name the channel count (retargeted)."""
        if m.inner != 1 or out is None or data[0] is not n.inputs[0]:
            self.fail(n, "a resize that reads the group as a parameter")
        k_scales, k_sizes = (1, None) if n.op_type == "Upsample" else (2, 3)
        scales = constant_array(n.inputs[k_scales], transpose=False) if len(n.inputs) > k_scales and \
            n.inputs[k_scales] is not None else None
        sized = k_sizes is not None and len(n.inputs) > k_sizes and n.inputs[k_sizes] is not None
        if sized:
            sizes = constant_array(n.inputs[k_sizes], transpose=False)
            if sizes is None or sizes.ndim != 1 or int(sizes[m.axis]) != self._width_of(m):
                self.fail(n, "a Resize to sizes computed in the graph")
        elif scales is None or scales.ndim != 1 or m.axis >= scales.size or float(scales[m.axis]) != 1.0:
            self.fail(n, "a resize that resamples the channel axis")
        if n.attr("axes") is not None:
            self.fail(n, "a Resize over chosen axes")
        self._tie(n, data[:1], out, m.axis, 1)

    def _width_of(self, m: Member) -> int:
        return m.channels(self.g.width) * m.inner

    def _axis_in(self, v: Value, m: Member) -> int:
        rm, rv = _rank(m.value), _rank(v)
        if rm is None or rv is None:
            return m.axis
        return m.axis - (rm - rv)

    def _concat(self, n: Node) -> None:
        """The group becomes a slice (or several) of the concatenation's output channels."""
        ins = [v for v in n.inputs if v is not None]
        mem = [self.seen_values.get(id(v)) for v in ins]
        ms = [m for m in mem if m is not None]
        out = self.view.output(n)
        r = _rank(ms[0].value)
        ax = int(n.attr("axis", 1)) % r if r else None
        if ax is None or out is None or any(m.axis != ax or m.inner != 1 for m in ms) or \
                len({id(v) for v in ins}) != len(ins):
            self.fail(n, "a concatenation off the channel axis, or of one value twice")
        widths = [_dim(v, ax) for v in ins]
        if not all(isinstance(w, int) for w in widths):
            self.fail(n, "a concatenation of inputs with unknown channel counts")
        offsets: list[int] = []
        at = 0
        for w, m in zip(widths, mem, strict=True):
            if m is not None:
                offsets += [at + o for o in m.offsets]
            at += w
        self.concats[id(n)] = (n, tuple(m is not None for m in mem))
        self.g.through.append(n)
        self._cur = None
        self.add(out, ax, 1, offsets=tuple(offsets), total=at)

    def _pieces(self, n: Node, m: Member) -> list[tuple[int, int]] | None:
        """``[(start, end)]`` of each output of a ``Split`` / ``Slice`` on the member's axis, or
        ``None`` when they are not constants on that axis."""
        src = n.inputs[0]
        r = _rank(src)
        total = _dim(src, m.axis)
        if r is None or not isinstance(total, int):
            return None
        if n.op_type == "Split":
            if int(n.attr("axis", 0)) % r != m.axis:
                return None
            sizes = n.attr("split")
            if sizes is None and len(n.inputs) > 1 and n.inputs[1] is not None:
                arr = constant_array(n.inputs[1])
                sizes = None if arr is None else arr.reshape(-1).tolist()
            if sizes is None:
                k = len(n.outputs)
                if total % k:
                    return None
                sizes = [total // k] * k
            out, at = [], 0
            for z in sizes:
                out.append((at, at + int(z)))
                at += int(z)
            return out if at == total else None
        arrs = [constant_array(n.inputs[i]) if i < len(n.inputs) and n.inputs[i] is not None else None
                for i in range(1, 5)]
        starts, ends, axes, steps = arrs
        if starts is None or ends is None or starts.size != 1:
            return None
        axis = int(axes.reshape(-1)[0]) % r if axes is not None else 0
        if axis != m.axis or (steps is not None and int(steps.reshape(-1)[0]) != 1):
            return None
        st, en = int(starts.reshape(-1)[0]), int(ends.reshape(-1)[0])
        st, en = (st + total if st < 0 else st), (en + total if en < 0 else en)
        return [(max(0, min(st, total)), max(0, min(en, total)))]

    def _split(self, n: Node, m: Member, backward: bool) -> None:
        """A ``Split`` / ``Slice`` on the channel axis: each output holding the group is a member."""
        r = _rank(n.inputs[0])
        axes = sliced_axes(n, r)
        if axes is not None and m.axis not in axes:  # pieces of other axes (tokens, a class token):
            outs = [o for o in n.outputs if o.uses() or o.is_graph_output]  # each holds the whole group
            self._tie(n, [n.inputs[0], *outs], None, m.axis, m.inner)
            return
        saved = self._cur
        pieces = self._pieces(n, m)
        if pieces is None:
            self.fail(n, "a split or slice whose sizes are not constants on the channel axis")
        outs = n.outputs
        if backward:  # m is output k: the input holds the group where the piece starts
            k = next(i for i, o in enumerate(outs) if o is m.value)
            src = n.inputs[0]
            width = _dim(src, m.axis)
            occ = m.offsets if m.total is not None else (0,)
            self._cur = None
            self.add(src, m.axis, 1, offsets=tuple(pieces[k][0] + o for o in occ), total=width)
            im = self.seen_values[id(src)]
        else:
            im = m
        self.g.through.append(n)
        self.g.slices[id(n)] = im
        w = self.g.width
        occ = im.offsets if im.total is not None else (0,)
        for (a, b), o in zip(pieces, outs, strict=False):
            inside = [x for x in occ if a <= x and x + w <= b]
            if any(x < b and x + w > a for x in occ if x not in inside):
                raise PieceBoundary(f"the {w}-channel group stops at {n.name!r} ({n.op_type}): a split or "
                                    f"slice [{a}, {b}) cuts through it (each piece is a group of its own)")
            if not inside or not (o.uses() or o.is_graph_output):
                continue
            self._cur = None
            if inside == [a] and b - a == w:
                self.add(o, im.axis, 1, offsets=(0,), total=None)
            else:
                self.add(o, im.axis, 1, offsets=tuple(x - a for x in inside), total=b - a)
        self._cur = saved

    def _tie(self, n: Node, ins: list[Value], out: Value | None, axis: int, inner: int) -> None:
        self.g.through.append(n)
        if self._cur is not None:
            self.g.slices.setdefault(id(n), self._cur)
        for v in ins:
            self.add(v, axis, inner)
        if out is not None:
            self.add(out, axis, inner)

    def _reshape_like(self, n: Node, m: Member, data: list[Value], out: Value | None, backward: bool) -> None:
        """Spatial reductions; Flatten / Reshape to (N, C·inner); and any reshape (``Reshape``,
        ``Flatten``, ``Squeeze``, ``Unsqueeze``) that keeps the channel axis whole: the channel
        count stands at some axis of the output and the elements after it are as many as after the
        channel axis of the input (``[N, T, C] -> [N·T, C]``, ``[N, C, H, W] -> [N, C, H·W]``,
        NHWC tokens ``[N, H, W, C] -> [N, H·W, C]``), so channel ``c`` stays channel ``c``."""
        src = data[0]
        sr, orank = _rank(src), (None if out is None else _rank(out))
        if sr is None or orank is None:
            self.fail(n, "unknown ranks")
        in_m = self.seen_values.get(id(src))
        in_axis = in_m.axis if in_m is not None else None
        if n.op_type in RESHAPE_OPS and n.op_type != "Transpose" and m.inner == 1:
            t_in, t_out = src.type.shape, out.type.shape
            kept = kept_axis(t_out, m.axis, t_in) if backward else kept_axis(t_in, m.axis, t_out)
            if kept is not None:
                if n.op_type == "Reshape":
                    how = _target_entry(n, (m.axis if backward else kept) - orank, self._width_of(m))
                    if how is None:
                        self.fail(n, "a Reshape whose target shape computes the channel count")
                    if how != "constant":
                        self.shape_reads.append((n, *how))
                        self.g.sized_at_run_time.append(n)
                if backward:
                    self._tie(n, [src], None, kept, 1)
                else:
                    self._tie(n, [], out, kept, 1)
                return
        if backward:  # m is the output; the input's axis must be derived
            if n.op_type in ("Flatten", "Reshape") and orank == 2 and sr == 4 and m.axis == 1:
                t = src.type.shape
                inner = int(np.prod(t[2:])) if all(isinstance(d, int) for d in t[2:]) else None
                if inner is None or m.inner != inner:
                    self.fail(n, "a reshape that is not a channel-major flatten")
                self._tie(n, [src], None, 1, 1)
                return
            if n.op_type in REDUCE_OPS or n.op_type == "Squeeze":
                if sr == orank:
                    self._tie(n, [src], None, m.axis, m.inner)
                    return
            self.fail(n, "a reduction or squeeze whose input layout cannot be told")
        if n.op_type == "Flatten":
            ax = int(n.attr("axis", 1))
            t = src.type.shape
            if ax != 1 or in_axis != 1 or m.inner != 1 or not all(isinstance(d, int) for d in t[2:]):
                self.fail(n, "a Flatten that does not start at the channel axis")
            self._tie(n, [], out, 1, int(np.prod(t[2:])))
            return
        if n.op_type == "Reshape":
            t_in, t_out = src.type.shape, out.type.shape
            if orank == 2 and in_axis == 1 and m.inner == 1 and sr >= 2 and all(
                    isinstance(d, int) for d in t_in[1:]) and t_out[1] == int(np.prod(t_in[1:])):
                self._tie(n, [], out, 1, int(np.prod(t_in[2:])))  # a channel-major flatten
                return
            self.fail(n, "a Reshape to another layout")
        axes = n.attr("axes")
        if axes is None and len(n.inputs) > 1:
            arr = constant_array(n.inputs[1])
            axes = None if arr is None else arr.reshape(-1).tolist()
        if axes is None:
            self.fail(n, "a reduction over all axes")
        axes = sorted(int(a) % sr for a in axes)
        if in_axis in axes:
            self.fail(n, "a reduction over the channel axis")
        keep = n.op_type != "Squeeze" and int(n.attr("keepdims", 1)) == 1
        new_axis = in_axis if keep else in_axis - sum(a < in_axis for a in axes)
        self._tie(n, [], out, new_axis, m.inner)


def sliced_axes(n: Node, rank: int | None) -> list[int] | None:
    """The axes a ``Split`` / ``Slice`` cuts (``None`` when they are not constants)."""
    if rank is None:
        return None
    if n.op_type == "Split":
        return [int(n.attr("axis", 0)) % rank]
    starts = constant_array(n.inputs[1], transpose=False) if len(n.inputs) > 1 else None
    if starts is None:
        return None
    if len(n.inputs) > 3 and n.inputs[3] is not None:
        axes = constant_array(n.inputs[3], transpose=False)
        return None if axes is None else [int(a) % rank for a in axes.reshape(-1)]
    return list(range(starts.size))


def _extent(dims) -> tuple[int, tuple[str, ...]] | None:
    """How many elements ``dims`` span: the product of the known sizes and the symbolic names
    (``None`` when a size is unknown)."""
    k, names = 1, []
    for d in dims:
        if isinstance(d, int):
            k *= d
        elif isinstance(d, str) and d:
            names.append(d)
        else:
            return None
    return k, tuple(sorted(names))


def kept_axis(src, axis: int, dst) -> int | None:
    """The axis of ``dst`` that is axis ``axis`` of ``src`` after a reshape, when the reshape keeps
    it whole: the same size, and as many elements after it (row-major order: an element's index on
    that axis is unchanged). ``None`` otherwise."""
    if src is None or dst is None or not 0 <= axis < len(src) or not isinstance(src[axis], int):
        return None
    after = _extent(src[axis + 1:])
    if after is None:
        return None
    for b, d in enumerate(dst):
        if d == src[axis] and _extent(dst[b + 1:]) == after:
            return b
    return None


def _target_entry(n: Node, position: int, width: int):
    """How ``Reshape`` ``n``'s target says the channel count at ``position`` (counted from the end):
    ``"constant"`` (the width, ``-1`` or ``0``, in the target or in a constant trailing piece of the
    ``Concat`` that computes it: retargeted when the group widens), ``(value, axis)`` (a piece that
    reads ``value.shape[axis]`` at run time: it follows the group if that is the group's axis), or
    ``None`` (computed some other way)."""
    target = n.inputs[1] if len(n.inputs) > 1 else None
    arr = constant_array(target, transpose=False)
    if arr is not None:
        vals = arr.reshape(-1)
        ok = -len(vals) <= position < 0 and int(vals[position]) in (width, -1, 0)
        return "constant" if ok else None
    cat = target.producer if target is not None else None
    if cat is not None and cat.op_type != "Concat":  # x.reshape_as(y): the whole target is y's shape
        read = _shape_piece(target)
        if read is None or not -(read[2] - read[1]) <= position < 0:
            return None
        return read[0], read[2] + position
    if cat is None:
        return None
    offset, computed_after = position, False
    for piece in reversed(cat.inputs):
        a = constant_array(piece, transpose=False)
        if a is None:
            read = _shape_piece(piece)  # entries [start, end) of a value's shape, read at run time
            if read is None:
                return None
            src, start, end = read
            if -offset <= end - start:
                return src, end + offset
            offset, computed_after = offset + (end - start), True
            continue
        a = a.reshape(-1)
        if -offset <= a.size:
            if computed_after:  # a constant entry is retargeted only among constant trailing pieces
                return None
            return "constant" if int(a[offset]) in (width, -1, 0) else None
        offset += a.size
    return None


def _shape_piece(v: Value | None):
    """``(value, start, end)`` when ``v`` is entries ``[start, end)`` of a value's shape read at run
    time (``Shape(x)`` with or without ``start`` / ``end``, ``Gather(Shape(x), k)``,
    ``Slice(Shape(x), s, e)``, behind ``Unsqueeze`` / casts); else ``None``."""
    for _ in range(6):
        p = None if v is None else v.producer
        if p is None:
            return None
        if p.op_type in ("Unsqueeze", "Squeeze", "Cast", "Identity"):
            v = p.inputs[0]
            continue
        if p.op_type == "Shape":
            r = _rank(p.inputs[0])
            if r is None:
                return None
            start, end = int(p.attr("start", 0)), p.attr("end", None)
            end = r if end is None else int(end)
            start, end = start % r if start < 0 else min(start, r), end % r if end < 0 else min(end, r)
            return (p.inputs[0], start, end) if end > start else None
        if p.op_type in ("Gather", "Slice"):
            inner = _shape_piece(p.inputs[0])
            if inner is None or inner[1] != 0 or p.attr("axis", 0) != 0:
                return None
            src, _, r = inner
            k = constant_array(p.inputs[1], transpose=False)
            if k is None or k.size != 1:
                return None
            k = int(k.reshape(-1)[0])
            k = k + r if k < 0 else k
            if p.op_type == "Gather":
                return (src, k, k + 1) if 0 <= k < r else None
            e = constant_array(p.inputs[2], transpose=False) if len(p.inputs) > 2 else None
            rest = [constant_array(p.inputs[i], transpose=False)
                    if len(p.inputs) > i and p.inputs[i] is not None else None for i in (3, 4)]
            if e is None or e.size != 1 or any(x is not None and int(x.reshape(-1)[0]) not in (0, 1)
                                                for x in rest):
                return None
            e = int(e.reshape(-1)[0])
            e = e + r if e < 0 else min(e, r)
            return (src, k, e) if e > k else None
        return None
    return None
