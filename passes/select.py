"""Choosing what a pass acts on: levels and blocks of the recognised DynamicNet structure."""

from __future__ import annotations

from typing import Any

from ..errors import PreconditionError
from ..ir import Graph


def recognise(graph: Graph) -> Any:
    """The DynamicNet structure of ``graph`` (:func:`netmorph.structure.recognise`)."""
    from .. import structure

    return structure.recognise(graph)


def depth_of(graph: Graph) -> int | None:
    """The paper's depth of ``graph``, or ``None`` when it is not a recognisable DynamicNet."""
    from ..errors import NetmorphError

    try:
        return int(recognise(graph).depth)
    except (NetmorphError, ImportError):
        return None


def parse_level(level: Any) -> int | str | None:
    """``"all"``, an integer level index, or ``None``; anything else is a precondition error."""
    if level is None or level == "all":
        return level
    try:
        return int(level)
    except (TypeError, ValueError):
        raise PreconditionError(f"level must be an integer or 'all', not {level!r}") from None


def select_levels(structure: Any, level: Any, what: str) -> list[Any]:
    """The levels named by ``level`` (an index, or ``"all"``)."""
    level = parse_level(level)
    levels = list(structure.levels)
    if level == "all":
        return levels
    for lv in levels:
        if lv.index == level:
            return [lv]
    have = ", ".join(str(lv.index) for lv in levels) or "none"
    raise PreconditionError(f"{what}: level {level} is out of range (the graph has levels {have})")


def find_block(structure: Any, name: str, what: str) -> tuple[Any, Any]:
    """``(level, block)`` for the block called ``name``."""
    for lv in structure.levels:
        for b in lv.blocks:
            if b.name == name:
                return lv, b
    names = [b.name for lv in structure.levels for b in lv.blocks]
    shown = ", ".join(names[:6]) + (" …" if len(names) > 6 else "")
    raise PreconditionError(f"{what}: no block named {name!r} (blocks: {shown})")


def template_convs(level: Any) -> list[str]:
    """Main-path conv node names of the template blocks of ``level`` (the switch excluded)."""
    return [c for b in level.blocks if b.kind == "template" for c in b.convs]
