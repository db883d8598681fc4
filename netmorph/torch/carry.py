"""The optimizer of a grown module: same class, groups and hyper-parameters; state carried.

:func:`carry_optimizer` places every child parameter in a param group (that of the parent tensor
it comes from; for a new one, a caller's rule or its neighbourhood) and maps each parameter's
state entries through the lineage of the passes (:mod:`netmorph.torch.trace`) with the rules of
:mod:`netmorph.torch.optim_state`. :func:`netmorph.torch.grow` and the pipelines'
``carry_optimizer`` both use it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from ..ir import Graph
from .export import Captured, TensorSlot, lowered_slots
from .optim_state import OptimizerStateError, check_entries, rebuild, rules_for
from .trace import Origin, Step, carry_state, provenance

GroupOf = Callable[[str, torch.Tensor], int]
"""``param_group_of(child_key, tensor) -> group index`` for new parameters."""


def origins_of(steps: list[Step], graph: Graph) -> dict[str, Origin]:
    """Final IR parameter -> :class:`Origin` (every parameter ``same`` when no pass ran)."""
    return provenance(steps) if steps else {v.name: Origin("same", v.name) for v in graph.parameters}


def ir_to_torch(cap: Captured) -> dict[str, str]:
    """IR parameter -> the parent's first ``state_dict`` key it holds."""
    out: dict[str, str] = {}
    for key, slot in cap.slots.items():
        out.setdefault(slot.ir, key)
    return out


@dataclass
class _Growth:
    """Everything that relates the parent's tensors to the child's."""

    parent: Captured
    steps: list[Step]
    graph: Graph
    slots: dict[str, TensorSlot]
    origins: dict[str, Origin]
    back: dict[str, str]
    kept: dict[str, str]

    def parent_key(self, child_key: str) -> tuple[Origin | None, str | None]:
        slot = self.slots.get(child_key)
        o = self.origins.get(slot.ir) if slot is not None else None
        return o, (self.back.get(o.root) if o is not None and o.root is not None else None)


def carry_optimizer(optimizer: torch.optim.Optimizer, parent: nn.Module, captured: Captured,
                    steps: list[Step], child: nn.Module, graph: Graph, *, state: str = "map",
                    param_group_of: GroupOf | None = None, slots: dict[str, TensorSlot] | None = None,
                    kept: dict[str, str] | None = None) -> torch.optim.Optimizer:
    """A new optimizer over ``child``'s parameters, with ``optimizer``'s state carried.

    Parameters
    ----------
    optimizer, parent
        The optimizer and the module it trains.
    captured
        ``parent`` as a graph (``steps[0].parent``) with its tensors' slots.
    steps
        The pass applications from ``captured.graph`` to ``graph``.
    child, graph
        The child and the graph it was lowered from (or placed from).
    state
        ``map`` (SGD, Adam, AdamW; others refused) or ``reset`` (empty state, any class).
    param_group_of
        The group of every new parameter (default: see :func:`netmorph.torch.grow`).
    slots
        Child ``state_dict`` key -> the IR parameter it holds, for a child that is not a lowered
        module (a model of the parent's own class; default: the lowered module's binding table).
    kept
        Child key -> parent key for child parameters no IR parameter holds (a tensor the export
        folded away or dropped as zero): the parent tensor's group, and its state where the
        shapes agree (else zero state).
    """
    rules = rules_for(optimizer) if state == "map" else {}
    slots = lowered_slots(child) if slots is None else slots
    kept = dict(kept or {})
    growth = _Growth(captured, steps, graph, slots, origins_of(steps, graph), ir_to_torch(captured), kept)
    aliases: dict[int, list[str]] = {}  # a tied tensor (embedding = output head) has several keys
    for k, p in parent.named_parameters(remove_duplicate=False):
        aliases.setdefault(id(p), []).append(k)
    group_of_key: dict[str, int] = {}
    for gi, g in enumerate(optimizer.param_groups):
        for p in g["params"]:
            if id(p) not in aliases:
                raise OptimizerStateError("the optimizer holds a tensor that is not a parameter of the "
                                          "module")
            for k in aliases[id(p)]:
                group_of_key[k] = gi
    child_params = dict(child.named_parameters())
    placed = _place(growth, child_params, group_of_key, param_group_of, len(optimizer.param_groups))
    groups: list[list[nn.Parameter]] = [[] for _ in optimizer.param_groups]
    for key, p in child_params.items():
        if key in placed:
            groups[placed[key]].append(p)
    new = rebuild(optimizer, groups)
    if rules:
        _carry_state(optimizer, new, aliases, child_params, placed, growth, rules)
    return new


def _place(growth: _Growth, child_params: dict[str, nn.Parameter], group_of_key: dict[str, int],
           group_of: GroupOf | None, n_groups: int) -> dict[str, int]:
    """Child key -> group index for every child parameter the new optimizer trains."""
    placed: dict[str, int] = {}
    pending: list[str] = []
    for key, p in child_params.items():
        if not p.requires_grad:
            continue
        if key in growth.kept:
            if growth.kept[key] in group_of_key:
                placed[key] = group_of_key[growth.kept[key]]
            continue
        o, parent = growth.parent_key(key)
        if group_of is not None and (o is None or o.kind == "new"):
            placed[key] = int(group_of(key, p))
        elif parent is not None:
            if parent in group_of_key:
                placed[key] = group_of_key[parent]
            # else: a parent the optimizer does not train; neither does it train the child
        else:
            pending.append(key)
    _place_by_neighbour(pending, placed, growth.slots, growth.graph, n_groups)
    return placed


def _place_by_neighbour(pending: list[str], placed: dict[str, int], slots: dict[str, TensorSlot],
                        graph: Graph, n_groups: int) -> None:
    """New parameters with no parent join the group of the nearest placed parameter before them."""
    if not pending:
        return
    ir_group = {slots[k].ir: g for k, g in placed.items() if k in slots}
    last, order = None, {}
    for node in graph.nodes:
        for v in node.inputs:
            if v is not None and v.name in ir_group:
                last = ir_group[v.name]
        for v in node.inputs:
            if v is not None and v.const is not None:
                order.setdefault(v.name, last)
    fallback = next(iter(ir_group.values()), 0) if n_groups else 0
    for key in pending:
        g = order.get(slots[key].ir) if key in slots else None
        placed[key] = fallback if g is None else g


def _carry_state(optimizer, new_opt, aliases, child_params, placed, growth: _Growth, rules) -> None:
    """Map each parent parameter's state entries to the child's (IR layout in between); a tied
    tensor's state follows each of its keys (the child may hold them apart)."""
    cap, slots, origins = growth.parent, growth.slots, growth.origins
    cls = type(optimizer).__name__
    moments = {k: m for k, m in rules.items() if m}
    ir_state: dict[str, dict[str, np.ndarray]] = {}
    counters: dict[str, dict[str, Any]] = {}
    templates: dict[int, dict[str, Any]] = {}  # group -> a parent state (which entries exist)
    for gi, g in enumerate(optimizer.param_groups):
        for p in g["params"]:
            entries = optimizer.state.get(p)
            if not entries:
                continue
            check_entries(aliases[id(p)][0], entries, rules, cls)
            templates.setdefault(gi, entries)
            for key in aliases[id(p)]:
                slot = cap.slots.get(key)
                if slot is None:
                    continue  # no IR parameter (unused by forward): nothing in the child follows it
                shape = tuple(cap.graph.value(slot.ir).const.shape)
                arrays = {k: slot.to_ir(_np(v), shape) for k, v in entries.items()
                          if moments.get(k) and isinstance(v, torch.Tensor)}
                ir_state.setdefault(slot.ir, arrays)
                counters.setdefault(slot.ir, {k: v for k, v in entries.items() if rules[k] == 0 or v is None})
    mapped = carry_state(growth.steps, ir_state, moments) if growth.steps else ir_state
    by_key = {k: p for p in _trained(optimizer) for k in aliases[id(p)]}
    for key, p in child_params.items():
        if key not in placed or placed[key] not in templates:
            continue  # a group with no state yet: the new optimizer starts it lazily, as torch does
        template = templates[placed[key]]
        if key in growth.kept:
            entries = optimizer.state.get(by_key.get(growth.kept[key]))
            same = entries and all(v.shape == p.shape for k, v in entries.items()
                                   if moments.get(k) and isinstance(v, torch.Tensor))
            new_opt.state[p] = {k: (v.detach().clone() if isinstance(v, torch.Tensor) else v)
                                for k, v in entries.items()} if same else _zeros(template, rules, p)
            continue
        slot = slots[key]
        o = origins.get(slot.ir)
        arrays = mapped.get(slot.ir)
        root = counters.get(o.root) if o is not None and o.kind != "new" and o.root else None
        if arrays is None or root is None:
            new_opt.state[p] = _zeros(template, rules, p)
            continue
        entry: dict[str, Any] = {k: (None if v is None else v.clone()) for k, v in root.items()}
        for k, a in arrays.items():
            t = torch.from_numpy(np.array(slot.from_ir(a, tuple(p.shape)), copy=True, order="C"))
            entry[k] = t.to(device=p.device, dtype=p.dtype)
        new_opt.state[p] = entry


def _trained(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    """Every tensor ``optimizer`` trains, group by group."""
    return [p for g in optimizer.param_groups for p in g["params"]]


def _zeros(template: dict[str, Any], rules: dict[str, int], p: torch.Tensor) -> dict[str, Any]:
    """Zero state for a new parameter with the entries its siblings have (``step`` 0)."""
    out: dict[str, Any] = {}
    for k, v in template.items():
        if v is None:
            out[k] = None
        elif rules[k] == 0:
            out[k] = torch.zeros_like(v)
        else:
            out[k] = torch.zeros_like(p, memory_format=torch.preserve_format).detach()
    return out


def _np(t: torch.Tensor) -> np.ndarray:
    """A copy (never a view: the parent optimizer's tensors must not alias the child's)."""
    return t.detach().to("cpu").contiguous().numpy().copy()
