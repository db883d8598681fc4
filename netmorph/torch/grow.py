"""``grow(module, example_inputs, passes, optimizer=...)``: grow a torch module inside a training loop.

capture (export, or the graph a lowered module came from) -> passes through the
:class:`~netmorph.passes.PassManager` (each child verified in ONNX Runtime) -> lower -> a new
optimizer of the same class, groups and hyper-parameters, its state carried through the passes'
lineage (:mod:`netmorph.torch.trace`, :mod:`netmorph.torch.optim_state`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..errors import PreconditionError
from ..ir import Graph
from ..limits import check_optional_float
from .carry import GroupOf, carry_optimizer, ir_to_torch, origins_of
from .export import Captured, TensorSlot, capture, lowered_slots, remember
from .optim_state import STATE_MODES, rules_for
from .trace import Origin, Step


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
    unmapped
        Parent ``state_dict`` keys no IR parameter held (unused by ``forward``, or folded away).
    returned_class
        The qualified class name of :attr:`Grown.module`: the parent's own class (a
        ``transformers`` model, a torchvision ``ResNet`` / ``VisionTransformer``) or the lowered
        module's.
    fallback
        Why the child is a lowered module although the parent is of a class :func:`grow` rebuilds
        (the growth is no change of its constructor arguments); ``None`` otherwise.
    config
        Constructor argument (or config field) -> ``[parent value, child value]`` for those the
        growth changed, when the child is of the parent's own class.
    """

    passes: list[Any]
    name_map: dict[str, list[str]]
    origins: dict[str, tuple[str, str | None]]
    new: list[str]
    removed: list[str]
    source: str
    state: str | None = None
    unmapped: list[str] = field(default_factory=list)
    returned_class: str = ""
    fallback: str | None = None
    config: dict[str, list] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "passes": [p.to_dict() for p in self.passes], "name_map": self.name_map,
            "origins": {k: list(v) for k, v in self.origins.items()}, "new": self.new,
            "removed": self.removed, "source": self.source, "state": self.state,
            "unmapped": self.unmapped, "returned_class": self.returned_class, "fallback": self.fallback,
            "config": {k: _plain(v) for k, v in self.config.items()},
        }


def _plain(values: list) -> list:
    """Config values as JSON can hold them (a block or norm class by its name)."""
    return [v if isinstance(v, (int, float, str, bool, list, type(None))) else getattr(v, "__name__", repr(v))
            for v in values]


def _qualname(module: nn.Module) -> str:
    """``torchvision.models.resnet.ResNet``; a lowered module: ``torch.fx.graph_module.NetmorphModule``."""
    cls = type(module)
    return f"{cls.__module__}.{cls.__name__}"


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
        """Write a checkpoint :func:`netmorph.torch.load` reads (see :mod:`netmorph.torch.checkpoint`).

        Only for a lowered child: one of the user's own class (``report.returned_class``) is saved
        as any model of that class is (its ``state_dict``, ``save_pretrained``)."""
        from .checkpoint import CheckpointError, save

        if not hasattr(self.module, "netmorph_bindings"):
            raise CheckpointError(f"Grown.save writes lowered modules; this child is a "
                                  f"{type(self.module).__name__}: save its state_dict (or save_pretrained) "
                                  "as for any model of its class")

        save(path, self.module, self.optimizer, graph=self.graph)


def _passes(passes: Any, options: dict[str, Any]) -> list[Any]:
    from ..passes import Pass
    from ..passes.registry import make_passes

    items = [passes] if isinstance(passes, (str, Pass)) else list(passes)
    if options and not any(isinstance(p, str) for p in items):
        raise TypeError(f"pass options {sorted(options)} given but every pass is already a Pass object")
    return make_passes(items, options)  # each named pass takes the options it declares


def run_passes(graph: Graph, passes: Sequence[Any], *, verify: bool, seed: int, rtol: float | None = None,
               atol: float | None = None) -> tuple[list[Step], list]:
    """Apply ``passes`` one by one (pass ``i`` seeded ``seed + i``, as one PassManager run does).

    ``rtol`` / ``atol``: the verification tolerances of every child, overriding each pass's contract
    (``PassManager(rtol=, atol=)``; ``None``: the contract's, an exact one calibrated)."""
    from ..passes import PassManager

    steps, reports, current = [], [], graph
    for i, p in enumerate(passes):
        child, (rep,) = PassManager(verify=verify, rtol=rtol, atol=atol, seed=seed + i).run(current, [p])
        steps.append(Step(current, child, rep.lineage))
        reports.append(rep)
        current = child
    return steps, reports


def grow(module: nn.Module, example_inputs: Any, passes: Any, *,
         optimizer: torch.optim.Optimizer | None = None, verify: bool = True, state: str = "map",
         exporter: str = "auto", seed: int = 0, rtol: float | None = None, atol: float | None = None,
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
    rtol, atol
        Verification tolerances overriding every pass's contract (as ``netmorph grow --rtol/--atol``
        and ``PassManager(rtol=, atol=)``); they also bound the check of a rebuilt model's own
        forward (``transformers``, torchvision classes): ``max|child - parent| <= atol + rtol *
        max|parent|`` (``None``: ``1e-4`` and ``0``, the default check).
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
        ``module`` in the input's train/eval mode, on the device of its first parameter. A
        ``transformers`` model of a family :mod:`netmorph.hf` knows (GPT-2, Llama, Qwen2, Mistral)
        comes back as a model of **its own class** with the updated config (through
        :func:`netmorph.hf.grow`; ``example_inputs``: token ids). A torchvision ``ResNet`` or
        ``VisionTransformer`` comes back as **its own class** built with the updated constructor
        arguments when the growth is a change of them (ResNet: ``deepen`` with ``mode="generic"``
        -> ``layers``, a bottleneck-interior widening -> ``width_per_group``; ViT: ``deepen`` ->
        ``num_layers``, ``widen-mlp`` -> ``mlp_dim``, ``widen-hidden`` -> ``hidden_dim``), its
        weights loaded strictly and its own forward checked against the parent's
        (:mod:`netmorph.torch.classes`); otherwise, and for any other module, as a lowered one
        (``report.fallback`` says why a ResNet / ViT was not rebuilt).

    Raises
    ------
    netmorph.torch.ExportError, netmorph.errors.PreconditionError, netmorph.errors.VerificationError,
    netmorph.torch.OptimizerStateError
        Export failed, a pass does not apply, a child failed verification (in ONNX Runtime, or a
        rebuilt model's own forward), an optimizer whose state has no stated growth rule.
    """
    if state not in STATE_MODES:
        raise ValueError(f"state must be one of {', '.join(STATE_MODES)}, not {state!r}")
    if optimizer is not None and state == "map":
        rules_for(optimizer)  # refuse an unknown optimizer before any work
    rtol, atol = check_optional_float("rtol", rtol), check_optional_float("atol", atol)
    plist = _passes(passes, pass_options)
    inputs = example_inputs if isinstance(example_inputs, tuple) else (example_inputs,)
    if exporter in ("auto", "dynamo") and param_group_of is None and _hf_family(module):
        return _grow_hf(module, inputs, plist, optimizer, verify, state, seed, rtol, atol)
    cap = capture(module, inputs, exporter=exporter)
    steps, reports = run_passes(cap.graph, plist, verify=verify, seed=seed, rtol=rtol, atol=atol)
    graph = steps[-1].child if steps else cap.graph
    from ..lowering import lower

    first = next(iter(module.parameters()), None)
    floating = first is not None and first.is_floating_point()
    child = lower(graph, dtype=first.dtype if floating else torch.float32)
    if first is not None:
        child.to(first.device)
    child.train(module.training)
    remember(child, graph)
    slots, kept, config, fallback = lowered_slots(child), None, {}, None
    rules = _class_rules(module)
    if rules is not None:
        from .classes import rebuild

        try:
            rebuilt = rebuild(module, rules, cap, steps, graph, slots, inputs, verify=verify, seed=seed,
                              rtol=rtol, atol=atol)
        except PreconditionError as e:
            fallback = str(e)
        else:
            child, slots, kept, config = rebuilt.module, rebuilt.slots, rebuilt.kept, rebuilt.config
    report = _report(cap, slots, origins_of(steps, graph), reports, module, child)
    report.returned_class, report.fallback, report.config = _qualname(child), fallback, config
    _report_kept(report, kept, module, child)
    new_opt = None
    if optimizer is not None:
        report.state = state
        new_opt = carry_optimizer(optimizer, module, cap, steps, child, graph, state=state,
                                  param_group_of=param_group_of, slots=slots, kept=kept)
    return Grown(child, new_opt, report, graph)


def _report_kept(report: GrowthReport, kept: dict[str, str] | None, module: nn.Module,
                 child: nn.Module) -> None:
    """A rebuilt child's tensors the graph did not hold (zero biases the export dropped) are their
    parent tensors, ``same``, where the shapes agree (a widened one is ``new``)."""
    parent, mine = module.state_dict(), child.state_dict()
    for key, pk in (kept or {}).items():
        if pk in parent and parent[pk].shape == mine[key].shape:
            report.origins[key] = ("same", pk)
            report.name_map.setdefault(pk, []).append(key)
            if key in report.new:
                report.new.remove(key)


def _class_rules(module: nn.Module) -> dict[str, Any] | None:
    """The rules of a torchvision class :mod:`netmorph.torch.classes` rebuilds (``None``: any other
    module). Read by the class's module path: torchvision is not imported."""
    if not type(module).__module__.startswith("torchvision."):
        return None
    from .classes import rules_of

    return rules_of(module)


def _hf_family(module: nn.Module) -> bool:
    """Whether ``module`` is a ``transformers`` model of a family :mod:`netmorph.hf` writes back
    (then the child is a model of the same class with the new config, not a lowered module)."""
    kind = getattr(getattr(module, "config", None), "model_type", None)
    if kind is None or not hasattr(module, "save_pretrained"):
        return False
    from ..hf.families import FAMILIES

    return kind in FAMILIES


def _grow_hf(module, inputs, plist, optimizer, verify, state, seed, rtol, atol) -> Grown:
    """:func:`netmorph.hf.grow` behind :func:`grow`'s interface: ``Grown.module`` is of the user's class."""
    from ..hf import grow as hf_grow

    ids = inputs[0] if len(inputs) == 1 and isinstance(inputs[0], torch.Tensor) and inputs[0].ndim == 2 \
        and not inputs[0].is_floating_point() else None
    g = hf_grow(module, plist, optimizer=optimizer, verify=verify, state=state, seed=seed, example=ids,
                rtol=rtol, atol=atol)
    name_map: dict[str, list[str]] = {}
    for key, (_kind, parent) in g.origins.items():
        if parent is not None:
            name_map.setdefault(parent, []).append(key)
    new = [k for k, (kind, _p) in g.origins.items() if kind == "new"]
    report = GrowthReport(g.pass_reports, name_map, dict(g.origins), new, [], "dynamo",
                          state=state if optimizer is not None else None, returned_class=_qualname(g.model),
                          config={k: list(v) for k, v in g.report.get("config", {}).items() if v[0] != v[1]})
    return Grown(g.model, g.optimizer, report, g.graph, extra={"hf": g.report})


def _report(cap: Captured, slots: dict[str, TensorSlot], origins: dict[str, Origin], reports: list,
            module: nn.Module, child: nn.Module) -> GrowthReport:
    back = ir_to_torch(cap)
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
