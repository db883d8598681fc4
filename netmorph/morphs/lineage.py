"""Where each child parameter came from, and how optimizer state follows it.

A pass records one :class:`ParamLineage` per parameter it creates or changes; parameters it leaves
alone need no record (same name, same array in parent and child). The rule kinds:

| kind | weight | first moment (momentum, Adam ``exp_avg``) | second moment (``exp_avg_sq``) |
|---|---|---|---|
| ``same`` | copied from ``parent`` unchanged | copied | copied |
| ``new`` | fresh (split, inserted identity, zero branch) | zeros | zeros |
| ``gather`` | ``take(parent, index, axis)`` (widened producer / per-channel) | gathered | gathered |
| ``gather-divide`` | gathered, divided by ``divide`` on ``axis`` (consumer) | gathered / d | ... / d² |

Dividing the second moment by the square keeps Adam's normalised step ``m / sqrt(v)`` of a
divided weight divided by the same factor, as staged training does when it halves weights.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

KINDS = ("same", "new", "gather", "gather-divide")


@dataclass
class ParamLineage:
    """The origin of child parameter ``child``."""

    child: str
    kind: str
    parent: str | None = None
    axis: int = 0
    index: np.ndarray | None = None
    divide: np.ndarray | None = None
    note: str = ""
    then: list[ParamLineage] = field(default_factory=list)
    """Further gathers applied in order after this one (a conv widened as the consumer of one
    channel group and the producer of another: two axes); their ``parent`` is ``None``."""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"lineage kind {self.kind!r} is not one of {KINDS}")
        if self.kind != "new" and self.parent is None and self.kind not in ("gather", "gather-divide"):
            raise ValueError(f"lineage {self.kind!r} of {self.child!r} needs a parent parameter")

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"child": self.child, "kind": self.kind, "parent": self.parent}
        if self.kind in ("gather", "gather-divide"):
            d["axis"] = self.axis
            d["index"] = np.asarray(self.index).tolist()
        if self.note:
            d["note"] = self.note
        if self.then:
            d["then"] = [r.to_dict() for r in self.then]
        return d


@dataclass
class Lineage:
    """All records of one pass application (or of a chain, composed with :meth:`then`)."""

    records: dict[str, ParamLineage] = field(default_factory=dict)
    renamed: dict[str, str] = field(default_factory=dict)
    """``child name -> parent name`` for parameters moved unchanged under a new name."""

    def add(self, rec: ParamLineage) -> None:
        self.records[rec.child] = rec

    def origin(self, child: str) -> ParamLineage | None:
        """The record for ``child``; ``None`` means "unchanged, same name" when the parent has it."""
        if child in self.records:
            return self.records[child]
        if child in self.renamed:
            return ParamLineage(child, "same", parent=self.renamed[child])
        return None

    def to_dict(self) -> dict[str, Any]:
        out = {k: r.to_dict() for k, r in self.records.items()}
        for c, p in self.renamed.items():
            out.setdefault(c, {"child": c, "kind": "same", "parent": p})
        return out


def map_state(rec: ParamLineage | None, parent_state: np.ndarray | None, child_shape: tuple[int, ...],
              *, moment: int = 1) -> np.ndarray:
    """The child's optimizer-state array for ``rec`` from the parent's (``moment`` 1 or 2).

    ``rec is None`` means the parameter is unchanged. ``parent_state is None`` (no state yet)
    gives zeros.
    """
    if rec is not None and rec.kind == "new" or parent_state is None:
        return np.zeros(child_shape, dtype=np.float32 if parent_state is None else parent_state.dtype)
    s = np.asarray(parent_state)
    if rec is None or rec.kind == "same":
        out = s
    else:
        out = s
        for step in (rec, *rec.then):
            taken = np.take(out, np.asarray(step.index, dtype=np.int64), axis=step.axis)
            if step.kind == "gather-divide":
                shape = [1] * taken.ndim
                shape[step.axis] = -1
                d = np.asarray(step.divide, dtype=np.float64).reshape(shape) ** moment
                taken = (taken.astype(np.float64) / d).astype(s.dtype)
            out = taken
    if tuple(out.shape) != tuple(child_shape):
        raise ValueError(f"optimizer state of {rec.child if rec else '?'}: mapped shape {out.shape} "
                         f"!= parameter shape {tuple(child_shape)}")
    return out
