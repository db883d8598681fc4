"""``duplicate-block``: the ResNet morph, a new identity residual block after a block.

The new block is ``relu(r·x + BN(F2 ⊛ PReLU(BN(F1 ⊛ x))))`` with F1 ⊛ F2 = (1−r)·Id (dense,
exact factors from :func:`netmorph.solvers.identity_split`), identity BNs, an identity PReLU
in place of the middle ReLU (so the branch is linear when inserted) and the shortcut r·Id.
Its input follows a ReLU, so it is non-negative and the final ReLU changes nothing: the block
is the identity. For a standard ResNet (r = 1) the branch composes to 0 (both factors
non-zero) and the shortcut is the plain identity.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import PreconditionError, VerificationError
from ..ir import Graph, Node, Value
from .base import Option, Pass, PassContext
from .layers import (
    channels_of,
    conv_node,
    find_value,
    identity_bn_node,
    identity_prelu_node,
    insert_chain_after,
)
from .select import find_block, recognise, select_levels

NONNEGATIVE_OPS = ("Relu",)


def residual_ratio_of(graph: Graph, structure: Any, level: Any, given: float | None, what: str) -> float:
    """``given``, else the residual ratio of the level's (or the graph's) template blocks, else the
    ``netmorph.residual_ratio`` the builder stored in the model's metadata."""
    if given is not None:
        return float(given)
    pools = [list(level.blocks)] if level is not None else []
    pools.append([b for lv in structure.levels for b in lv.blocks])
    for pool in pools:
        for b in pool:
            if b.kind == "template" and b.residual_ratio is not None:
                return float(b.residual_ratio)
    for pool in pools:
        for b in pool:
            if b.residual_ratio is not None:
                return float(b.residual_ratio)
    meta = dict(graph.metadata_props).get("netmorph.residual_ratio")
    if meta is not None:
        try:
            return float(meta)
        except ValueError:
            pass
    raise PreconditionError(
        f"{what}: cannot tell the residual ratio r (no block states it); give --residual-ratio"
    )


def check_insertable(graph: Graph, value: Value, what: str) -> int:
    """The channel count after ``value``; refuse unless it is non-negative (follows a ReLU)."""
    c = channels_of(value, what)
    prod = value.producer
    if prod is None or prod.op_type not in NONNEGATIVE_OPS:
        src = "a graph input" if prod is None else f"{prod.op_type} {prod.name!r}"
        raise PreconditionError(
            f"{what}: value {value.name!r} comes from {src}, not a ReLU; the new block is the "
            "identity only on non-negative inputs"
        )
    return c


def block_has_bn(graph: Graph, block: Any) -> bool:
    """Whether a recognised block holds BatchNorms (BN-folded exports' blocks have none)."""
    ops = set()
    for name in block.nodes:
        try:
            ops.add(graph.node(name).op_type)
        except KeyError:
            continue
    return "BatchNormalization" in ops


def wants_bn(graph: Graph, block: Any, mode: str) -> bool:
    """``always`` / ``never``; ``auto``: mirror the block followed (BN iff it has BatchNorms)."""
    return block_has_bn(graph, block) if mode == "auto" else mode == "always"


def insert_identity_block(graph: Graph, ctx: PassContext, x: Value, *, r: float, name: str,
                          k1: int = 3, k2: int = 3, bn: bool = True) -> Node:
    """Insert an identity residual block reading ``x``; returns its final ReLU node.

    With ``bn`` an identity BatchNorm follows each of its two convs.
    """
    c = check_insertable(graph, x, name)
    dtype = x.type.dtype
    f1, f2 = ctx.identity_split(f"{name}.conv", c, k1=k1, k2=k2, scale=1.0 - r)
    if f1.shape != (c, c, k1, k1) or f2.shape != (c, c, k2, k2):
        raise VerificationError(
            f"{name}: identity_split returned factors of shapes {f1.shape} and {f2.shape}"
        )
    nodes = [conv_node(graph, x, f1.astype(dtype), None, name=f"{name}.conv1", out_type=x.type)]
    if bn:
        nodes.append(identity_bn_node(graph, nodes[-1].output, c, name=f"{name}.bn1", dtype=dtype))
    nodes.append(identity_prelu_node(graph, nodes[-1].output, c, name=f"{name}.prelu", dtype=dtype))
    nodes.append(conv_node(graph, nodes[-1].output, f2.astype(dtype), None, name=f"{name}.conv2",
                           out_type=x.type))
    if bn:
        nodes.append(identity_bn_node(graph, nodes[-1].output, c, name=f"{name}.bn2", dtype=dtype))
    branch = nodes[-1].output
    short = x
    if r != 1.0:
        rp = graph.add_parameter(f"{name}.shortcut.r", np.asarray(r, dtype=dtype))
        mul = graph.create_node("Mul", [x, rp], name=f"{name}.shortcut", output_types=[x.type])
        nodes.append(mul)
        short = mul.output
    add = graph.create_node("Add", [branch, short], name=f"{name}.add", output_types=[x.type])
    relu = graph.create_node("Relu", [add.output], name=f"{name}.relu", output_types=[x.type])
    nodes += [add, relu]
    insert_chain_after(graph, x, nodes, relu.output)
    return relu


def _fresh_block_name(graph: Graph, base: str) -> str:
    name = f"{base}.dup"
    i = 1
    while any(n.name.startswith(name + ".") for n in graph.nodes):
        i += 1
        name = f"{base}.dup{i}"
    return name


class DuplicateBlock(Pass):
    """Insert an identity residual block after a block (``block``) or after every block of a level."""

    name = "duplicate-block"
    summary = "Insert an identity residual block (branch (1-r)·Id, shortcut r·Id) after a block."
    option_specs = (
        Option("block", str, None, "the block to follow (a name from `netmorph inspect`)"),
        Option("level", str, "all", "follow every block of level I (or 'all')"),
        Option("residual_ratio", float, None, "r (default: read from the recognised structure)", low=0.0,
               high=1.0),
        Option("mid_bn", str, "auto", "identity BNs after the new convs: auto = only if the block "
               "followed has BatchNorms (BN-folded exports have none), always, never",
               ("auto", "always", "never")),
    )
    one_of = ("block", "level")

    def _targets(self, graph: Graph) -> list[tuple[str, Value, float, bool]]:
        block, level = self.options["block"], self.options["level"]
        if (block is None) == (level is None):
            raise PreconditionError(f"{self.name}: give exactly one of --block NAME or --level I|all")
        st = recognise(graph)
        if st.family != "resnet":
            raise PreconditionError(
                f"{self.name} is the ResNet morph; this graph is a {st.family} DynamicNet "
                "(use conv-split or deepen)"
            )
        given = self.options["residual_ratio"]
        if block is not None:
            lv, b = find_block(st, block, self.name)
            pairs = [(lv, b)]
        else:
            pairs = [(lv, b) for lv in select_levels(st, level, self.name) for b in lv.blocks]
        out = []
        for lv, b in pairs:
            r = residual_ratio_of(graph, st, lv, given, self.name)
            out.append((b.name, find_value(graph, _value_name(b.output)), r,
                        wants_bn(graph, b, self.options["mid_bn"] or "auto")))
        return out

    def requires(self, graph: Graph) -> list[tuple[str, Value, float, bool]]:
        targets = self._targets(graph)
        for name, v, r, _ in targets:
            if not 0.0 <= r <= 1.0:
                raise PreconditionError(f"{self.name}: residual ratio r={r} is outside [0, 1]")
            check_insertable(graph, v, f"{self.name} after block {name!r}")
        return targets

    def call(self, graph: Graph, ctx: PassContext, plan: list[tuple[str, Value, float, bool]]) -> None:
        targets = plan
        ctx.expect_solves(len(targets))
        for name, v, r, bn in targets:
            insert_identity_block(graph, ctx, v, r=r, name=_fresh_block_name(graph, name), bn=bn)


def _value_name(v: Any) -> str:
    return v if isinstance(v, str) else v.name
