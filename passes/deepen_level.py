"""``deepen-level`` / ``deepen``: double the depth of a level (or of every level).

On the paper's DynamicNets (``mode=paper``): PlainNet n -> 2n−1 blocks (every template conv is
split; the channel switch stays; each half of a split conv is a template block); ResNet n -> 2n
blocks (an identity block ``(1−r)·Id`` + ``r·Id`` after each). These write exactly what they
always wrote.

On any other CNN (``mode=generic``; :mod:`.deepen_generic`): the level is a stage of the
graph's units; after each residual unit a zero-branch copy of a unit, plain convs split or
followed by an identity conv, concat regions followed by a fresh zero-branch unit.

``mode=auto`` (default) takes the paper's reading when the graph is a DynamicNet whose blocks
are the paper's (PlainNet convs the splitter takes; ResNet blocks of two convs after a ReLU),
or when ``--residual-ratio`` is given, and the generic one otherwise.
"""

from __future__ import annotations

import time
from typing import Any

from ..errors import PreconditionError, StructureError
from ..ir import Graph
from .base import Contract, Option, Pass, PassContext
from .conv_split import MID_BN, SOLVER_OPTIONS, SPLIT_OPTIONS, check_splittable, solver_contract, split_conv
from .deepen_generic import apply_deepen, plan_deepen
from .duplicate_block import (
    _fresh_block_name,
    check_insertable,
    insert_identity_block,
    residual_ratio_of,
    wants_bn,
)
from .layers import find_node, find_value
from .select import recognise, select_levels, template_convs

MODES = ("auto", "paper", "generic")


def _expected_blocks(family: str, n: int) -> int:
    return 2 * n - 1 if family == "plain" else 2 * n


class DeepenLevel(Pass):
    """Deepen one level (``level``) or all of them: PlainNet n -> 2n−1, ResNet n -> 2n."""

    name = "deepen-level"
    summary = "Deepen a level: PlainNet n -> 2n-1 blocks (split template convs), ResNet n -> 2n."
    option_specs = (
        Option("level", str, None, "the level to deepen, or 'all'"),
        *SPLIT_OPTIONS,  # PlainNet
        Option("residual_ratio", float, None, "ResNet: r (default: read from the structure)"),
        MID_BN,
        *SOLVER_OPTIONS,
        Option("mode", str, "auto", "paper (DynamicNet levels), generic (stages of any CNN), or auto",
               MODES),
        Option("init", str, "copy", "generic: weights of an inserted unit copy: copied or fresh "
               "(He-normal); its branch output is zeroed either way", ("copy", "fresh")),
    )
    _level_default: str | None = None

    def __init__(self, **options: Any):
        super().__init__(**options)
        self._expected: dict[int, int] = {}  # level index -> block count, set by call for ensures
        if self.options.get("level") is None:
            self.options["level"] = self._level_default

    @property
    def contract(self) -> Contract:
        return solver_contract(self.options)

    def exact_variant(self) -> Pass:
        return type(self)(**{**self.options, "solver": "exact"})

    def _mode(self, graph: Graph) -> str:
        """``paper`` or ``generic`` for this graph (see the module docstring)."""
        if self.options["level"] is None:
            raise PreconditionError(f"{self.name}: say which level to deepen (--level I|all)")
        mode = self.options.get("mode") or "auto"
        if mode != "auto":
            return mode
        if self.options["residual_ratio"] is not None:
            return "paper"
        try:  # the whole graph decides (a bad --level is then the paper path's error to give)
            st = recognise(graph)
            if st.family not in ("plain", "resnet"):
                return "generic"
            self._check_paper(graph, st, st.levels)
        except (PreconditionError, StructureError):
            return "generic"
        return "paper"

    def _plan(self, graph: Graph) -> tuple[Any, list[Any]]:
        if self.options["level"] is None:
            raise PreconditionError(f"{self.name}: say which level to deepen (--level I|all)")
        st = recognise(graph)
        if st.family not in ("plain", "resnet"):
            raise PreconditionError(f"{self.name}: unknown DynamicNet family {st.family!r}")
        return st, select_levels(st, self.options["level"], self.name)

    def requires(self, graph: Graph) -> None:
        self._expected = {}
        self._generic = None
        if self._mode(graph) == "generic":
            self._generic = plan_deepen(graph, self.options["level"], self.options, self.name)
            return
        st, levels = self._plan(graph)
        self._check_paper(graph, st, levels)

    def _check_paper(self, graph: Graph, st: Any, levels: list[Any]) -> None:
        for lv in levels:
            if st.family == "plain":
                for c in template_convs(lv):
                    check_splittable(find_node(graph, c), self.options)
            else:
                r = residual_ratio_of(graph, st, lv, self.options["residual_ratio"], self.name)
                if not 0.0 <= r <= 1.0:
                    raise PreconditionError(f"{self.name}: residual ratio r={r} is outside [0, 1]")
                for b in lv.blocks:
                    check_insertable(graph, find_value(graph, _name(b.output)),
                                     f"{self.name} after block {b.name!r}")
                    if self.options.get("mode") != "paper" and self.options["residual_ratio"] is None \
                            and len(b.convs) != 2:
                        raise PreconditionError(
                            f"{self.name}: block {b.name!r} has {len(b.convs)} convs, not the paper's two"
                        )

    def call(self, graph: Graph, ctx: PassContext) -> None:
        t0 = time.perf_counter()
        if self._mode(graph) == "generic":
            plan = plan_deepen(graph, self.options["level"], self.options, self.name)
            ctx.timings["recognise"] = time.perf_counter() - t0
            self._generic = plan
            apply_deepen(graph, ctx, plan, self.options)
            return
        st, levels = self._plan(graph)
        self._expected = {lv.index: _expected_blocks(st.family, len(lv.blocks)) for lv in levels}
        if st.family == "plain":
            convs = [c for lv in levels for c in template_convs(lv)]
            ctx.expect_solves(len(convs))
            for c in convs:
                split_conv(graph, ctx, graph.node(c), self.options)
            return
        work = [(lv, b) for lv in levels for b in lv.blocks]
        ctx.expect_solves(len(work))
        for lv, b in work:
            r = residual_ratio_of(graph, st, lv, self.options["residual_ratio"], self.name)
            insert_identity_block(graph, ctx, graph.value(_name(b.output)), r=r,
                                  name=_fresh_block_name(graph, b.name),
                                  bn=wants_bn(graph, b, self.options["mid_bn"] or "auto"))

    def ensures(self, graph: Graph) -> None:
        plan = getattr(self, "_generic", None)
        if plan is not None:
            from .deepen_generic import anatomy_of

            have = sum(u.kind == "residual" for u in anatomy_of(graph, self.name).units)
            if have != plan.residual_after:
                raise StructureError(
                    f"{self.name}: after deepening, the graph has {have} residual units, expected "
                    f"{plan.residual_after}"
                )
            return
        expected = self._expected
        if not expected:
            return
        st = recognise(graph)
        for lv in st.levels:
            want = expected.get(lv.index)
            if want is not None and len(lv.blocks) != want:
                raise StructureError(
                    f"{self.name}: after deepening, level {lv.index} has {len(lv.blocks)} blocks, "
                    f"expected {want}"
                )


class Deepen(DeepenLevel):
    """``deepen-level`` applied to every level."""

    name = "deepen"
    summary = ("Deepen every level (PlainNet n -> 2n-1 blocks, ResNet n -> 2n): one growth step; on a "
               "transformer, transformer-deepen (L -> 2L identity layers).")
    _level_default = "all"

    def apply(self, graph, seed=0, progress=None):
        from .transformer_deepen import TransformerDeepen, is_transformer  # transformers (issue 10)

        if is_transformer(graph):
            return TransformerDeepen().apply(graph, seed, progress)
        return super().apply(graph, seed, progress)


def _name(v: Any) -> str:
    return v if isinstance(v, str) else v.name
