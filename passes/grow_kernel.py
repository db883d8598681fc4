"""``grow-kernel``: a KxK conv becomes (K+2j)x(K+2j), exactly (zero-padded kernel, grown padding).

Targets: one conv (``--node``), or every conv of kernel ``--from`` (default 3) in a stage's units
(``--level I|all``): plain convs and convs inside residual branches, depthwise and grouped ones
too (shortcut convs are left alone). The arrays come from :mod:`netmorph.morphs.kernel`.
"""

from __future__ import annotations

from ..errors import PreconditionError
from ..ir import Graph, Node
from ..limits import MAX_KERNEL
from ..morphs.kernel import grown_pads, pad_kernel
from .base import Option, Pass, PassContext, parameter_bytes
from .layers import find_node


def check_growable(node: Node, kernel: int) -> tuple[int, int]:
    """``(kh, kw)`` of conv ``node`` if it can grow to ``kernel`` x ``kernel``; else a precise refusal."""
    where = f"conv {node.name!r}"
    if node.op_type != "Conv":
        raise PreconditionError(f"node {node.name!r} is a {node.op_type}, not a Conv")
    w = node.param(1)
    if w is None or w.ndim != 4:
        raise PreconditionError(f"{where}: grow-kernel needs a constant 2-D conv weight")
    kh, kw = (int(k) for k in w.shape[2:])
    if kh != kw:
        raise PreconditionError(f"{where}: kernel {kh}x{kw} is not square")
    if kernel <= kh or (kernel - kh) % 2:
        raise PreconditionError(
            f"{where}: a {kh}x{kh} kernel grows to {kernel}x{kernel} only if {kernel} exceeds {kh} by an "
            "even amount"
        )
    auto_pad = node.attr("auto_pad", b"NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else str(auto_pad)
    if auto_pad not in ("NOTSET", ""):
        raise PreconditionError(f"{where}: auto_pad={auto_pad}; grow-kernel needs explicit pads")
    return kh, kw


class GrowKernel(Pass):
    """Grow one conv's kernel (``node``) or every ``from``-sized conv of a stage (``level``)."""

    name = "grow-kernel"
    summary = "Grow KxK convs to (K+2j)x(K+2j) by zero-padding kernel and padding (exact)."
    option_specs = (
        Option("kernel", int, None, "the new kernel size (default: --from + 2)", low=1, high=MAX_KERNEL),
        Option("from_kernel", int, 3, "with --level: grow the convs of this kernel size", low=1,
               high=MAX_KERNEL, aliases=("from",)),
        Option("node", str, None, "the conv to grow"),
        Option("level", str, "all", "grow every matching conv of stage I's units (or 'all')"),
    )
    one_of = ("node", "level")

    def _new_kernel(self) -> int:
        k = self.options.get("kernel")
        return int(k) if k is not None else int(self.options["from_kernel"]) + 2

    def _targets(self, graph: Graph) -> list[Node]:
        node, level = self.options.get("node"), self.options.get("level")
        if (node is None) == (level is None):
            raise PreconditionError(f"{self.name}: give exactly one of --node NAME or --level I|all")
        if node is not None:
            return [find_node(graph, node)]
        from .deepen_generic import anatomy_of, select_stages

        k0 = int(self.options["from_kernel"])
        an = anatomy_of(graph, self.name)
        out = []
        stages = select_stages(an, level, self.name)
        for st in stages:
            for u in st.units:
                nodes = u.residual.branch if u.residual is not None else u.core
                out += [n for n in nodes if n.op_type == "Conv" and n.param(1) is not None
                        and n.param(1).ndim == 4 and tuple(n.param(1).shape[2:]) == (k0, k0)]
        if not out:
            names = ", ".join(f"stage{s.index}" for s in stages)
            raise PreconditionError(f"{self.name}: {names} has no {k0}x{k0} conv to grow")
        return out

    def requires(self, graph: Graph) -> list[Node]:
        targets = self._targets(graph)
        for n in targets:
            check_growable(n, self._new_kernel())
        return targets

    def child_bytes(self, graph: Graph, plan: list[Node]) -> int:
        k = self._new_kernel()
        grown = {id(n.inputs[1]): n.param(1) for n in plan}
        return parameter_bytes(graph) + sum(int(w.nbytes * (k * k / (w.shape[2] * w.shape[3]) - 1))
                                            for w in grown.values())

    def call(self, graph: Graph, ctx: PassContext, plan: list[Node]) -> None:
        k = self._new_kernel()
        for n in plan:
            kh, kw = check_growable(n, k)
            w = n.param(1)
            v = n.inputs[1]
            nw = pad_kernel(w, (k, k))
            if len(v.uses()) == 1:
                graph.set_parameter(v, nw)
                name = v.name
            else:
                nv = graph.add_parameter(f"{n.name}.weight{k}", nw)
                n.set_input(1, nv)
                name = nv.name
            dil = tuple(int(d) for d in (n.attr("dilations") or [1, 1]))
            pads = list(n.attr("pads") or [0, 0, 0, 0])
            n.set_attr("kernel_shape", [k, k])
            n.set_attr("pads", grown_pads(pads, (kh, kw), (k, k), dil))
            ctx.derive(name, "new", note=f"{kh}x{kw} kernel zero-padded to {k}x{k} (old taps in the middle)")
            ctx.note(morph="grow-kernel", node=n.name, old=f"{kh}x{kw}", new=f"{k}x{k}")
