"""``conv-split``: the PlainNet morph, one conv G becomes F1 -> identity BN -> identity PReLU -> F2.

F1 (Cmid, Cin, k1, k1) runs first with stride 1, F2 (Cout, Cmid, k2, k2) second with the
original stride and the original bias; the original BN / ReLU stay after F2. The kernels come
from :func:`netmorph.solvers.split_kernel` (Eq. 5: G zero-padded to k1+k2-1 equals F1 ⊛ F2).
"""

from __future__ import annotations

from typing import Any

from ..errors import PreconditionError, VerificationError
from ..ir import Graph, Node, TensorType
from ..limits import MAX_ITER, MAX_KERNEL, MAX_WIDTH
from .base import Contract, Option, Pass, PassContext, parameter_bytes
from .layers import (
    conv_geometry,
    conv_node,
    default_factor_sizes,
    find_node,
    identity_bn_node,
    identity_prelu_node,
)
from .select import recognise, select_levels, template_convs

SOLVERS = ("exact", "optgd", "lsq")
APPROX_RTOL, APPROX_ATOL = 0.5, 0.05
"""Default bound of the approximate contract (the output may move, but not by its own size)."""

MID_BN = Option(
    "mid_bn", str, "auto",
    "identity BN between F1 and F2: auto = only if a BN follows the conv (BN-folded exports get "
    "none, so both halves look like the original block), always, never", ("auto", "always", "never"),
)

SPLIT_OPTIONS = (
    Option("cmid", int, None, "channels between F1 and F2 (default: the conv's Cout)", low=1, high=MAX_WIDTH),
    Option("k1", int, None, "F1 kernel size (default 3 for a 3x3 conv, 1 for 1x1)", low=1, high=MAX_KERNEL),
    Option("k2", int, None, "F2 kernel size (default 3 for a 3x3 conv, 1 for 1x1)", low=1, high=MAX_KERNEL),
)
"""Shape options of a conv split (conv-split, and deepen-level on a PlainNet)."""

SOLVER_OPTIONS = (
    Option("solver", str, "exact", "kernel solver: exact (contract exact), optgd or lsq (approx)", SOLVERS),
    Option("max_iter", int, 1000, "iteration cap of optgd / lsq", low=1, high=MAX_ITER),
    Option("approx_rtol", float, APPROX_RTOL, "output bound of the approximate contract (relative)", low=0.0),
    Option("approx_atol", float, APPROX_ATOL, "output bound of the approximate contract (absolute)", low=0.0),
)


def solver_contract(options: dict[str, Any]) -> Contract:
    """Exact for the exact solver; ``approx(approx_rtol, approx_atol)`` for optgd / lsq."""
    if options.get("solver", "exact") == "exact":
        return Contract.exact()
    return Contract.approx(options["approx_rtol"], options["approx_atol"])


def factor_sizes(kernel: int, k1: int | None, k2: int | None, where: str) -> tuple[int, int]:
    """Validated (k1, k2) for a ``kernel`` x ``kernel`` conv (defaults when not given)."""
    d1, d2 = default_factor_sizes(kernel)
    k1 = d1 if k1 is None else int(k1)
    k2 = d2 if k2 is None else int(k2)
    if k1 < 1 or k2 < 1 or k1 % 2 == 0 or k2 % 2 == 0:
        raise PreconditionError(f"{where}: factor kernels must be odd and positive (k1={k1}, k2={k2})")
    if k1 + k2 - 1 < kernel:
        raise PreconditionError(
            f"{where}: a {kernel}x{kernel} kernel does not fit in k1+k2-1 = {k1 + k2 - 1} (k1={k1}, k2={k2})"
        )
    return k1, k2


def check_splittable(node: Node, options: dict[str, Any]) -> None:
    """Raise :class:`PreconditionError` unless ``node`` can be split with these options."""
    geo = conv_geometry(node)
    factor_sizes(geo.kernel, options.get("k1"), options.get("k2"), f"conv {node.name!r}")
    cmid = options.get("cmid")
    if cmid is not None and int(cmid) < 1:
        raise PreconditionError(f"conv {node.name!r}: cmid must be positive (got {cmid})")


def split_extra_bytes(node: Node, options: dict[str, Any]) -> int:
    """Bytes a split of conv ``node`` adds (F1, F2 and the identity BN / PReLU, minus G)."""
    geo = conv_geometry(node)
    k1, k2 = factor_sizes(geo.kernel, options.get("k1"), options.get("k2"), f"conv {node.name!r}")
    cmid = int(options.get("cmid") or geo.cout)
    per = cmid * geo.cin * k1 * k1 + geo.cout * cmid * k2 * k2 + 5 * cmid - geo.weight.size
    return per * geo.weight.dtype.itemsize


def _wants_mid_bn(node: Node, mode: str) -> bool:
    """``always`` / ``never``; ``auto``: mirror the conv (BN in the middle iff a BN reads the conv)."""
    if mode != "auto":
        return mode == "always"
    readers = node.output.consumers()
    return len(readers) == 1 and readers[0].op_type == "BatchNormalization"


def split_conv(graph: Graph, ctx: PassContext, node: Node, options: dict[str, Any]) -> tuple[Node, Node]:
    """Replace conv ``node`` by F1 -> identity BN -> identity PReLU -> F2; returns (F1, F2) nodes.

    The BN is left out when ``options["mid_bn"]`` says so (``auto``: no BN follows the conv).
    The F2 output keeps the conv output's name, so the nodes after it are untouched.
    """
    geo = conv_geometry(node)
    where = f"conv {node.name!r}"
    k1, k2 = factor_sizes(geo.kernel, options.get("k1"), options.get("k2"), where)
    cmid = int(options.get("cmid") or geo.cout)
    dtype = geo.weight.dtype
    f1, f2 = ctx.split_kernel(
        node.name, geo.weight, cmid=cmid, k1=k1, k2=k2,
        method=options.get("solver", "exact"), max_iter=int(options.get("max_iter") or 1000),
    )
    want1, want2 = (cmid, geo.cin, k1, k1), (geo.cout, cmid, k2, k2)
    if f1.shape != want1 or f2.shape != want2:
        raise VerificationError(
            f"{where}: the solver returned factors of shapes {f1.shape} and {f2.shape}, "
            f"expected {want1} and {want2}"
        )
    x, out = node.inputs[0], node.output
    mid_type = None
    if x.type is not None and x.type.shape is not None and len(x.type.shape) == 4:
        n_, _, h, w = x.type.shape
        mid_type = TensorType(x.type.elem_type, (n_, cmid, h, w))
    base = node.name or out.name
    a = conv_node(graph, x, f1.astype(dtype), None, name=f"{base}.a", out_type=mid_type)
    mid = [a]
    if _wants_mid_bn(node, options.get("mid_bn") or "auto"):
        mid.append(identity_bn_node(graph, a.output, cmid, name=f"{base}.bn_mid", dtype=dtype))
    pr = identity_prelu_node(graph, mid[-1].output, cmid, name=f"{base}.prelu_mid", dtype=dtype)
    b = conv_node(graph, pr.output, f2.astype(dtype), geo.bias, name=f"{base}.b", strides=geo.strides,
                  out_type=out.type)
    _record_lineage(ctx, node, a, [*mid[1:], pr], b)
    out_name = out.name
    graph.replace_node(node, [*mid, pr, b], [b.output])
    graph.rename_value(b.output, out_name)
    return a, b


def _record_lineage(ctx: PassContext, node: Node, a: Node, inserted: list[Node], b: Node) -> None:
    """F1, F2 and the identity BN / PReLU are new (parent: G, for param groups); G's bias moves to F2."""
    g = node.inputs[1].name
    for v in [a.inputs[1], b.inputs[1], *(x for n in inserted for x in n.inputs[1:])]:
        ctx.derive(v.name, "new", parent=g)
    if len(b.inputs) > 2 and b.inputs[2] is not None:
        ctx.derive(b.inputs[2].name, "same", parent=node.inputs[2].name)


class ConvSplit(Pass):
    """Split one conv (``node``) or every template conv of a level (``level``) in two (Eq. 5)."""

    name = "conv-split"
    summary = "Split a conv G into F1 -> identity BN -> identity PReLU -> F2 (PlainNet morph, Eq. 5)."
    option_specs = (
        Option("node", str, None, "the conv node to split"),
        Option("level", str, "all", "split every template conv of level I (or 'all')"),
        *SPLIT_OPTIONS,
        MID_BN,
        *SOLVER_OPTIONS,
    )
    one_of = ("node", "level")

    @property
    def contract(self) -> Contract:
        return solver_contract(self.options)

    def exact_variant(self) -> Pass:
        return type(self)(**{**self.options, "solver": "exact"})

    def _targets(self, graph: Graph) -> list[Node]:
        node, level = self.options["node"], self.options["level"]
        if (node is None) == (level is None):
            raise PreconditionError(f"{self.name}: give exactly one of --node NAME or --level I|all")
        if node is not None:
            return [find_node(graph, node)]
        names = [c for lv in select_levels(recognise(graph), level, self.name) for c in template_convs(lv)]
        if not names:
            raise PreconditionError(f"{self.name}: level {level} has no template convs to split")
        return [find_node(graph, c) for c in names]

    def requires(self, graph: Graph) -> list[Node]:
        targets = self._targets(graph)
        for n in targets:
            check_splittable(n, self.options)
        return targets

    def child_bytes(self, graph: Graph, plan: list[Node]) -> int:
        return parameter_bytes(graph) + sum(split_extra_bytes(n, self.options) for n in plan)

    def call(self, graph: Graph, ctx: PassContext, plan: list[Node]) -> None:
        targets = plan
        ctx.expect_solves(len(targets))
        for n in targets:
            split_conv(graph, ctx, n, self.options)
