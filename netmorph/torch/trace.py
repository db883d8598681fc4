"""Lineage over a chain of passes: where each final parameter came from, and its mapped state.

A pass records a :class:`~netmorph.morphs.lineage.ParamLineage` for what it creates or changes
and nothing for what it leaves alone. Over a chain ``g0 -> g1 -> … -> gn`` this module follows
every parameter of ``gn`` back to ``g0`` (:func:`provenance`) and carries per-parameter state
arrays forward through each step with :func:`~netmorph.morphs.lineage.map_state`
(:func:`carry_state`). A parameter with no record whose name the step's parent does not have
is new (passes that do not record their fresh parameters are covered by this rule).

Pure numpy: no torch here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..ir import Graph
from ..morphs.lineage import Lineage, ParamLineage, map_state


@dataclass(frozen=True)
class Step:
    """One pass application: ``parent`` graph, ``child`` graph, the pass's ``lineage``."""

    parent: Graph
    child: Graph
    lineage: Lineage


@dataclass(frozen=True)
class Origin:
    """Where a final parameter came from: ``kind`` (same / gather / new) and the root parameter.

    ``root`` is the first graph's parameter it derives from (``None`` for a parameter with no
    parent at all; a ``new`` parameter may still name the parameter it replaced, e.g. the conv
    a split factor came from).
    """

    kind: str
    root: str | None


def _params(g: Graph) -> dict[str, tuple[int, ...]]:
    return {v.name: tuple(v.const.shape) for v in g.parameters}


def record(step: Step, name: str, parent_names: set[str]) -> ParamLineage:
    """The effective record of child parameter ``name`` in ``step`` (``same`` when unchanged)."""
    rec = step.lineage.origin(name)
    if rec is not None:
        return rec
    if name in parent_names:
        return ParamLineage(name, "same", parent=name)
    return ParamLineage(name, "new", note="no record and not in the parent")


def provenance(steps: list[Step]) -> dict[str, Origin]:
    """Final parameter name -> :class:`Origin` in the first graph."""
    if not steps:
        return {}
    current = {n: Origin("same", n) for n in _params(steps[0].parent)}
    for step in steps:
        parent_names = set(_params(step.parent))
        nxt: dict[str, Origin] = {}
        for name in _params(step.child):
            rec = record(step, name, parent_names)
            up = current.get(rec.parent) if rec.parent is not None else None
            if rec.kind == "new":
                nxt[name] = Origin("new", up.root if up is not None else None)
            elif up is None or up.kind == "new":
                nxt[name] = Origin("new", None if up is None else up.root)
            else:
                kind = "same" if rec.kind == "same" and up.kind == "same" else "gather"
                nxt[name] = Origin(kind, up.root)
        current = nxt
    return current


def carry_state(steps: list[Step], state: dict[str, dict[str, np.ndarray]],
                moments: dict[str, int]) -> dict[str, dict[str, np.ndarray]]:
    """Per-parameter state arrays of the first graph, mapped to the last graph's parameters.

    ``state``: parameter name -> entry name -> array in the parameter's layout; ``moments``:
    entry name -> 1 or 2 (see :func:`map_state`). New parameters and parameters whose parent had
    no state are absent from the result (the caller gives them zero state).
    """
    current = dict(state)
    for step in steps:
        parent_names = set(_params(step.parent))
        nxt: dict[str, dict[str, np.ndarray]] = {}
        for name, shape in _params(step.child).items():
            rec = record(step, name, parent_names)
            src = current.get(rec.parent) if rec.kind != "new" else None
            if src is None:
                continue
            rule: Any = None if rec.kind == "same" else rec
            nxt[name] = {k: map_state(rule, a, shape, moment=moments[k]) for k, a in src.items()}
        current = nxt
    return current
