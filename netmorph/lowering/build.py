"""``lower(graph)``: an IR graph as a ``torch.fx.GraphModule`` of real torch modules."""

from __future__ import annotations

import torch
import torch.fx as fx

from ..errors import LoweringError
from ..ir import Graph
from .context import LoweringContext
from .dispatch import lower_node
from .values import Const, Sym

NAMES_KEY = "netmorph_names"
BINDINGS_KEY = "netmorph_bindings"


def lower(graph: Graph, *, dtype: torch.dtype = torch.float32) -> fx.GraphModule:
    """Lower ``graph`` to a ``torch.fx.GraphModule``.

    Every parametric IR node (Conv, BatchNormalization, PRelu, Gemm, MatMul with a constant
    2-D weight, the bias ``Add`` after such a MatMul) becomes one real module
    (``nn.Conv2d``, ``nn.BatchNorm2d``, ``nn.PReLU``, ``nn.Linear`` …) named after the node;
    the rest become functional calls. Non-trainable constant tensors are buffers or
    literals; shape computations are resolved to Python ints.

    Parameters
    ----------
    graph
        The graph to lower (not modified).
    dtype
        Floating dtype of the module's parameters and buffers.

    Returns
    -------
    torch.fx.GraphModule
        ``forward(*inputs)`` takes the graph inputs in order and returns the output tensor
        (a tuple when the graph has several outputs). ``gm.netmorph_names`` (also
        ``gm.meta["netmorph_names"]``) maps IR node names (an unnamed node: its first
        output's name) to module paths;
        ``gm.meta["netmorph_bindings"]`` says which module tensor holds which graph
        parameter (read by :func:`write_back`). The module starts in eval mode.

    Raises
    ------
    LoweringError
        An op or attribute the lowering does not support; the message names op and node.
    """
    if not dtype.is_floating_point:
        raise LoweringError(f"lowering dtype must be a floating dtype, not {dtype}")
    ctx = LoweringContext(graph, dtype)
    for v in graph.parameters:
        ctx.env[v.name] = Const(v.const.array, v.name)
    for v in graph.inputs:
        if v.const is not None:
            continue  # an initializer listed as input (IR < 4): treated as the constant
        ctx.env[v.name] = ctx.fx.placeholder(ctx.names.take(v.name))
    for node in graph.nodes:
        outs = lower_node(ctx, node)
        for v, out in zip(node.outputs, outs, strict=False):
            ctx.env[v.name] = out
    results = []
    for v in graph.outputs:
        out = ctx.env[v.name]
        if isinstance(out, Const):
            out = ctx.buffer(out, hint=f"output_{v.name}")
        elif isinstance(out, Sym):
            out = ctx.operand(out)
        results.append(out)
    ctx.fx.output(results[0] if len(results) == 1 else tuple(results))
    gm = fx.GraphModule(ctx.root, ctx.fx, class_name="NetmorphModule")
    if gm.graph.eliminate_dead_code():  # nodes whose results nobody reads (dead IR branches)
        gm.delete_all_unused_submodules()
        gm.recompile()
    live = {n.target for n in gm.graph.nodes if n.op == "call_module"}
    names = {k: p for k, p in ctx.node_modules.items() if p in live}
    gm.meta[NAMES_KEY] = names
    bindings = [tuple(b) for b in ctx.bindings if b.module in live]
    gm.meta[BINDINGS_KEY] = bindings
    keep = gm.meta.setdefault("_user_preserved_attributes", {})  # survive copy.deepcopy
    keep[NAMES_KEY], keep[BINDINGS_KEY] = names, bindings
    gm.netmorph_names = names  # plain attributes survive torch.save / pickling too
    gm.netmorph_bindings = bindings
    return gm.eval()
