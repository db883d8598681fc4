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

from dataclasses import dataclass, field
from typing import Any

from ..errors import PreconditionError, StructureError
from ..ir import Graph
from ..limits import MAX_LAYERS
from .base import Contract, Option, Pass, PassContext, parameter_bytes
from .conv_split import (
    MID_BN,
    SOLVER_OPTIONS,
    SPLIT_OPTIONS,
    check_splittable,
    solver_contract,
    split_conv,
    split_extra_bytes,
)
from .deepen_generic import DeepenPlan, apply_deepen, plan_deepen
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


@dataclass
class LevelPlan:
    """What ``deepen-level`` / ``deepen`` will do: the paper's reading (``structure``, ``levels``,
    blocks ``expected`` per level afterwards), the generic one (``generic``), or a transformer's
    (``transformer``: the transformer-deepen pass and its plan)."""

    mode: str
    structure: Any = None
    levels: list[Any] = field(default_factory=list)
    expected: dict[int, int] = field(default_factory=dict)
    generic: DeepenPlan | None = None
    transformer: tuple[Pass, Any] | None = None


class DeepenLevel(Pass):
    """Deepen one level (``level``) or all of them: PlainNet n -> 2n−1, ResNet n -> 2n."""

    name = "deepen-level"
    summary = "Deepen a level: PlainNet n -> 2n-1 blocks (split template convs), ResNet n -> 2n."
    option_specs = (
        Option("level", str, None, "the level to deepen, or 'all'", required=True),
        *SPLIT_OPTIONS,  # PlainNet
        Option("residual_ratio", float, None, "ResNet: r (default: read from the structure)", low=0.0,
               high=1.0),
        MID_BN,
        *SOLVER_OPTIONS,
        Option("mode", str, "auto", "paper (DynamicNet levels), generic (stages of any CNN), or auto",
               MODES),
        Option("init", str, "copy", "generic: weights of an inserted unit copy: copied or fresh "
               "(He-normal); its branch output is zeroed either way", ("copy", "fresh")),
    )

    @property
    def contract(self) -> Contract:
        return solver_contract(self.options)

    def exact_variant(self) -> Pass:
        return type(self)(**{**self.options, "solver": "exact"})

    def _mode(self, graph: Graph) -> tuple[str, Any]:
        """``(paper or generic, the recognised DynamicNet or None)`` for this graph (see the module
        docstring)."""
        mode = self.options.get("mode") or "auto"
        if mode != "auto":
            return mode, None
        if self.options["residual_ratio"] is not None:
            return "paper", None
        try:  # the whole graph decides (a bad --level is then the paper path's error to give)
            st = recognise(graph)
            if st.family not in ("plain", "resnet"):
                return "generic", None
            self._check_paper(graph, st, st.levels)
        except (PreconditionError, StructureError):
            return "generic", None
        return "paper", st

    def _plan(self, graph: Graph, st: Any = None) -> tuple[Any, list[Any]]:
        st = recognise(graph) if st is None else st
        if st.family not in ("plain", "resnet"):
            raise PreconditionError(f"{self.name}: unknown DynamicNet family {st.family!r}")
        return st, select_levels(st, self.options["level"], self.name)

    def requires(self, graph: Graph) -> LevelPlan:
        mode, st = self._mode(graph)
        if mode == "generic":
            return LevelPlan("generic", generic=plan_deepen(graph, self.options["level"], self.options,
                                                           self.name))
        st, levels = self._plan(graph, st)
        self._check_paper(graph, st, levels)
        expected = {lv.index: _expected_blocks(st.family, len(lv.blocks)) for lv in levels}
        return LevelPlan("paper", structure=st, levels=levels, expected=expected)

    def child_bytes(self, graph: Graph, plan: LevelPlan) -> int | None:
        """The parent's bytes plus each split (sized by ``--cmid``), unit copy, fresh unit, identity
        conv or identity block the plan inserts."""
        if plan.transformer is not None:
            return None  # one copy per layer at most: never more than the parent again
        if plan.generic is not None:
            return parameter_bytes(graph) + generic_growth_bytes(plan.generic, self.options)
        if plan.structure.family == "plain":
            splits = [graph.node(c) for lv in plan.levels for c in template_convs(lv)]
            return parameter_bytes(graph) + sum(split_extra_bytes(n, self.options) for n in splits)
        outs = [find_value(graph, _name(b.output)) for lv in plan.levels for b in lv.blocks]
        return parameter_bytes(graph) + sum(4 * (18 * c * c + 9 * c) for c in (_channels(v) for v in outs))

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

    def call(self, graph: Graph, ctx: PassContext, plan: LevelPlan) -> None:
        if plan.transformer is not None:
            p, tplan = plan.transformer
            ctx.note(morph=self.name, reading="transformer", as_pass=p.describe())
            p.call(graph, ctx, tplan)
            return
        if plan.generic is not None:
            apply_deepen(graph, ctx, plan.generic, self.options)
            return
        st, levels = plan.structure, plan.levels
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

    def ensures(self, graph: Graph, plan: LevelPlan) -> None:
        if plan.transformer is not None:
            p, tplan = plan.transformer
            p.ensures(graph, tplan)
            return
        if plan.generic is not None:
            from .deepen_generic import anatomy_of

            have = sum(u.kind == "residual" for u in anatomy_of(graph, self.name).units)
            if have != plan.generic.residual_after:
                raise StructureError(
                    f"{self.name}: after deepening, the graph has {have} residual units, expected "
                    f"{plan.generic.residual_after}"
                )
            return
        st = recognise(graph)
        for lv in st.levels:
            want = plan.expected.get(lv.index)
            if want is not None and len(lv.blocks) != want:
                raise StructureError(
                    f"{self.name}: after deepening, level {lv.index} has {len(lv.blocks)} blocks, "
                    f"expected {want}"
                )


TRANSFORMER_OPTIONS = {"level": "after", "layers": "layers"}
"""``deepen`` option -> the ``transformer-deepen`` option it becomes on a transformer."""


class Deepen(DeepenLevel):
    """``deepen-level`` applied to every level; on a transformer, ``transformer-deepen``."""

    name = "deepen"
    summary = ("Deepen every level (PlainNet n -> 2n-1 blocks, ResNet n -> 2n): one growth step; on a "
               "transformer, transformer-deepen (L -> 2L identity layers; --level 0,2 after those).")
    option_specs = (
        DeepenLevel.option_specs[0].replace(default="all", required=False,
                                            help="the level to deepen, or 'all'; on a transformer the "
                                                 "layers to insert after (a comma list)"),
        *DeepenLevel.option_specs[1:],
        Option("layers", int, None, "transformer: insert this many layers, after evenly spaced layers",
               low=1, high=MAX_LAYERS),
    )

    def requires(self, graph: Graph) -> LevelPlan:
        from ..errors import NetmorphError
        from ..structure.transformer import recognise_transformer
        from .transformer_deepen import TransformerDeepen

        try:
            st = recognise_transformer(graph)
        except NetmorphError:
            st = None
        if st is not None and any(lay.relaid for lay in st.layers):
            st = None  # Swin-style layers: copy one residual unit (the generic deepen), not a layer
        if st is None:
            if "layers" in self.given:
                raise PreconditionError(f"{self.name}: option --layers applies to transformers only")
            return super().requires(graph)
        wrong = sorted(self.given - set(TRANSFORMER_OPTIONS))
        if wrong:
            flags = ", ".join(self.option(k).flag for k in wrong)
            raise PreconditionError(f"{self.name}: {flags} does not apply to a transformer (deepen takes "
                                    "--level and --layers there)")
        p = TransformerDeepen(**{TRANSFORMER_OPTIONS[k]: self.options[k] for k in self.given})
        return LevelPlan("transformer", transformer=(p, p.plan_of(st)))


def _channels(v: Any) -> int:
    shape = v.type.shape if v.type is not None else None
    return int(shape[1]) if shape and len(shape) > 1 and isinstance(shape[1], int) else 0


def _param_bytes(nodes: list[Any]) -> int:
    seen = {id(v): v for n in nodes for v in n.inputs if v is not None and v.const is not None}
    return sum(int(v.const.array.nbytes) for v in seen.values())


def generic_growth_bytes(plan: DeepenPlan, options: dict[str, Any]) -> int:
    """Parameter bytes a generic deepening adds: the copied units, fresh units (about 2.5·C² weights),
    splits and identity convs (float32 assumed where the unit has no weights of its own)."""
    total = sum(_param_bytes(list(t.nodes)) for _, t in plan.copies)
    for u in plan.fresh:
        c = _channels(u.output)
        m = max(c // 4, 1)
        total += 4 * (9 * m * c + c * m + c + 4 * m)
    total += sum(split_extra_bytes(n, options) for n in plan.splits)
    for n, _ in plan.identity_convs:
        w = n.param(1)
        if w is not None:
            cin = max(w.shape[1] * int(n.attr("group", 1)), 1)
            total += int(w.nbytes * w.shape[0] / cin) + 12 * w.shape[0]
    return total


def _name(v: Any) -> str:
    return v if isinstance(v, str) else v.name
