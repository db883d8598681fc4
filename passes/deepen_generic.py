"""Generic deepening of any CNN's stages (units and stages of :mod:`netmorph.structure.stages`).

Per selected stage:

- after every residual unit, a zero-branch copy of a residual unit of the stage with an
  identity (or ``r·Id``) shortcut: the unit itself, or for a projection unit the stage's first
  identity unit (its input has the stage's width and resolution, the projection's has not); a
  stage without one gets a fresh zero-branch unit instead;
- every plain unit but the stage's first (which changes width or resolution, like the paper's
  channel switch) is deepened: split by the paper's conv split when the splitter applies
  (group 1, square odd kernel, 'same' padding, no dilation), else followed by an identity conv
  of the same groups and dilation;
- after every concat or region unit (Inception, dense blocks, Fire, ShuffleNet), a fresh
  zero-branch unit.

All of it is exact: ``x + 0 = x``, identity BN / PReLU / conv, and the exact split.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import PreconditionError, StructureError
from ..ir import Graph, Node, Value
from .base import PassContext
from .conv_split import _wants_mid_bn, check_splittable, split_conv
from .zero_branch import copy_residual_unit, entry_uses, insert_fresh_unit, insert_identity_conv

COPYABLE_SHORTCUTS = ("identity", "scaled")


@dataclass
class DeepenPlan:
    """What generic deepening will do to a graph (built by :func:`plan_deepen`)."""

    copies: list[tuple[Any, Any]] = field(default_factory=list)  # (unit followed, template)
    fresh: list[Any] = field(default_factory=list)  # units followed by a fresh zero-branch unit
    splits: list[Node] = field(default_factory=list)
    identity_convs: list[tuple[Node, str]] = field(default_factory=list)  # (conv, why not split)
    residual_before: int = 0
    uses: dict[int, set] = field(default_factory=dict)  # id(template) -> its entry_uses, pre-surgery

    @property
    def empty(self) -> bool:
        return not (self.copies or self.fresh or self.splits or self.identity_convs)

    @property
    def residual_after(self) -> int:
        return self.residual_before + len(self.copies) + len(self.fresh)


def anatomy_of(graph: Graph, what: str) -> Any:
    """The graph's units and stages (unknown channel counts measured first), or a precondition error."""
    from ..structure import anatomy
    from ..structure.shapes import fill_unknown_shapes

    try:
        fill_unknown_shapes(graph)
        return anatomy(graph)
    except StructureError as e:
        raise PreconditionError(f"{what}: {e}") from None


def select_stages(an: Any, level: Any, what: str) -> list[Any]:
    from .select import parse_level

    lv = parse_level(level)
    stages = an.select(lv)
    if not stages:
        have = ", ".join(str(s.index) for s in an.stages)
        raise PreconditionError(f"{what}: stage {level} is out of range (the graph has stages {have})")
    return stages


def plan_deepen(graph: Graph, level: Any, options: dict[str, Any], what: str) -> DeepenPlan:
    """The deepening of stage ``level`` (or ``"all"``) of ``graph``; refuses when nothing applies."""
    an = anatomy_of(graph, what)
    plan = DeepenPlan(residual_before=sum(u.kind == "residual" for u in an.units))
    for st in select_stages(an, level, what):
        templates = [u for u in st.units if u.kind == "residual"
                     and u.residual.shortcut_kind in COPYABLE_SHORTCUTS]
        for i, u in enumerate(st.units):
            if u.kind == "residual":
                if u.residual.shortcut_kind in COPYABLE_SHORTCUTS:
                    plan.copies.append((u, u))
                elif templates:
                    plan.copies.append((u, templates[0]))
                else:
                    plan.fresh.append(u)
            elif u.kind in ("concat", "region"):
                plan.fresh.append(u)
            elif u.kind == "plain" and i > 0:
                try:
                    check_splittable(u.conv, options)
                    plan.splits.append(u.conv)
                except PreconditionError as e:
                    plan.identity_convs.append((u.conv, str(e)))
    for _, t in plan.copies:
        plan.uses.setdefault(id(t), entry_uses(t))
    if plan.empty:
        names = ", ".join(f"stage{s.index}" for s in select_stages(an, level, what))
        raise PreconditionError(
            f"{what}: nothing to deepen in {names} (one plain unit each, which changes width or "
            "resolution; deepen another stage)"
        )
    return plan


def apply_deepen(graph: Graph, ctx: PassContext, plan: DeepenPlan, options: dict[str, Any]) -> None:
    """Carry out ``plan`` on ``graph`` (types must be known)."""
    ctx.expect_solves(len(plan.splits))
    init = options.get("init") or "copy"
    has_bn = any(n.op_type == "BatchNormalization" for n in graph.nodes)
    for u, t in plan.copies:
        y = u.output
        name = graph.unique_node_name(f"{u.residual.add.name}.dup")
        nodes, _, zeroed = copy_residual_unit(graph, ctx, t, y, name=name, init=init,
                                              uses=plan.uses[id(t)])
        ctx.note(morph="unit-copy", after=u.residual.add.name, copies=t.residual.add.name, init=init,
                 zeroed=zeroed, nodes=len(nodes))
    for u in plan.fresh:
        name = graph.unique_node_name(f"{_last(u).name}.id_unit")
        nodes, _ = insert_fresh_unit(graph, ctx, u.output, name=name, bn=has_bn)
        ctx.note(morph="fresh-unit", after=_last(u).name,
                 zeroed=f"zeroed Conv {name + '.conv2'!r} (weight and bias)",
                 nodes=len(nodes), why=f"{u.kind} unit" if u.kind != "residual" else
                 "projection unit in a stage without an identity unit to copy")
    for c in plan.splits:
        split_conv(graph, ctx, c, options)
        ctx.note(morph="conv-split", node=c.name)
    for c, why in plan.identity_convs:
        insert_identity_conv(graph, ctx, c, mid_bn=_wants_mid_bn(c, options.get("mid_bn") or "auto"))
        ctx.note(morph="identity-conv", node=c.name, why_not_split=why)
    graph.toposort()  # a copied template may use weight plumbing placed after the insertion point


def _last(u: Any) -> Node:
    v: Value = u.output
    return v.producer
