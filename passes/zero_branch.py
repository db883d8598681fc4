"""Graph surgery of generic deepening: zero-branch unit copies, fresh zero-branch units, identity convs.

- :func:`copy_residual_unit`: after a value ``y``, insert a copy of a residual unit (same ops,
  fresh names, weights copied or freshly initialised) reading ``y``, with an identity shortcut,
  whose branch output is made exactly zero by :func:`zero_branch_output`: ``y + 0 = y`` whatever
  the branch holds. Trailing activations of the unit are copied when they are idempotent
  (``Relu``, ``Clip``: ``act(act(z)) = act(z)``), so the copy ends like the original.
- :func:`insert_fresh_unit`: after a value, a new unit ``y + conv(act(conv(y)))`` with the last
  conv zero (used after concat regions, where there is no residual unit to copy).
- :func:`insert_identity_conv`: after a conv, identity BN (optional) -> identity PReLU -> an
  identity conv of the same groups and dilation (for convs the splitter refuses).

The numbers (identity kernels, zeros, He-normal kernels) come from :mod:`netmorph.morphs.deepen`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import PreconditionError
from ..ir import Graph, Node, Value
from ..morphs.deepen import he_normal, identity_kernel, zeros_like
from ..structure.constants import constant_array
from ..structure.ops import GATE_OPS, IDEMPOTENT_OPS, NORM_OPS, ZERO_PRESERVING_OPS
from .base import PassContext
from .layers import channels_of, identity_bn_node, identity_prelu_node, insert_chain_after

INIT_MODES = ("copy", "fresh")


def _param_value(v: Value) -> Value | None:
    """The parameter ``v`` is, or is an ``Identity`` (chain) of; else ``None``."""
    for _ in range(4):
        if v.const is not None:
            return v
        p = v.producer
        if p is None or p.op_type != "Identity" or p.inputs[0] is None:
            return None
        v = p.inputs[0]
    return None


def _transposed_param(v: Value) -> Value | None:
    """``v`` when it is a ``Transpose`` of a parameter (TorchScript exports without constant folding
    write a linear's weight so), else ``None``."""
    p = v.producer
    if v.const is None and p is not None and p.op_type == "Transpose" and p.inputs[0] is not None \
            and _param_value(p.inputs[0]) is not None:
        return v
    return None


def _fresh_param(node: Node, index: int, arr, ctx: PassContext):
    """A freshly initialised version of input ``index`` of ``node`` (weights He, biases 0, norms unit)."""
    op = node.op_type
    if op in NORM_OPS:
        # scale 1 (input 1), and for BatchNorm running variance 1 (input 4); bias and mean 0
        return np.ones_like(arr) if index == 1 or (op == "BatchNormalization" and index == 4) \
            else zeros_like(arr)
    if op in ("Conv", "Gemm", "MatMul") and getattr(arr, "ndim", 0) >= 2:
        shape = arr.shape
        if op == "MatMul" or (op == "Gemm" and not node.attr("transB", 0)):
            w = he_normal((shape[-1], *shape[:-1]), ctx.rng, arr.dtype)
            return w.reshape(shape[-1], -1).T.reshape(shape)
        return he_normal(shape, ctx.rng, arr.dtype)
    if op in ("Conv", "Gemm") and index == 2:
        return zeros_like(arr)
    return arr


def entry_uses(unit: Any) -> set[tuple[int, int]]:
    """``(id(node), input index)`` of the unit's branch and join inputs that read its entry or its
    shortcut's output. Taken before any surgery, it keeps naming them when an insertion before
    the unit has rerouted its entry."""
    r = unit.residual
    short_out = r.shortcut[-1].outputs[0] if r.shortcut else r.entry
    return {(id(n), i) for n in [*r.branch, r.add] for i, v in enumerate(n.inputs)
            if v is r.entry or (n is r.add and v is short_out)}


def idempotent_trailing(unit: Any, y: Value) -> list[Node]:
    """The unit's trailing activations a copy inserted after ``y`` may repeat exactly.

    All of them must be idempotent (``Relu``, ``Clip``: ``act(act(z)) = act(z)``) and ``y`` must be
    the output of the same activation (same op, same constant operands), so that
    ``act(y + 0) = y``; otherwise the copy ends at its ``Add`` (a linear-bottleneck copy).
    """
    chain: list[Node] = []
    last = unit.residual.output
    for n in unit.trailing:
        if n.op_type not in IDEMPOTENT_OPS or last not in n.inputs:
            return []
        chain.append(n)
        last = n.outputs[0]
    if not chain or last is not unit.output:
        return []
    p = y.producer
    tail = chain[-1]
    if p is None or p.op_type != tail.op_type or p.attributes.keys() != tail.attributes.keys():
        return []
    for a, b in zip(p.inputs[1:], tail.inputs[1:], strict=False):
        pa, pb = constant_array(a), constant_array(b)
        if (pa is None) != (pb is None) or (pa is not None and not np.array_equal(pa, pb)):
            return []
    if len(p.inputs) != len(tail.inputs) or any(p.attr(k) != tail.attr(k) for k in p.attributes):
        return []
    return chain


def copy_residual_unit(graph: Graph, ctx: PassContext, unit: Any, y: Value, *, name: str,
                       init: str = "copy", uses: set[tuple[int, int]] | None = None
                       ) -> tuple[list[Node], Value, str]:
    """Insert after ``y`` a zero-branch copy of stage unit ``unit`` (a residual one).

    Returns ``(new nodes, new output, what was zeroed)``. ``y`` must have the shape of the
    unit's entry (the caller picks a unit with an identity or ``r·Id`` shortcut of the same
    width and resolution). ``uses``: :func:`entry_uses` of the unit, taken before any surgery.
    """
    r = unit.residual
    uses = entry_uses(unit) if uses is None else uses
    trailing = idempotent_trailing(unit, y)
    last = trailing[-1].outputs[0] if trailing else r.output
    vmap: dict[int, Value] = {}
    pmap: dict[int, Value] = {}
    new: list[Node] = []
    for n in [*r.branch, r.add, *trailing]:
        ins: list[Value | None] = []
        for i, v in enumerate(n.inputs):
            if v is None:
                ins.append(None)
            elif (id(n), i) in uses:
                ins.append(y)  # the entry; at the join: the copy's shortcut is the identity
            elif id(v) in vmap:
                ins.append(vmap[id(v)])
            elif _transposed_param(v) is not None:  # a linear weight transposed in the graph
                t = v.producer
                src = _param_value(t.inputs[0])
                if id(v) not in pmap:
                    perm = list(t.attr("perm") or range(src.const.array.ndim)[::-1])
                    arr = src.const.array
                    if init == "fresh":
                        eff = _fresh_param(n, i, np.transpose(arr, perm), ctx)
                        pv = graph.add_parameter(f"{name}/{src.name}", np.transpose(eff, np.argsort(perm)))
                        ctx.derive(pv.name, "new", note="fresh initialisation")
                    else:
                        pv = graph.add_parameter(f"{name}/{src.name}", src.const)
                        ctx.derive(pv.name, "same", parent=src.name, note="copied unit")
                    tn = graph.create_node("Transpose", [pv], dict(t.attributes), name=f"{name}/{t.name}",
                                           output_types=[v.type])
                    new.append(tn)
                    pmap[id(v)] = tn.output
                ins.append(pmap[id(v)])
            elif _param_value(v) is not None:  # the copy owns its weights (also those behind an Identity)
                src = _param_value(v)
                if id(src) not in pmap:
                    arr = src.const.array
                    fresh = init == "fresh"
                    val = _fresh_param(n, i, arr, ctx) if fresh else src.const
                    pv = graph.add_parameter(f"{name}/{src.name}", val)
                    if fresh and val is not arr:
                        ctx.derive(pv.name, "new", note="fresh initialisation")
                    else:
                        ctx.derive(pv.name, "same", parent=src.name, note="copied unit")
                    pmap[id(src)] = pv
                ins.append(pmap[id(src)])
            else:
                ins.append(v)  # weight plumbing or a side input: shared with the original
        m = graph.create_node(n.op_type, ins, dict(n.attributes), name=f"{name}/{n.name}",
                              num_outputs=len(n.outputs), domain=n.domain,
                              output_types=[o.type for o in n.outputs])
        for o, no in zip(n.outputs, m.outputs, strict=True):
            vmap[id(o)] = no
        new.append(m)
    members = {id(m) for m in new}
    zeroed = "; ".join(zero_branch_output(graph, ctx, vmap[id(t)], members, name) for t in r.branch_outputs)
    out = vmap[id(last)]
    insert_chain_after(graph, y, new, out)
    return new, out, zeroed


def zero_branch_output(graph: Graph, ctx: PassContext, v: Value, members: set[int], where: str) -> str:
    """Make ``v`` (a branch output) exactly zero by zeroing the layers it is computed from last.

    Walks back from ``v`` (:func:`plan_zero`): through ops that map zero to zero (reshapes,
    transposes, ``Relu`` / ``GELU`` / ``HardSwish``, pooling, a ``Slice`` or ``Split`` of a zero
    value), into every input of a ``Concat`` or of an ``Add`` / ``Sub`` of two activations, and
    into one operand of a ``Mul`` of two (an SE gate ``x·s`` or a SiLU ``x·σ(x)`` is zero when ``x``
    is: the gate stays finite); a bias ``Add`` on the way is zeroed too. It stops at the last
    norm (scale and bias), conv / linear (weight and bias) or constant scale (a layer scale).
    Returns a sentence naming what was zeroed; raises :class:`PreconditionError` when no such
    layer ends the branch.
    """
    plan = plan_zero(v, members, where)
    done = []
    for n, idx, what in plan:
        _zero_inputs(graph, ctx, n, idx)
        done.append(f"{n.op_type} {n.name!r} ({what})")
    return "zeroed " + ", ".join(done)


def plan_zero(v: Value, members: set[int], where: str, _depth: int = 0) -> list[tuple[Node, list[int], str]]:
    """``[(node, input indices to zero, what)]`` that make ``v`` exactly zero (nothing changed yet)."""
    n = v.producer
    if n is None or id(n) not in members or _depth > 64:
        raise PreconditionError(f"{where}: found no layer to zero at the end of the branch")
    op = n.op_type
    data = [i for i, x in enumerate(n.inputs) if x is not None and constant_array(x) is None]
    consts = [i for i, x in enumerate(n.inputs) if x is not None and constant_array(x) is not None]

    def back(i: int) -> list[tuple[Node, list[int], str]]:
        return plan_zero(n.inputs[i], members, where, _depth + 1)

    if op in NORM_OPS:
        return [(n, [i for i in (1, 2) if i < len(n.inputs) and n.inputs[i] is not None], "scale and bias")]
    if op in ("Conv", "Gemm", "MatMul", "ConvTranspose") and consts:
        return [(n, consts, "weight and bias" if len(consts) > 1 else "weight")]
    if op == "Mul" and len(data) == 1 and consts:
        return [(n, consts, "scale")]
    if op == "Add" and len(data) == 1 and consts:
        return [(n, consts, "bias"), *back(data[0])]
    if op == "Clip" and data and _clip_keeps_zero(n):
        return back(data[0])
    if op in ZERO_PRESERVING_OPS and data:
        return back(data[0])
    if op == "Div" and data and data[0] == 0:
        return back(0)
    if op in ("Concat", "Add", "Sub") and data:
        plan: list = []
        for i in data:
            for step in back(i):
                if all(step[0] is not p[0] for p in plan):
                    plan.append(step)
        return plan
    if op == "Mul" and len(data) == 2:
        # x·gate(…): zero the operand that is not the gate (either works while the other is finite)
        order = sorted(data, key=lambda i: n.inputs[i].producer is not None
                       and n.inputs[i].producer.op_type in GATE_OPS)
        last: PreconditionError | None = None
        for i in order:
            try:
                return back(i)
            except PreconditionError as e:
                last = e
        raise last
    raise PreconditionError(
        f"{where}: the copied branch ends in {op} {n.name!r}; there is no last norm, conv, linear "
        "or scale to zero before it"
    )


def _clip_keeps_zero(n: Node) -> bool:
    lo = constant_array(n.inputs[1]) if len(n.inputs) > 1 and n.inputs[1] is not None else None
    hi = constant_array(n.inputs[2]) if len(n.inputs) > 2 and n.inputs[2] is not None else None
    lo = n.attr("min") if lo is None and n.attr("min") is not None else lo
    hi = n.attr("max") if hi is None and n.attr("max") is not None else hi
    return (lo is None or float(np.asarray(lo).reshape(-1)[0]) <= 0) and \
        (hi is None or float(np.asarray(hi).reshape(-1)[0]) >= 0)


def _zero_inputs(graph: Graph, ctx: PassContext, n: Node, indices: list[int]) -> None:
    for i in indices:
        old = n.inputs[i]
        arr = constant_array(old)
        z = graph.add_parameter(f"{n.name}.zero{i}", zeros_like(arr))
        n.set_input(i, z)
        copied = ctx.lineage.records.pop(old.name, None)
        # the zeros replace the copied tensor: name its parent, so the role it plays (a BN's scale)
        # can be told (netmorph.hf.mapping.place writes the copy back as a checkpoint layer)
        parent = copied.parent if copied is not None else None
        ctx.derive(z.name, "new", parent=parent, note="zeroed: the branch output is exactly 0")


def insert_fresh_unit(graph: Graph, ctx: PassContext, y: Value, *, name: str,
                      bn: bool) -> tuple[list[Node], Value]:
    """After ``y`` insert ``y + conv2(relu([bn](conv1(y))))``.

    conv1 is 3x3 from C to ``max(C // 4, 1)`` channels, He-normal; conv2 is 1x1 back to C with
    zero weight and bias (so the unit is the identity, and costs about 2.5·C² weights).
    """
    from ..ir import TensorType
    from .layers import conv_node

    c = channels_of(y, name)
    m = max(c // 4, 1)
    dtype = y.type.dtype
    n_, _, h, w = y.type.shape
    mid = TensorType(y.type.elem_type, (n_, m, h, w))
    nodes = [conv_node(graph, y, he_normal((m, c, 3, 3), ctx.rng, dtype), None, name=f"{name}.conv1",
                       out_type=mid)]
    if bn:
        nodes.append(identity_bn_node(graph, nodes[-1].output, m, name=f"{name}.bn1", dtype=dtype))
    nodes.append(graph.create_node("Relu", [nodes[-1].output], name=f"{name}.relu", output_types=[mid]))
    nodes.append(conv_node(graph, nodes[-1].output, np.zeros((c, m, 1, 1), dtype), np.zeros(c, dtype),
                           name=f"{name}.conv2", out_type=y.type))
    add = graph.create_node("Add", [y, nodes[-1].output], name=f"{name}.add", output_types=[y.type])
    nodes.append(add)
    _record_new(ctx, nodes, "fresh zero-branch unit")
    insert_chain_after(graph, y, nodes, add.output)
    return nodes, add.output


def insert_identity_conv(graph: Graph, ctx: PassContext, conv: Node, *, mid_bn: bool) -> list[Node]:
    """After ``conv``: [identity BN] -> identity PReLU -> identity conv (same groups, dilation, kernel)."""
    where = f"conv {conv.name!r}"
    w = constant_array(conv.inputs[1])
    if w is None or w.ndim != 4:
        raise PreconditionError(f"{where}: an identity conv needs a constant 4-D weight")
    out = conv.outputs[0]
    c = channels_of(out, where)
    g = int(conv.attr("group", 1))
    if w.shape[0] != c or c % g:
        raise PreconditionError(f"{where}: its output has {c} channels but its weight {w.shape}")
    kernel = tuple(int(k) for k in w.shape[2:])
    kernel = tuple(k if k % 2 else max(k - 1, 1) for k in kernel)
    dil = tuple(int(d) for d in (conv.attr("dilations") or [1, 1]))
    dtype = w.dtype
    base = conv.name or out.name
    nodes: list[Node] = []
    x = out
    if mid_bn:
        nodes.append(identity_bn_node(graph, x, c, name=f"{base}.bn_id", dtype=dtype))
        x = nodes[-1].output
    nodes.append(identity_prelu_node(graph, x, c, name=f"{base}.prelu_id", dtype=dtype))
    wid = identity_kernel(c, g, kernel, dtype)
    pads = [dil[0] * (kernel[0] // 2), dil[1] * (kernel[1] // 2)] * 2
    wv = graph.add_parameter(f"{base}.id.weight", wid)
    attrs = {"kernel_shape": list(kernel), "pads": pads, "strides": [1, 1], "dilations": list(dil),
             "group": g}
    idc = graph.create_node("Conv", [nodes[-1].output, wv], attrs, name=f"{base}.id",
                            output_types=[out.type])
    nodes.append(idc)
    _record_new(ctx, nodes, "identity conv insertion")
    insert_chain_after(graph, out, nodes, idc.output)
    return nodes


def _record_new(ctx: PassContext, nodes: list[Node], note: str) -> None:
    """Lineage ``new`` (with ``note``) for every parameter the inserted ``nodes`` read."""
    for m in nodes:
        for v in m.inputs[1:]:
            if v is not None and v.const is not None:
                ctx.derive(v.name, "new", note=note)
