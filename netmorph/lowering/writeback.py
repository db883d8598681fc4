"""``write_back(graph, module)``: trained weights of a lowered module, back in a new graph."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..errors import LoweringError
from ..ir import Graph
from .build import BINDINGS_KEY
from .context import Binding
from .fold import ORDER_PRESERVING


def _unwrap(module: nn.Module) -> nn.Module:
    """The lowered ``GraphModule`` inside DDP / ``torch.compile`` wrappers."""
    for _ in range(8):
        if isinstance(getattr(module, BINDINGS_KEY, None), list):
            return module
        inner = getattr(module, "_orig_mod", None) or getattr(module, "module", None)
        if not isinstance(inner, nn.Module):
            break
        module = inner
    raise LoweringError("write_back needs a module made by netmorph.lower (no binding table found)")


def _array(t: torch.Tensor) -> np.ndarray:
    return t.detach().to("cpu", torch.float32 if t.is_floating_point() else t.dtype).contiguous().numpy()


def write_back(graph: Graph, module: nn.Module) -> Graph:
    """A new graph like ``graph`` holding ``module``'s current parameters and BN statistics.

    ``graph`` is cloned, then every graph parameter that a module tensor holds (weights,
    biases, BN gamma/beta/running mean/var, PReLU slopes …) gets that tensor's values, in
    the parameter's own shape and dtype (float32 for float32 graphs, whatever the training
    dtype). A ``Gemm`` with ``transB=0`` gets its weight transposed back. Without training
    the result is bit-identical to ``graph``.

    When two nodes read one graph parameter (exporters deduplicate equal initializers) and
    training made their copies differ, the second node gets a parameter of its own.

    Parameters
    ----------
    graph
        The graph that was lowered (not modified).
    module
        The module :func:`netmorph.lowering.lower` returned, possibly wrapped in
        ``DistributedDataParallel`` or ``torch.compile``.

    Raises
    ------
    LoweringError
        ``module`` was not lowered from ``graph`` (names or shapes do not match).
    """
    gm = _unwrap(module)
    bindings = [Binding(*b) for b in getattr(gm, BINDINGS_KEY)]
    out = graph.clone()
    written: dict[str, np.ndarray] = {}
    for b in bindings:
        try:
            t = getattr(gm.get_submodule(b.module), b.attr)
            origin = out.value(b.origin)
            node = out.nodes[b.node]
        except (AttributeError, KeyError, IndexError) as e:
            raise LoweringError(f"write_back: the module does not match the graph ({e})") from None
        v = node.inputs[b.input_index] if b.input_index < len(node.inputs) else None
        vshape = None if v is None or v.type is None or v.type.shape is None else tuple(v.type.shape)
        if not isinstance(t, torch.Tensor) or v is None or vshape not in (None, b.shape):
            raise LoweringError(
                f"write_back: the module does not match the graph (node {node.name!r} input "
                f"{b.input_index} is not a {b.shape} parameter)"
            )
        a = _array(t)
        if b.transpose:
            a = a.reshape(b.shape[::-1]).T
        if origin.const is None or a.size != int(np.prod(origin.const.shape, dtype=np.int64)):
            raise LoweringError(
                f"write_back: {b.module}.{b.attr} has {a.size} values but parameter {b.origin!r} "
                f"has shape {None if origin.const is None else origin.const.shape}"
            )
        dtype = origin.const.type.dtype
        if b.origin not in written:
            new = np.ascontiguousarray(a.reshape(origin.const.shape), dtype=dtype)
            out.set_parameter(origin, new)
            written[b.origin] = new.reshape(-1)
        elif not np.array_equal(written[b.origin], a.reshape(-1).astype(dtype)):
            own = out.add_parameter(b.origin, np.ascontiguousarray(a.reshape(b.shape), dtype=dtype))
            node.set_input(b.input_index, own)
    _remove_dead_reshapes(out)
    return out


def _remove_dead_reshapes(g: Graph) -> None:
    """Drop reshape-like nodes left without readers after untying shared parameters."""
    changed = True
    while changed:
        changed = False
        for n in reversed(g.nodes):
            if n.op_type in ORDER_PRESERVING | {"Constant"} and all(
                not o.uses() and not o.is_graph_output for o in n.outputs
            ):
                g.remove_node(n)
                changed = True
    g.remove_unused_parameters()
