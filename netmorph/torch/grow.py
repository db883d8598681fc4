"""``grow(module, example_inputs, passes, optimizer=...)``: grow a torch module inside a training loop.

capture (export, or the graph a lowered module came from) -> passes through the
:class:`~netmorph.passes.PassManager` (each child verified in ONNX Runtime) -> lower -> a new
optimizer of the same class, groups and hyper-parameters, its state carried through the passes'
lineage (:mod:`netmorph.torch.trace`, :mod:`netmorph.torch.optim_state`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from ..ir import Graph
from .export import Captured, TensorSlot, capture, lowered_slots, remember
from .optim_state import STATE_MODES, OptimizerStateError, check_entries, rebuild, rules_for
from .trace import Origin, Step, carry_state, provenance

GroupOf = Callable[[str, torch.Tensor], int]
"""``param_group_of(child_key, tensor) -> group index`` for new parameters."""


@dataclass
class GrowthReport:
    """What :func:`grow` did.

    Attributes
    ----------
    passes
        One :class:`~netmorph.passes.PassReport` per pass (verification, lineage, timings).
    name_map
        Parent ``state_dict`` key -> child key(s) holding the same (or a gathered) tensor, so
        per-parameter bookkeeping (EMA weights, per-parameter schedules) can follow.
    origins
        Child key -> ``(kind, parent key or None)``; ``kind`` is ``same``, ``gather`` or ``new``.
    new, removed
        Child keys with no parent tensor; parent keys with no child (a split conv's kernel).
    source
        How the parent became a graph: ``dynamo``, ``torchscript`` or ``lowered`` (no export).
    state
        ``map``, ``reset``, or ``None`` when no optimizer was given.
    """

    passes: list[Any]
    name_map: dict[str, list[str]]
    origins: dict[str, tuple[str, str | None]]
    new: list[str]
    removed: list[str]
    source: str
    state: str | None = None
    unmapped: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "passes": [p.to_dict() for p in self.passes], "name_map": self.name_map,
            "origins": {k: list(v) for k, v in self.origins.items()}, "new": self.new,
            "removed": self.removed, "source": self.source, "state": self.state,
            "unmapped": self.unmapped,
        }


@dataclass
class Grown:
    """The result of :func:`grow`: the child ``module``, its ``optimizer``, the ``report``, the ``graph``."""

    module: nn.Module
    optimizer: torch.optim.Optimizer | None
    report: GrowthReport | None
    graph: Graph
    extra: dict[str, Any] = field(default_factory=dict)
    """The caller's own entries of a loaded checkpoint (epoch, scheduler state ...)."""

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The child module's ``state_dict`` (loads into :attr:`module` with ``strict=True``)."""
        return self.module.state_dict()

    def save(self, path: Any) -> None:
        """Write a checkpoint :func:`netmorph.torch.load` reads (see :mod:`netmorph.torch.checkpoint`)."""
        from .checkpoint import save

        save(path, self.module, self.optimizer, graph=self.graph)


def _passes(passes: Any, options: dict[str, Any]) -> list[Any]:
    from ..passes import Pass, get_pass

    items = [passes] if isinstance(passes, (str, Pass)) else list(passes)
    if options and not any(isinstance(p, str) for p in items):
        raise TypeError(f"pass options {sorted(options)} given but every pass is already a Pass object")
    return [get_pass(p, **options) if isinstance(p, str) else p for p in items]


def run_passes(graph: Graph, passes: Sequence[Any], *, verify: bool, seed: int) -> tuple[list[Step], list]:
    """Apply ``passes`` one by one (pass ``i`` seeded ``seed + i``, as one PassManager run does)."""
    from ..passes import PassManager

    steps, reports, current = [], [], graph
    for i, p in enumerate(passes):
        child, (rep,) = PassManager(verify=verify, seed=seed + i).run(current, [p])
        steps.append(Step(current, child, rep.lineage))
        reports.append(rep)
        current = child
    return steps, reports


def grow(module: nn.Module, example_inputs: Any, passes: Any, *,
         optimizer: torch.optim.Optimizer | None = None, verify: bool = True, state: str = "map",
         exporter: str = "auto", seed: int = 0,
         param_group_of: GroupOf | None = None, **pass_options: Any) -> Grown:
    """Grow ``module`` with ``passes``; return the child module and, given one, its optimizer.

    Parameters
    ----------
    module
        Any ``nn.Module`` ``torch.onnx.export`` can export (or a module an earlier :func:`grow`
        or :func:`netmorph.torch.load` returned: its graph is reused, nothing is exported).
    example_inputs
        A tensor or tuple of tensors to export with (ignored for a reused graph).
    passes
        A pass name (``"deepen"``), a :class:`~netmorph.passes.Pass`, or a list of them.
    optimizer
        The optimizer training ``module``; a new one of the same class, param groups and
        hyper-parameters over the child's parameters is returned, its state mapped.
    verify
        Verify every child against its parent in ONNX Runtime (the default; ``False`` only checks
        the graph and types).
    state
        ``map``: carry the optimizer state (SGD, Adam, AdamW; others are refused); ``reset``:
        a fresh state for any optimizer class.
    exporter
        ``auto`` (dynamo, then TorchScript), ``dynamo`` or ``torchscript``.
    seed
        Seed of the passes' solvers and of the verification inputs.
    param_group_of
        ``param_group_of(child_key, tensor) -> group index`` for every new parameter. Default:
        the group of the tensor it replaces when its pass records one (a split conv's factors
        and the identity BN / PReLU between them: the conv's group), else the group of the
        nearest parameter before it in the graph.
    **pass_options
        Options of the passes given by name (``level="all"``, ``solver="optgd"``).

    Returns
    -------
    Grown
        ``module`` in the input's train/eval mode, on the device of its first parameter.

    Raises
    ------
    netmorph.torch.ExportError, netmorph.errors.PreconditionError, netmorph.errors.VerificationError,
    netmorph.torch.OptimizerStateError
        Export failed, a pass does not apply, a child failed verification, an optimizer whose
        state has no stated growth rule.
    """
    if state not in STATE_MODES:
        raise ValueError(f"state must be one of {', '.join(STATE_MODES)}, not {state!r}")
    if optimizer is not None and state == "map":
        rules_for(optimizer)  # refuse an unknown optimizer before any work
    plist = _passes(passes, pass_options)
    inputs = example_inputs if isinstance(example_inputs, tuple) else (example_inputs,)
    cap = capture(module, inputs, exporter=exporter)
    steps, reports = run_passes(cap.graph, plist, verify=verify, seed=seed)
    graph = steps[-1].child if steps else cap.graph
    from ..lowering import lower

    first = next(iter(module.parameters()), None)
    floating = first is not None and first.is_floating_point()
    child = lower(graph, dtype=first.dtype if floating else torch.float32)
    if first is not None:
        child.to(first.device)
    child.train(module.training)
    remember(child, graph)
    report = _report(cap, lowered_slots(child), _origins(steps, graph), reports, module, child)
    new_opt = None
    if optimizer is not None:
        report.state = state
        new_opt = carry_optimizer(optimizer, module, cap, steps, child, graph, state=state,
                                  param_group_of=param_group_of)
    return Grown(child, new_opt, report, graph)


def _origins(steps: list[Step], graph: Graph) -> dict[str, Origin]:
    return provenance(steps) if steps else {v.name: Origin("same", v.name) for v in graph.parameters}


def carry_optimizer(optimizer: torch.optim.Optimizer, parent: nn.Module, captured: Captured,
                    steps: list[Step], child: nn.Module, graph: Graph, *, state: str = "map",
                    param_group_of: GroupOf | None = None) -> torch.optim.Optimizer:
    """A new optimizer over lowered ``child``'s parameters, with ``optimizer``'s state carried.

    ``captured`` is the parent as a graph (``steps[0].parent``) with its tensors' slots;
    ``steps`` the pass applications from it to ``graph``, which ``child`` was lowered from.
    This is the part of :func:`grow` a pipeline uses between stages.
    """
    rules = rules_for(optimizer) if state == "map" else {}
    slots = lowered_slots(child)
    return _optimizer(optimizer, parent, child, captured, slots, steps, _origins(steps, graph), rules,
                      param_group_of, graph)


def _ir_to_torch(cap: Captured) -> dict[str, str]:
    """IR parameter -> the parent's first ``state_dict`` key it holds."""
    out: dict[str, str] = {}
    for key, slot in cap.slots.items():
        out.setdefault(slot.ir, key)
    return out


def _report(cap: Captured, slots: dict[str, TensorSlot], origins: dict[str, Origin], reports: list,
            module: nn.Module, child: nn.Module) -> GrowthReport:
    back = _ir_to_torch(cap)
    name_map: dict[str, list[str]] = {}
    kinds: dict[str, tuple[str, str | None]] = {}
    new: list[str] = []
    for key in child.state_dict():
        slot = slots.get(key)
        o = origins.get(slot.ir) if slot is not None else None
        parent = back.get(o.root) if o is not None and o.root is not None else None
        if o is None or o.kind == "new" or parent is None:
            kinds[key] = ("new", None)
            if slot is not None:
                new.append(key)
            continue
        kinds[key] = (o.kind, parent)
        name_map.setdefault(parent, []).append(key)
    removed = [k for k in cap.slots if k not in name_map]
    return GrowthReport(reports, name_map, kinds, new, removed, cap.source, unmapped=list(cap.unmapped))


def _optimizer(optimizer, module, child, cap, slots, steps, origins, rules, group_of, graph):
    params = dict(module.named_parameters())
    key_of = {id(p): k for k, p in params.items()}
    group_of_key: dict[str, int] = {}
    for gi, g in enumerate(optimizer.param_groups):
        for p in g["params"]:
            if id(p) not in key_of:
                raise OptimizerStateError("the optimizer holds a tensor that is not a parameter of the "
                                          "module")
            group_of_key[key_of[id(p)]] = gi
    back = _ir_to_torch(cap)
    child_params = dict(child.named_parameters())
    groups: list[list[nn.Parameter]] = [[] for _ in optimizer.param_groups]
    placed: dict[str, int] = {}
    pending: list[str] = []
    for key, p in child_params.items():
        if not p.requires_grad:
            continue
        o = origins.get(slots[key].ir) if key in slots else None
        parent = back.get(o.root) if o is not None and o.root is not None else None
        if group_of is not None and (o is None or o.kind == "new"):
            placed[key] = int(group_of(key, p))
        elif parent is not None:
            if parent in group_of_key:
                placed[key] = group_of_key[parent]
            # else: a parent the optimizer does not train; neither does it train the child
        else:
            pending.append(key)
    _place_by_neighbour(pending, placed, slots, graph, len(groups))
    for key, p in child_params.items():
        if key in placed:
            groups[placed[key]].append(p)
    new_opt = rebuild(optimizer, groups)
    if rules:
        _carry(optimizer, new_opt, params, child_params, placed, cap, slots, steps, origins, rules, back)
    return new_opt


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


def _carry(optimizer, new_opt, params, child_params, placed, cap, slots, steps, origins, rules, back) -> None:
    cls = type(optimizer).__name__
    moments = {k: m for k, m in rules.items() if m}
    ir_state: dict[str, dict[str, np.ndarray]] = {}
    counters: dict[str, dict[str, Any]] = {}
    templates: dict[int, dict[str, Any]] = {}  # group -> a parent state (which entries exist)
    key_of = {id(q): k for k, q in params.items()}
    for gi, g in enumerate(optimizer.param_groups):
        for p in g["params"]:
            entries = optimizer.state.get(p)
            key = key_of[id(p)]
            if not entries:
                continue
            check_entries(key, entries, rules, cls)
            templates.setdefault(gi, entries)
            slot = cap.slots.get(key)
            if slot is None:
                continue  # no IR parameter (unused by forward): nothing in the child follows it
            shape = tuple(cap.graph.value(slot.ir).const.shape)
            arrays = {k: slot.to_ir(_np(v), shape) for k, v in entries.items()
                      if moments.get(k) and isinstance(v, torch.Tensor)}
            ir_state.setdefault(slot.ir, arrays)
            counters.setdefault(slot.ir, {k: v for k, v in entries.items() if rules[k] == 0 or v is None})
    mapped = carry_state(steps, ir_state, moments) if steps else ir_state
    for key, p in child_params.items():
        if key not in placed or placed[key] not in templates:
            continue  # a group with no state yet: the new optimizer starts it lazily, as torch does
        template = templates[placed[key]]
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
