"""Graph surgery shared by the transformer passes: cloning a layer, replacing parameters.

The math (what the new arrays are) is in :mod:`netmorph.morphs.transformer`; this module
places arrays in the graph and records their lineage.
"""

from __future__ import annotations

import numpy as np

from ..errors import PreconditionError, StructureError
from ..ir import Graph, Node, Value
from ..morphs.transformer import tile_index
from ..structure.axes import Atom, AxisRoles, axis_size
from ..structure.constants import constant_array
from ..structure.transformer import TransformerLayer, TransformerStructure, reachable, recognise_transformer
from .base import PassContext


def transformer_of(graph: Graph, pass_name: str) -> TransformerStructure:
    """The recognised transformer, or a :class:`PreconditionError` saying why there is none."""
    try:
        return recognise_transformer(graph)
    except StructureError as e:
        raise PreconditionError(f"{pass_name}: not a recognised transformer: {e}") from None


RELAID_WHY = "Swin-style windows (the MLP reads the attention through a Reshape)"


def refuse_relaid(st: TransformerStructure, pass_name: str, what: str) -> None:
    """A :class:`PreconditionError` when a layer's MLP reads its attention through channels-last
    Reshapes (``TransformerLayer.relaid``): ``what`` says what the pass would have to rewrite there."""
    for lay in st.layers:
        if lay.relaid:
            raise PreconditionError(f"{pass_name}: layer {lay.index}: {RELAID_WHY}; {what}")


def parse_layers(spec, count: int, what: str) -> list[int]:
    """Layer indices from ``None`` (all), an int, or ``"0,2,3"``; negative ones count from the end."""
    if spec is None or spec == "all":
        return list(range(count))
    try:
        items = [int(s) for s in str(spec).split(",") if s.strip()]
    except ValueError:
        raise PreconditionError(f"{what}: {spec!r} is not a layer index or a comma list of them") from None
    out = []
    for i in items:
        if not -count <= i < count:
            raise PreconditionError(f"{what}: layer {i} does not exist (the model has {count} layers)")
        out.append(i % count)
    return sorted(set(out))


def set_param(graph: Graph, ctx: PassContext, node: Node, slot: int, array: np.ndarray, *, kind: str,
              parent: Value | None = None, hint: str | None = None, **lineage) -> Value:
    """Give ``node`` input ``slot`` a new parameter holding ``array``; record its lineage.

    A fresh parameter (never an in-place change) keeps weights that exporters shared between
    nodes apart.
    """
    old = node.inputs[slot]
    base = hint or (parent.name if parent is not None else old.name if old is not None else node.name)
    v = graph.add_parameter(base, np.ascontiguousarray(array))
    node.set_input(slot, v)
    ctx.derive(v.name, kind, None if parent is None else parent.name, **lineage)
    return v


def _resolved(v: Value | None) -> Value | None:
    for _ in range(4):
        if v is None or v.producer is None or v.producer.op_type != "Identity":
            break
        v = v.producer.inputs[0]
    return v


def clone_layer(graph: Graph, ctx: PassContext, st: TransformerStructure, layer: TransformerLayer,
                suffix: str) -> tuple[dict[int, Node], Value]:
    """Insert a copy of ``layer`` reading the layer's output; returns ``(node map, copy's output)``.

    The copy holds its own copies of every weight (lineage ``same``) and the shape arithmetic
    computed from the layer's values; shape arithmetic and masks computed elsewhere stay shared.
    The layer's former readers are not rewired (the caller decides what reads the copy).
    """
    flow = st.flow
    region = {id(n) for n in layer.nodes}
    produced = {id(o) for n in layer.nodes for o in n.outputs}
    data_ids = {id(n) for n in flow.data_nodes}
    # shape arithmetic computed from the layer's own values, that the layer reads
    aux: dict[int, Node] = {}
    for n in graph.nodes:
        if id(n) in region or id(n) in data_ids:
            continue
        if any(v is not None and (id(v) in produced or id(v.producer) in aux) for v in n.inputs
               if v is not None and v.producer is not None):
            aux[id(n)] = n
    needed: set[int] = set()
    frontier = [v for n in layer.nodes for v in n.inputs if v is not None]
    while frontier:
        v = frontier.pop()
        p = v.producer
        if p is not None and id(p) in aux and id(p) not in needed:
            needed.add(id(p))
            frontier.extend(x for x in p.inputs if x is not None)
    nodes = [n for n in graph.nodes if id(n) in region or id(n) in needed]
    out_old = layer.output
    vmap: dict[int, Value] = {id(layer.input): out_old}
    nmap: dict[int, Node] = {}
    copies: dict[int, Value] = {}
    new_nodes = []
    for n in nodes:
        ins = []
        for v in n.inputs:
            if v is None:
                ins.append(None)
                continue
            if id(v) in vmap:
                ins.append(vmap[id(v)])
                continue
            p = _resolved(v)
            if p is not None and p.const is not None and p.const.array.dtype.kind == "f" \
                    and p.const.array.size > 1:
                if id(p) not in copies:
                    c = graph.add_parameter(f"{p.name}{suffix}", p.const.array.copy())
                    ctx.derive(c.name, "same", p.name)
                    copies[id(p)] = c
                ins.append(copies[id(p)])
                continue
            ins.append(v)
        m = graph.create_node(n.op_type, ins, dict(n.attributes), name=f"{n.name}{suffix}",
                              output_names=[f"{o.name}{suffix}" for o in n.outputs],
                              output_types=[o.type for o in n.outputs], domain=n.domain)
        for o, mo in zip(n.outputs, m.outputs, strict=True):
            vmap[id(o)] = mo
        nmap[id(n)] = m
        new_nodes.append(m)
    anchor = max(nodes, key=graph.nodes.index)
    graph.insert_after(anchor, *new_nodes)
    return nmap, vmap[id(out_old)]


def rewire(graph: Graph, uses: list[tuple[Node, int]], new: Value, old: Value) -> None:
    """The readers ``uses`` (recorded before the surgery) of ``old`` read ``new`` instead.

    Where ``old`` is a graph output (the last layer's output is the model's output), ``new``
    takes its place under its name (``old`` is renamed), so the child's interface is the parent's.
    """
    for reader, idx in uses:
        reader.set_input(idx, new)
    for i, v in enumerate(graph.outputs):
        if v is old:
            name = old.name
            graph.rename_value(old, graph.unique_value_name(f"{name}_inner"))
            graph.rename_value(new, name)
            new.type = old.type
            graph.outputs[i] = new


def shape_param(graph: Graph, ctx: PassContext, hint: str, array: np.ndarray) -> Value:
    """A new integer shape constant (reshape target, split sizes), recorded as ``new``."""
    v = graph.add_parameter(hint, np.asarray(array))
    ctx.derive(v.name, "new", note="shape constant")
    return v


def _const(v: Value | None) -> np.ndarray | None:
    """The value of a constant ``v`` (a parameter, a ``Constant`` node, or an Identity of one)."""
    return constant_array(v, transpose=False)


def retarget_reshape(graph: Graph, ctx: PassContext, node: Node, old: int, new: int, what: str,
                     position: int = -1) -> None:
    """Make ``node`` (a ``Reshape``) produce ``new`` where its target says ``old`` at ``position``.

    The target is a constant or a ``Concat`` whose piece holding that entry is constant (the
    run-time batch and sequence sizes in the other pieces stay as they are); ``-1`` / ``0``
    entries need no change. The new target is a new constant (and a new ``Concat``), since
    exporters share shape constants between nodes.
    """
    target = node.inputs[1]
    arr = _const(target)
    if arr is not None:
        vals = arr.reshape(-1)
        fixed = _retargeted(vals, position, old, new,
                            f"{what}: Reshape {node.name!r} targets {vals.tolist()}; expected {old} at "
                            f"position {position}")
        if fixed is not None:
            node.set_input(1, shape_param(graph, ctx, f"{node.name}_shape", fixed))
        return
    cat = target.producer
    if cat is None or cat.op_type != "Concat":
        raise PreconditionError(f"{what}: the target shape of Reshape {node.name!r} is computed by "
                                f"{cat.op_type if cat else 'a graph input'}, which cannot be retargeted")
    # find the piece and offset holding `position` (pieces of unknown length only before it)
    pieces = list(cat.inputs)
    if position >= 0:
        raise PreconditionError(f"{what}: Reshape {node.name!r}: only the trailing entries of a computed "
                                "target can be retargeted")
    offset = position
    for k in range(len(pieces) - 1, -1, -1):
        a = _const(pieces[k])
        if a is None:
            raise PreconditionError(f"{what}: the target of Reshape {node.name!r} is computed at run time "
                                    f"where it must say {old}")
        a = a.reshape(-1)
        if -offset <= a.size:
            fixed = _retargeted(a, offset, old, new, f"{what}: Reshape {node.name!r} targets {a.tolist()} "
                                f"in its last piece; expected {old}")
            if fixed is None:
                return
            piece = shape_param(graph, ctx, f"{node.name}_shape_piece", fixed)
            ins = pieces[:k] + [piece] + pieces[k + 1:]
            c2 = graph.create_node("Concat", ins, dict(cat.attributes), name=f"{cat.name}_retarget",
                                   output_types=[target.type])
            graph.insert_before(node, c2)
            node.set_input(1, c2.outputs[0])
            return
        offset += a.size
    raise PreconditionError(f"{what}: Reshape {node.name!r}: no entry at position {position}")


def _retargeted(vals: np.ndarray, index: int, old: int, new: int, mismatch: str) -> np.ndarray | None:
    """``vals`` with ``new`` at ``index`` where it says ``old``; ``None`` where it says ``-1`` / ``0``
    (inferred / copied, nothing to change); a :class:`PreconditionError` (``mismatch``) otherwise."""
    if vals[index] in (-1, 0) and vals[index] != old:
        return None
    if vals[index] != old:
        raise PreconditionError(mismatch)
    fixed = vals.copy()
    fixed[index] = new
    return fixed


def between(flow, start: Value, stop: Node) -> list[Node]:
    """Data nodes on paths from ``start`` to ``stop``'s inputs (``stop`` excluded), in graph order."""
    ahead = {id(n) for n in reachable(flow, start, stop)}
    behind: set[int] = set()
    frontier = [v for v in stop.inputs if v is not None]
    while frontier:
        v = frontier.pop()
        p = v.producer
        if p is None or id(p) in behind or id(p) not in ahead:
            continue
        behind.add(id(p))
        frontier.extend(x for x in p.inputs if x is not None)
    return [n for n in flow.graph.nodes if id(n) in behind]


def forget_types(nodes) -> None:
    """Drop the stored types of ``nodes``' outputs (widths changed): inference fills them anew."""
    for n in nodes:
        for o in n.outputs:
            if not o.is_graph_output:
                o.type = None


def _computed_heads(graph: Graph, ctx: PassContext, v: Value, heads: tuple[int, int], seen: set[int],
                    ops: tuple[str, ...]) -> None:
    """In the shape arithmetic computing ``v``: ``ops`` (``Mul``: batch x heads; ``Div``: a width over
    the heads) by the head count get the new count."""
    p = v.producer
    if p is None or id(p) in seen or p.op_type in ("Shape", "Size") or v.const is not None:
        return
    seen.add(id(p))
    if p.op_type in ops:
        for k, x in enumerate(p.inputs):
            c = _const(x)
            if c is not None and c.size == 1 and int(c.reshape(-1)[0]) == heads[0] and c.dtype.kind in "iu":
                new = np.full(c.shape, heads[1], c.dtype)
                p.set_input(k, shape_param(graph, ctx, f"{p.name}_heads", new))
    for x in p.inputs:
        if x is not None:
            _computed_heads(graph, ctx, x, heads, seen, ops)


def plan_targets(graph: Graph, flow, reshapes: list[Node], width: int, what: str) -> list[tuple[Node, list]]:
    """Constant targets for ``reshapes`` whose last output dim is ``width`` but is computed at run
    time from a value that does not grow (the stream's width read with ``Shape``).

    Call before changing the graph. Two probes of the parent (two batch sizes) tell each output
    dim: one that follows the input's dim at the same place becomes ``0`` (copy), one other
    varying dim ``-1``, static dims stay; the last entry is ``None``, for the new width
    (:func:`apply_targets`).
    """
    return plan_targets_layers(graph, flow, [(reshapes, width, what)])[0]


def plan_targets_layers(graph: Graph, flow, layers: list[tuple[list[Node], int, str]]
                        ) -> list[list[tuple[Node, list]]]:
    """:func:`plan_targets` for several ``(reshapes, width, what)`` at once, from one pair of probes
    of the whole graph (not one pair per layer)."""
    from ..structure.transformer import probe_shapes

    todos = []
    for reshapes, _, _ in layers:
        todo = []
        for n in reshapes:
            if _const(n.inputs[1]) is not None or n.attr("allowzero", 0):
                continue
            cat = n.inputs[1].producer
            if cat is not None and cat.op_type == "Concat" and _const(cat.inputs[-1]) is not None:
                continue  # a constant last piece: retarget_shapes handles it
            todo.append(n)
        todos.append(todo)
    names = list(dict.fromkeys(x for todo in todos for n in todo
                               for x in (n.inputs[0].name, n.outputs[0].name)))
    probes = probe_shapes(graph, names, flow, runs=2)[0] if names else None
    return [_targets(todo, probes, width, what) for todo, (_, width, what) in zip(todos, layers, strict=True)]


def _targets(todo: list[Node], probes, width: int, what: str) -> list[tuple[Node, list]]:
    out = []
    for n in todo:
        (i1, o1), (i2, o2) = ((p[n.inputs[0].name], p[n.outputs[0].name]) for p in probes)
        if not o1 or o1[-1] != width:
            continue
        target: list = []
        free = 0
        for k in range(len(o1)):
            if k == len(o1) - 1:
                target.append(None)
            elif o1[k] == o2[k]:
                target.append(int(o1[k]))
            elif k < len(i1) and (i1[k], i2[k]) == (o1[k], o2[k]):
                target.append(0)
            else:
                target.append(-1)
                free += 1
        if free > 1:
            raise PreconditionError(f"{what}: Reshape {n.name!r} computes {len(o1)} dims at run time in a "
                                    "way that cannot be written as a constant target")
        out.append((n, target))
    return out


def apply_targets(graph: Graph, ctx: PassContext, plans: list[tuple[Node, list]], new_width: int) -> None:
    """Give each planned Reshape its constant target, ending in ``new_width``."""
    for n, target in plans:
        t = [new_width if x is None else x for x in target]
        n.set_input(1, shape_param(graph, ctx, f"{n.name}_shape", np.asarray(t, dtype=np.int64)))


def _piece_length(v: Value) -> int | None:
    a = _const(v)
    if a is not None:
        return int(a.size)
    t = v.type
    if t is not None and t.shape is not None and len(t.shape) == 1 and isinstance(t.shape[0], int):
        return int(t.shape[0])
    p = v.producer
    if p is not None and p.op_type == "Shape" and p.attr("end") is not None:
        return int(p.attr("end")) - int(p.attr("start", 0))
    return None


def retarget_entry(graph: Graph, ctx: PassContext, node: Node, slot: int, position: int, old: int, new: int,
                   what: str) -> None:
    """``node``'s shape operand ``slot`` (an ``Expand`` or ``Reshape`` target) says ``new`` at
    ``position`` (counted from the start) where it says ``old``: found by position, not by value.

    The target is a constant, or a ``Concat`` whose pieces' lengths are known (constants, or
    typed 1-D shape values) and whose piece holding ``position`` is constant.
    """
    target = node.inputs[slot]
    arr = _const(target)
    if arr is not None:
        fixed = _retargeted(arr.reshape(-1), position, old, new,
                            f"{what}: {node.op_type} {node.name!r} targets {arr.tolist()}; expected {old} at "
                            f"position {position}")
        if fixed is not None:
            node.set_input(slot, shape_param(graph, ctx, f"{node.name}_shape", fixed))
        return
    cat = target.producer
    if cat is None or cat.op_type != "Concat":
        raise PreconditionError(f"{what}: the target shape of {node.op_type} {node.name!r} is computed by "
                                f"{cat.op_type if cat else 'a graph input'}, which cannot be retargeted")
    pieces, start = list(cat.inputs), 0
    for k, piece in enumerate(pieces):
        size = _piece_length(piece)
        if size is None:
            raise PreconditionError(f"{what}: the target of {node.op_type} {node.name!r} has a piece of "
                                    f"unknown length before position {position}")
        if start + size > position:
            a = _const(piece)
            if a is None:
                raise PreconditionError(f"{what}: the target of {node.op_type} {node.name!r} is computed at "
                                        f"run time where it must say {old}")
            fixed = _retargeted(a.reshape(-1), position - start, old, new,
                                f"{what}: {node.op_type} {node.name!r} targets {a.tolist()} at {position}; "
                                f"expected {old}")
            if fixed is None:
                return
            ins = pieces[:k] + [shape_param(graph, ctx, f"{node.name}_shape_piece", fixed)] + pieces[k + 1:]
            c2 = graph.create_node("Concat", ins, dict(cat.attributes), name=f"{cat.name}_retarget",
                                   output_types=[target.type])
            graph.insert_before(node, c2)
            node.set_input(slot, c2.outputs[0])
            return
        start += size
    raise PreconditionError(f"{what}: {node.op_type} {node.name!r}: no entry at position {position}")


# -- which axis carries what: the data flow's axis roles, for rewriting shape constants by position --


def _grown(axis: tuple[Atom, ...], grow: dict, what: str) -> int:
    total = 1
    for role, size in axis:
        if role in grow:
            total *= int(grow[role](size))
        elif "/part" in role and any(r in grow for r in role.split("/")[0].split("+")):
            raise PreconditionError(f"{what}: a slice of a growing axis ({role.split('/')[0]}) is "
                                    "reshaped; its new size cannot be told")
        else:
            total *= size
    return total


def retarget_shapes(graph: Graph, ctx: PassContext, roles: AxisRoles, nodes: list[Node], grow: dict,
                    what: str, heads: tuple[int, int] | None = None,
                    head_ops: tuple[str, ...] = ("Mul",)) -> int:
    """Rewrite the shape constants of the ``Reshape`` targets and ``Split`` sizes among ``nodes`` BY
    POSITION: an entry changes where the output axis it sizes holds a growing factor (``grow``:
    role -> new size of a factor of that role), found by :class:`AxisRoles` from the data flow,
    never because its value equals a width. A constant entry must then say the parent's size
    (or ``-1`` / ``0``), else the pass refuses. Targets computed at run time keep their
    arithmetic; ``head_ops`` by the head count ``heads[0]`` in it (``Mul``: batch x heads;
    ``Div``: a width over the heads) get ``heads[1]``. New constants are new parameters.
    Returns how many constants changed."""
    changed = 0
    for n in nodes:
        if n.op_type == "Split":
            changed += _retarget_split(graph, ctx, roles, n, grow, what)
            continue
        if n.op_type != "Reshape":
            continue
        out = roles.label(n.outputs[0])
        if out is None:
            raise PreconditionError(
                f"{what}: cannot tell which axes of Reshape {n.name!r} hold a growing width or head count: "
                f"the data flow's axis roles stop at {roles.unknown(n.outputs[0])}")
        old = [int(s) for s in roles.shapes[n.outputs[0].name]]
        new = [_grown(ax, grow, f"{what}: Reshape {n.name!r}") for ax in out]
        diff = [k for k in range(len(old)) if old[k] != new[k]]
        target = n.inputs[1]
        arr = _const(target)
        if arr is not None:
            vals = arr.reshape(-1).copy()
            for k in diff:
                vals[k] = _entry(vals[k], k, old[k], new[k], n, roles, grow, what)
            if not np.array_equal(vals, arr.reshape(-1)):
                n.set_input(1, shape_param(graph, ctx, f"{n.name}_shape", vals.reshape(arr.shape)))
                changed += 1
            continue
        cat = target.producer
        if cat is None or cat.op_type != "Concat":
            continue  # computed whole: plan_targets rebuilds it where it must change
        pieces, fixed, start = list(cat.inputs), [], 0
        lengths = [_piece_length(p) for p in pieces]
        for p, size in zip(pieces, lengths, strict=True):
            a = _const(p)
            if a is None:
                fixed.append(p)
                if heads is not None:
                    _computed_heads(graph, ctx, p, heads, set(), head_ops)
            else:
                vals = a.reshape(-1).copy()
                if None not in lengths:
                    for k in diff:
                        if start <= k < start + size:
                            vals[k - start] = _entry(vals[k - start], k, old[k], new[k], n, roles, grow, what)
                elif diff:
                    raise PreconditionError(f"{what}: the target of Reshape {n.name!r} has pieces of unknown "
                                            "length: the entry to rewrite cannot be placed")
                if not np.array_equal(vals, a.reshape(-1)):
                    fixed.append(shape_param(graph, ctx, f"{n.name}_shape_piece", vals.reshape(a.shape)))
                    changed += 1
                else:
                    fixed.append(p)
            start += size or 0
        if any(f is not p for f, p in zip(fixed, pieces, strict=True)):
            c2 = graph.create_node("Concat", fixed, dict(cat.attributes), name=f"{cat.name}_grown",
                                   output_types=[target.type])
            graph.insert_before(n, c2)
            n.set_input(1, c2.outputs[0])
    return changed


def _entry(val, k: int, old: int, new: int, n: Node, roles: AxisRoles, grow: dict, what: str):
    """The new target entry at position ``k`` (the parent's ``old`` size becomes ``new``)."""
    if int(val) == old:
        return new
    if int(val) == -1:
        return val  # inferred from the others
    if int(val) == 0:  # copied from the input's axis k: right when that axis grows alike
        x = roles.label(n.inputs[0])
        if x is not None and k < len(x) and _grown(x[k], grow, what) == new:
            return val
    raise PreconditionError(f"{what}: Reshape {n.name!r} says {int(val)} at position {k}, where the data "
                            f"flow says the parent's size {old} (to become {new})")


def _retarget_split(graph: Graph, ctx: PassContext, roles: AxisRoles, n: Node, grow: dict, what: str) -> int:
    x = roles.label(n.inputs[0])
    outs = [roles.label(o) for o in n.outputs]
    if x is None or any(o is None for o in outs):
        raise PreconditionError(f"{what}: cannot tell which axis of Split {n.name!r} holds a growing width: "
                                f"the data flow's axis roles stop at {roles.unknown(n.outputs[0])}")
    axis = int(n.attr("axis", 0)) % len(x)
    old = [axis_size(o[axis]) for o in outs]
    new = [_grown(o[axis], grow, f"{what}: Split {n.name!r}") for o in outs]
    if old == new:
        return 0
    if n.attr("split") is not None:
        n.set_attr("split", [int(v) for v in new])
        return 1
    if len(n.inputs) > 1 and n.inputs[1] is not None:
        c = _const(n.inputs[1])
        if c is None:
            raise PreconditionError(f"{what}: Split {n.name!r} takes its sizes computed at run time")
        n.set_input(1, shape_param(graph, ctx, f"{n.name}_split", np.asarray(new, dtype=c.dtype)))
        return 1
    if len(set(new)) != 1:
        raise PreconditionError(f"{what}: Split {n.name!r} splits equally but its pieces grow unequally")
    return 0


def times(n: int):
    """A growth rule: a factor of size ``s`` becomes ``n·s``."""
    return lambda s: n * s


def plus(k: int):
    """A growth rule: a factor of size ``s`` becomes ``s + k``."""
    return lambda s: s + k


def attention_atoms(att, ins, fused: bool) -> dict[int, tuple[Atom, ...]]:
    """``id(node) -> atoms`` of each in-projection's output features: ``[Q | K | V]`` blocks of
    heads of units (fused), heads of ``[q k v]`` blocks of units (fused per head, ``qkv_layout ==
    "heads"``: GPT-NeoX, Falcon), heads of units, or K/V heads of units (grouped-query attention); and
    each K/V repeat's new axis (query heads per group)."""
    h, dh, width = att.heads, att.head_size, att.out_proj.in_features
    out: dict[int, tuple] = {}
    for lin in ins:
        if fused and att.qkv_layout == "heads":
            out[id(lin.node)] = (("head", h), ("blk", 3), ("unit", dh))
        elif fused:
            out[id(lin.node)] = (("blk", 3), ("head", h), ("unit", dh))
        elif lin.out_features == width:
            out[id(lin.node)] = (("head", h), ("unit", dh))
        else:
            out[id(lin.node)] = (("kv", lin.out_features // dh), ("unit", dh))
    if att.kv_heads is not None and att.kv_heads < h:
        for expand, axis in att.repeat_kv:
            out[id(expand)] = (axis, ("rep", h // att.kv_heads))
    return out


def role_index(axis: tuple[Atom, ...], n: int, grow: dict, what: str) -> np.ndarray | None:
    """The HyperCloning gather index of an axis made of ``axis``'s factors: the ``n`` copies lie just
    outside the outermost growing factor (``[h, h]`` for the stream, ``[Q, Q | K, K | V, V]`` for
    fused heads, each head's units repeated in place when the head size grows); ``None`` when no
    factor grows."""
    sizes = [s for _, s in axis]
    for i, (role, _) in enumerate(axis):
        if role in grow:
            return tile_index(axis_size(axis), n, int(np.prod(sizes[:i], dtype=np.int64)))
        if "/part" in role and any(r in grow for r in role.split("/")[0].split("+")):
            raise PreconditionError(f"{what}: a parameter holds a slice of a growing axis ({role})")
    return None
