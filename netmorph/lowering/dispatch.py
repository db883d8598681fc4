"""The converter registry, and the dispatch that picks a converter (or folding) for a node.

A converter is ``fn(ctx, node) -> Lowered | list[Lowered]`` (one entry per node output),
registered with :func:`converter`. Before a converter runs, a node whose inputs are all
constants is folded (:mod:`netmorph.lowering.fold`), so converters only see run-time tensors
in at least one input (or shape values).
"""

from __future__ import annotations

from collections.abc import Callable

from ..errors import LoweringError
from ..ir import Node
from .context import LoweringContext
from .fold import NOT_FOLDABLE, fold_node
from .names import label
from .values import Const, Lowered

Converter = Callable[[LoweringContext, Node], "Lowered | list[Lowered]"]
CONVERTERS: dict[str, Converter] = {}


def converter(*op_types: str) -> Callable[[Converter], Converter]:
    """Register ``fn`` as the converter of ``op_types``."""

    def register(fn: Converter) -> Converter:
        for op in op_types:
            CONVERTERS[op] = fn
        return fn

    return register


def lower_node(ctx: LoweringContext, node: Node) -> list[Lowered]:
    """Lower one node; returns one lowered value per output."""
    if node.domain not in ("", "ai.onnx"):
        raise LoweringError(
            f"{node.op_type} node {label(node)}: ops of domain {node.domain!r} cannot be lowered"
        )
    inputs = [ctx.get(v) for v in node.inputs]
    fn = CONVERTERS.get(node.op_type)
    known = [i for i in inputs if i is not None]
    if known and all(isinstance(i, Const) for i in known) and node.op_type not in NOT_FOLDABLE:
        return fold_node(node, inputs, ctx.opset)
    if fn is None:
        raise LoweringError(
            f"{node.op_type} node {label(node)}: op {node.op_type!r} is not supported by the lowering"
        )
    out = fn(ctx, node)
    outs = out if isinstance(out, list) else [out]
    if len(outs) < len(node.outputs):
        for extra in node.outputs[len(outs):]:
            if extra.uses() or extra.is_graph_output:
                raise LoweringError(
                    f"{node.op_type} node {label(node)}: output {extra.name!r} "
                    "(an optional output) is read, which the lowering does not support"
                )
    return outs


# Importing the modules registers their converters.
from . import ops_elementwise, ops_layers, ops_pooling, ops_shapes, ops_transformer  # noqa: E402, F401

__all__ = ["CONVERTERS", "converter", "lower_node"]
