"""Axis roles: which factor of which width every axis of every data value holds, read from the data flow.

The channel-group finder (:mod:`netmorph.structure.channels`) follows ONE width (a group of
channels) through the graph; a transformer's head growth changes several factors at once (the
stream width ``d``, the MLP width ``m``, the Q/K/V block, heads, K/V heads, head units), and a
reshape like ViT's ``[B, T, 3·H·D] -> [B, T, 3, H, D]`` regroups them. :class:`AxisRoles` labels
each axis with its factors, starting where the structure says a width is written, so the passes
rewrite a shape constant BY POSITION (the axis that holds heads), never because a value equals a
width. Passes (``add-heads``, ``widen-hidden``) read it; it reads nothing from ``passes/``.
"""

from __future__ import annotations

import numpy as np

from ..ir import Graph, Node, Value
from .constants import constant_array
from .ops import AXIS_REDUCE_OPS, BROADCAST_OPS, SAME_SHAPE_OPS


def _axes(n: Node) -> list[int] | None:
    """The ``axes`` of a Squeeze / Unsqueeze / reduction: the attribute (opset < 13 / 18) or the
    constant second input; ``None`` when neither is given."""
    axes = n.attr("axes")
    if axes is None and len(n.inputs) > 1 and n.inputs[1] is not None:
        c = _const(n.inputs[1])
        axes = None if c is None else c.reshape(-1).tolist()
    return axes


def _const(v: Value | None) -> np.ndarray | None:
    """The value of a constant ``v`` (a parameter, a ``Constant`` node, or an Identity of one)."""
    return constant_array(v, transpose=False)


Atom = tuple[str, int]
"""``(role, size)``: one factor of an axis. Roles: ``d`` (the residual stream's width), ``m`` (an
MLP's hidden width), ``blk`` (the Q / K / V block of a fused projection), ``head`` (query heads),
``kv`` (K/V heads under grouped-query attention), ``rep`` (query heads per K/V group in a K/V
repeat), ``unit`` (a head's units); ``""``: none of them (batch, tokens, pixels, vocabulary).
A role ending in ``/part`` is a piece of such a factor (a slice of it)."""


def _plain(shape) -> list[tuple[Atom, ...]]:
    return [(("", int(s)),) for s in shape]


def axis_size(axis: tuple[Atom, ...]) -> int:
    return int(np.prod([s for _, s in axis], dtype=np.int64)) if axis else 1


def _base(role: str) -> str:
    return role.split("/")[0]


class AxisRoles:
    """The role of every axis of every data value (:data:`Atom` factors), read from the data flow.

    ``sources``: ``id(node) -> atoms`` of the axis a node writes (a linear's output features, a
    conv's output channels, an embedding table's columns, a K/V repeat's new axis); every other
    axis follows from its ops: broadcasting, ``Transpose``, ``Reshape`` (the factors of the input
    regrouped in order to the output's sizes), ``Split`` / ``Slice``, ``MatMul``, reductions. The
    sizes come from one run of the parent in ONNX Runtime. A value whose axes cannot be told
    (an op without a rule, two roles meeting on one axis) has no label (``None``) and a shape
    rewrite that needs it refuses. ``param_axes[(id(node), slot)]`` says, for a float constant read
    by ``node`` (directly, or through ``Expand`` / ``Identity`` / ``Cast``), which of its axes meet
    which role: what widening must repeat.
    """

    def __init__(self, graph: Graph, flow, sources: dict[int, tuple[Atom, ...]]):
        from .transformer import probe_shapes

        self.flow = flow
        self.sources = sources
        names = list(dict.fromkeys(o.name for n in flow.data_nodes for o in n.outputs
                                   if o.uses() or o.is_graph_output))
        (self.shapes,), _ = probe_shapes(graph, names, flow)
        self.labels: dict[int, list | None] = {id(flow.image): self._input_label(flow)}
        self.why: dict[int, str] = {}
        self.param_axes: dict[tuple[int, int], dict[int, tuple[Atom, ...]]] = {}
        for n in flow.data_nodes:
            try:
                outs = self._node(n)
            except (KeyError, IndexError, TypeError, ValueError, ZeroDivisionError):
                outs = None
            for k, o in enumerate(n.outputs):
                lab = None if outs is None or k >= len(outs) else outs[k]
                if lab is not None and (o.name not in self.shapes or len(lab) != len(self.shapes[o.name])
                                        or any(axis_size(a) != s for a, s in zip(lab, self.shapes[o.name],
                                                                              strict=True))):
                    lab = None
                self.labels[id(o)] = lab
                if lab is None:
                    up = next((self.why[id(v)] for v in flow.data_inputs(n) if id(v) in self.why), None)
                    self.why[id(o)] = up or f"{n.name!r} ({n.op_type})"

    def _input_label(self, flow) -> list | None:
        """The data input's axes (no roles): static dims from its type, symbolic ones as its first
        reader's output has them (a conv's batch, an embedding's batch and length)."""
        t = flow.image.type
        if t is None or t.shape is None:
            return None
        readers = flow.data_consumers(flow.image)
        ref = self.shapes.get(readers[0].outputs[0].name) if readers else None
        dims = []
        for i, d in enumerate(t.shape):
            if isinstance(d, int):
                dims.append(d)
            elif ref is not None and i < len(ref):
                dims.append(int(ref[i]))
            else:
                return None
        return _plain(dims)

    def _shape_of(self, v: Value):
        if v.name in self.shapes:
            return self.shapes[v.name]
        t = v.type
        if t is not None and t.shape is not None and all(isinstance(d, int) for d in t.shape):
            return tuple(t.shape)
        return None

    def label(self, v: Value | None):
        return None if v is None else self.labels.get(id(v))

    def unknown(self, v: Value) -> str:
        """Where the labels stopped, for a refusal: the first node without an axis rule."""
        return self.why.get(id(v), "its producer")

    # -- rules -------------------------------------------------------------------------------------
    def _data(self, v) -> bool:
        return v is not None and self.flow.is_data(v)

    def _merge(self, n: Node, out_shape, operands) -> list | None:
        """Broadcast ``operands`` (aligned right) to ``out_shape``: each axis takes the role its
        full-size operands carry; constants met on a role axis are recorded in ``param_axes``."""
        r = len(out_shape)
        out = [None] * r
        for _, v in operands:
            if not self._data(v):
                continue
            lab = self.label(v)
            if lab is None:
                return None
            for i, ax in enumerate(lab):
                k = r - len(lab) + i
                if axis_size(ax) != out_shape[k]:
                    continue
                out[k] = self._pick(out[k], ax)
                if out[k] is False:
                    return None
        out = [ax if ax is not None else (("", int(s)),) for ax, s in zip(out, out_shape, strict=True)]
        for slot, v in operands:
            if not self._data(v):
                self._join_param(n, slot, v, out)
        return out

    @staticmethod
    def _pick(a, b):
        if a is None or a == b:
            return b
        ra, rb = {x for x, _ in a if x}, {x for x, _ in b if x}
        if not rb:
            return a
        if not ra:
            return b
        full_a, full_b = {x for x in ra if "/" not in x}, {x for x in rb if "/" not in x}
        if {_base(x) for x in ra} == {_base(x) for x in rb}:
            return a if len(full_a) >= len(full_b) else b
        return False  # two roles on one axis

    def _join_param(self, n: Node, slot: int, v: Value, out: list, depth: int = 0) -> None:
        """Record which axes of the float constant behind ``n``'s input ``slot`` meet a role axis of
        ``out`` (broadcast from the right), through the plumbing constants are broadcast by
        (``Expand``, ``Unsqueeze``, ``Identity``, ``Cast``; ``Gather`` / ``Slice`` of a position
        table at positions computed from shapes) and elementwise arithmetic with other constants
        (Gemma's ``1 + w``)."""
        if v is None or depth > 6:
            return
        p = v.producer
        if v.const is None and p is not None and p.op_type != "Constant":
            if p.op_type in ("Expand", "Identity", "Cast", "Unsqueeze", "Tile", "Gather", "Slice"):
                # trailing axes kept in place: a position table read by positions computed from shapes
                self._join_param(p, 0, p.inputs[0], out, depth + 1)
            elif p.op_type in ("Add", "Mul", "Sub", "Div"):
                for k, x in enumerate(p.inputs):
                    self._join_param(p, k, x, out, depth + 1)
            return
        a = _const(v)
        if a is None or a.dtype.kind != "f" or a.size <= 1:
            return
        axes = {}
        for i, size in enumerate(a.shape):
            k = len(out) - a.ndim + i
            if k < 0 or size == 1:
                continue
            if any(role for role, _ in out[k]) and axis_size(out[k]) == size:
                axes[i] = out[k]
        if axes:
            self.param_axes.setdefault((id(n), slot), {}).update(axes)

    def _node(self, n: Node) -> list | None:
        op = n.op_type
        outs = [self.shapes.get(o.name) for o in n.outputs]
        shape = outs[0]
        if shape is None:
            return None
        data = [(i, v) for i, v in enumerate(n.inputs) if v is not None]
        if id(n) in self.sources and op in ("MatMul", "Gemm", "Conv", "Gather", "Expand"):
            return [self._source(n, shape)]
        if op in SAME_SHAPE_OPS or op in ("BatchNormalization", "InstanceNormalization"):
            x = self.label(n.inputs[0]) if self._data(n.inputs[0]) else None
            if x is None:
                return None
            if op in ("BatchNormalization", "InstanceNormalization"):
                for slot in range(1, len(n.inputs)):
                    self._join_param(n, slot, n.inputs[slot], [x[1]])
                return [x]
            return [self._merge(n, shape, data)]
        if op in BROADCAST_OPS:
            return [self._merge(n, shape, data)]
        if op == "MatMul":
            a, b = n.inputs[0], n.inputs[1]
            la = self.label(a) if self._data(a) else None
            lb = self.label(b) if self._data(b) else None
            if self._data(a) and la is None or self._data(b) and lb is None:
                return None
            out = _plain(shape)
            r = len(shape)
            for lab in (la, lb):
                if lab is not None and len(lab) > 2:
                    for i, ax in enumerate(lab[:-2]):
                        k = r - 2 - (len(lab) - 2) + i
                        if axis_size(ax) == shape[k]:
                            out[k] = ax
            if la is not None and len(la) >= 2:
                out[-2] = la[-2]
            if lb is not None and len(lb) >= 2:
                out[-1] = lb[-1]
            return [out]
        if op == "Gemm":
            la = self.label(n.inputs[0])
            if la is None:
                return None
            return [[la[1] if n.attr("transA", 0) else la[0], (("", int(shape[1])),)]]
        if op == "Conv":
            la = self.label(n.inputs[0])
            return None if la is None else [[la[0], *_plain(shape[1:])]]
        if op == "Gather":
            if not self._data(n.inputs[0]):  # a table read by data indices
                return [[*self.label(n.inputs[1]), *_plain(shape[len(self.label(n.inputs[1])):])]]
            x = self.label(n.inputs[0])
            ax = int(n.attr("axis", 0)) % len(x)
            idx = self._shape_of(n.inputs[1]) if n.inputs[1] is not None else None
            if x is None or idx is None:
                return None
            return [[*x[:ax], *_plain(idx), *x[ax + 1:]]]
        if op == "GatherElements":  # the output is shaped and indexed like the indices
            lab = self.label(n.inputs[1]) if self._data(n.inputs[1]) else None
            return None if lab is None else [list(lab)]
        if op == "Transpose":
            x = self.label(n.inputs[0])
            perm = n.attr("perm") or list(range(len(x)))[::-1]
            return None if x is None else [[x[p] for p in perm]]
        if op in ("Reshape", "Flatten"):
            x = self.label(n.inputs[0])
            return None if x is None else [_regroup(x, shape)]
        if op in ("Squeeze", "Unsqueeze"):
            x = self.label(n.inputs[0])
            if x is None:
                return None
            axes = _axes(n)
            if op == "Squeeze":
                if axes is None:
                    return [[ax for ax in x if axis_size(ax) != 1]]
                drop = {int(a) % len(x) for a in axes}
                return [[ax for i, ax in enumerate(x) if i not in drop]]
            out = list(x)
            for a in sorted(int(a) % len(shape) for a in axes):
                out.insert(a, (("", 1),))
            return [out]
        if op in ("Split", "Slice"):
            return self._pieces(n, outs)
        if op == "Concat":
            r = len(shape)
            ax = int(n.attr("axis", 0)) % r
            labs = [self.label(v) if self._data(v) else None for v in n.inputs]
            if any(self._data(v) and lab is None for v, lab in zip(n.inputs, labs, strict=True)):
                return None
            rest = [(i, v) for i, v in data]
            out = self._merge_except(n, shape, rest, ax)
            if out is None:
                return None
            for slot, v in rest:
                if not self._data(v):
                    self._join_param(n, slot, v, out)
            pieces = [lab[ax] for lab in labs if lab is not None]
            roles = {_base(role) for p in pieces for role, _ in p if role}
            if len(roles) > 1:
                return None
            role = next(iter(roles), "")
            out[ax] = ((f"{role}/part" if role else "", int(shape[ax])),)
            return [out]
        if op in ("Expand", "Tile"):
            x = self.label(n.inputs[0])
            if x is None:
                return None
            out = _plain(shape)
            for i, a in enumerate(x):
                k = len(shape) - len(x) + i
                if axis_size(a) == shape[k]:
                    out[k] = a
            return [out]
        if op in AXIS_REDUCE_OPS:
            x = self.label(n.inputs[0])
            if x is None:
                return None
            axes = _axes(n)
            drop = set(range(len(x))) if axes is None else {int(a) % len(x) for a in axes}
            if int(n.attr("keepdims", 1)):
                return [[(("", 1),) if i in drop else ax for i, ax in enumerate(x)]]
            return [[ax for i, ax in enumerate(x) if i not in drop]]
        return None

    def _merge_except(self, n: Node, shape, operands, axis: int) -> list | None:
        out = [None] * len(shape)
        for _, v in operands:
            if not self._data(v):
                continue
            lab = self.label(v)
            for k, ax in enumerate(lab):
                if k == axis or axis_size(ax) != shape[k]:
                    continue
                out[k] = self._pick(out[k], ax)
                if out[k] is False:
                    return None
        return [ax if ax is not None else (("", int(s)),) for ax, s in zip(out, shape, strict=True)]

    def _source(self, n: Node, shape) -> list:
        atoms = self.sources[id(n)]
        if n.op_type == "Conv":  # a patch embedding: its filters (and bias) are the channels
            for slot in (1, 2):
                if slot < len(n.inputs) and n.inputs[slot] is not None:
                    self.param_axes.setdefault((id(n), slot), {})[0] = atoms
            return [self.label(n.inputs[0])[0], atoms, *_plain(shape[2:])]
        if n.op_type == "Gather":  # an embedding table: its columns are the channels
            self.param_axes.setdefault((id(n), 0), {})[1] = atoms
            idx = self.label(n.inputs[1])
            return [*idx, atoms]
        if n.op_type == "Expand":  # a K/V repeat: the new axis is the group size
            axis, rep = atoms
            x = self.label(n.inputs[0])
            out = _plain(shape)
            for i, a in enumerate(x):
                k = len(shape) - len(x) + i
                if axis_size(a) == shape[k]:
                    out[k] = a
            out[axis] = (rep,)
            return out
        x = self.label(n.inputs[0])
        if n.op_type == "Gemm":
            return [x[1] if n.attr("transA", 0) else x[0], atoms]
        return [*x[:-1], atoms]

    def _pieces(self, n: Node, outs) -> list | None:
        x = self.label(n.inputs[0])
        src = self._shape_of(n.inputs[0])
        if x is None or src is None:
            return None
        r = len(x)
        labs = []
        for k, o in enumerate(outs):
            if o is None:
                labs.append(None)
                continue
            changed = [i for i in range(r) if o[i] != src[i]]
            if len(changed) > 1:
                return None
            lab = list(x)
            for i in changed:
                lab[i] = _piece(x[i], o[i], n, k)
            labs.append(lab)
        return labs


def _piece(axis: tuple[Atom, ...], size: int, n: Node, k: int) -> tuple[Atom, ...]:
    """The label of a piece of ``size`` of an axis: the inner factors when the piece is one block of
    the outermost factor (a fused projection's Q, K or V), else a part of the axis."""
    inner = axis[1:]
    if inner and axis_size(inner) == size:
        return inner
    roles = {_base(role) for role, _ in axis if role}
    if not roles:
        return (("", int(size)),)
    return ((f"{'+'.join(sorted(roles))}/part", int(size)),)


def _regroup(x: list, shape) -> list | None:
    """A reshape's output labels: the input's factors, in order, grouped to the output's sizes (a
    factor without a role may be split; a factor with one may not)."""
    atoms = [a for ax in x for a in ax]
    out, i = [], 0
    for s in shape:
        s = int(s)
        got: list[Atom] = []
        prod = 1
        if s == 1:
            while i < len(atoms) and atoms[i][1] == 1 and not atoms[i][0]:
                i += 1
            out.append((("", 1),))
            continue
        while prod < s:
            if i >= len(atoms):
                return None
            role, size = atoms[i]
            if prod * size <= s and s % (prod * size) == 0:
                got.append(atoms[i])
                prod *= size
                i += 1
                continue
            need = s // prod
            if role or s % prod or size % need:
                return None
            got.append((role, need))
            atoms[i] = (role, size // need)
            prod = s
        out.append(tuple(a for a in got if a[1] != 1 or a[0]) or (("", s),))
    while i < len(atoms) and atoms[i][1] == 1:
        i += 1
    return out if i == len(atoms) else None
