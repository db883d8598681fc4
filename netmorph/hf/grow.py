"""``grow(model, passes, optimizer=...)``: grow a ``transformers`` model into the same class.

export (dynamo; initializers keep the ``state_dict`` names) -> the ONNX passes, each child verified
in ONNX Runtime -> the child's tensors placed by the family's rule table (:mod:`.families`,
:mod:`.mapping`) into a model of the parent's class built from the updated config -> that model's
own torch forward checked against the parent's -> the optimizer's state carried through the
passes' lineage.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import PreconditionError
from ..limits import check_optional_float
from ..torch.agreement import RTOL, judge  # noqa: F401 - RTOL: the bound this module documents
from ..torch.carry import carry_optimizer, origins_of
from ..torch.export import TensorSlot, capture
from ..torch.grow import _passes, run_passes
from ..torch.optim_state import STATE_MODES, rules_for
from .families import FAMILIES
from .mapping import child_config, load_placed, parent_key_of, place, reading


class Logits(nn.Module):
    """A causal LM as ``ids -> logits`` (what is exported; its parameters are the model's own)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.train(model.training)  # capture() restores the wrapper's mode on the model: keep eval

    def forward(self, ids):
        return self.model(input_ids=ids, use_cache=False).logits


@dataclass
class HFGrown:
    """The grown ``model`` (the parent's class), its ``optimizer`` and the growth ``report``."""

    model: nn.Module
    optimizer: torch.optim.Optimizer | None
    report: dict[str, Any] = field(default_factory=dict)
    graph: Any = None
    """The grown ONNX graph (IR) the checkpoint was placed from."""
    pass_reports: list = field(default_factory=list)
    origins: dict[str, tuple[str, str | None]] = field(default_factory=dict)
    """Child ``state_dict`` key -> ``(kind, parent key or None)``; ``kind``: same, gather or new."""


def family_of(model: nn.Module) -> dict:
    kind = getattr(getattr(model, "config", None), "model_type", None)
    if kind not in FAMILIES:
        raise PreconditionError(f"model type {kind!r} has no checkpoint rules (known: {', '.join(FAMILIES)})")
    return FAMILIES[kind]


def example_ids(config, family: dict, seed: int, batch: int = 2, length: int = 8) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    length = min(length, int(getattr(config, family["positions"], length)))
    return torch.randint(0, int(getattr(config, family["vocab"])), (batch, length), generator=g)


def grow(model: nn.Module, passes: Any, *, optimizer: torch.optim.Optimizer | None = None,
         verify: bool = True, state: str = "map", seed: int = 0, example: torch.Tensor | None = None,
         rtol: float | None = None, atol: float | None = None, **pass_options: Any) -> HFGrown:
    """Grow ``transformers`` causal LM ``model`` with ``passes`` (names or Pass objects).

    Returns a model of ``type(model)`` with the updated config (layers, MLP width), its weights
    placed by the family's rules, checked by its own forward against ``model``'s (eval mode), and,
    given ``optimizer`` (over ``model``'s parameters), a new one of the same class over the child's
    parameters with the state carried (``state="map"``) or fresh (``"reset"``). ``example``: token
    ids to export with (default: random ids, batch 2, length 8).

    ``rtol`` / ``atol`` (``netmorph grow-hf --rtol/--atol``): the tolerances every child is verified
    with in ONNX Runtime, overriding each pass's contract (``PassManager(rtol=, atol=)``; ``None``:
    the contract's, an exact contract against the parent's calibrated rounding noise). They bound
    the grown model's own forward too: ``max|child - parent| <= atol + rtol * max|parent|`` over
    the logits, with ``rtol`` :data:`RTOL` and ``atol`` 0 where not given (so ``rtol=0, atol=0``
    asks for bit-identical logits in both checks). Raises :class:`VerificationError` when a check
    fails.
    """
    rtol, atol = check_optional_float("rtol", rtol), check_optional_float("atol", atol)
    if state not in STATE_MODES:
        raise ValueError(f"state must be one of {', '.join(STATE_MODES)}, not {state!r}")
    family = family_of(model)
    if optimizer is not None and state == "map":
        rules_for(optimizer)
    plist = _passes(passes, pass_options)
    what = f"{type(model).__name__}"
    was_training = model.training
    model.eval()
    wrapper = Logits(model)
    ids = example if example is not None else example_ids(model.config, family, seed)
    seq_max = int(getattr(model.config, family["positions"])) if family.get("position_table") else None
    cap = capture(wrapper, (ids,), exporter="dynamo", seq_max=seq_max)
    _tied_by_data_flow(cap, family)
    steps, reports = run_passes(cap.graph, plist, verify=verify, seed=seed, rtol=rtol, atol=atol)
    graph = steps[-1].child if steps else cap.graph
    parent_slots = {k.removeprefix("model."): s for k, s in cap.slots.items()}
    placed = place(graph, parent_slots, origins_of(steps, graph), family, what)
    shapes = {k: tuple(t.shape) for k, t in model.state_dict().items()}
    cfg = child_config(model.config, placed, family, what, (reading(cap.graph), reading(graph)), shapes)
    untied = _untie_if_needed(cfg, graph, placed, family)
    try:  # the config must survive a save / from_pretrained round trip (its validators run there)
        cfg = cfg.__class__.from_dict(cfg.to_dict())
        child = type(model)(cfg).eval()
    except Exception as e:  # noqa: BLE001 - the config class's validators raise their own types
        raise PreconditionError(f"{what}: this growth is not a config change of {type(model).__name__} "
                                f"({_reason(e)})") from None
    load_placed(child, graph, placed, model.state_dict(), cap.unmapped, family, what, prefix="model.")
    if verify:
        check_forward(model, child, family, seed, what, rtol=rtol, atol=atol)
    child.train(was_training)
    model.train(was_training)
    new_opt = None
    if optimizer is not None:
        new_opt = _carry(optimizer, wrapper, cap, steps, child, graph, placed, family, state)
    report = {
        "passes": [r.to_dict() for r in reports], "verified": verify,
        "config": {k: [getattr(model.config, k, None), getattr(cfg, k, None)]
                   for k in [*family["config"], family["tied"][0]] if hasattr(cfg, k)},
        "untied": untied,
        "tensors": {p.key: p.ir for p in placed},
    }
    origins = origins_of(steps, graph)
    back = {s.ir: k for k, s in reversed(list(parent_slots.items()))}
    kinds = {}
    for p in placed:
        o = origins.get(p.ir)
        parent = back.get(o.root) if o is not None and o.root is not None and o.kind != "new" else None
        kinds[p.key] = (o.kind, parent) if parent is not None else ("new", None)
    return HFGrown(child, new_opt, report, graph, reports, kinds)


def _reason(e: BaseException) -> str:
    """The most specific line of a config validator's message (its last non-empty one)."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return lines[-1] if lines else type(e).__name__


def _tied_by_data_flow(cap, family: dict) -> None:
    """Tied token embedding and output head: one torch tensor, two IR parameters (the exporter
    folds the head's transpose into a copy). Which key is which is told by who reads each IR
    parameter (a ``Gather``'s table is the embedding, a ``MatMul`` / ``Gemm`` operand the head),
    never by value: in the parent both hold the same numbers, after ``widen-hidden`` they do not."""
    _field, emb, head = family.get("tied", (None, None, None))
    emb, head = f"model.{emb}", f"model.{head}"
    if emb not in cap.slots or head not in cap.slots or cap.slots[emb].ir == cap.slots[head].ir:
        return
    role = {}
    for key in (emb, head):
        ir = cap.slots[key].ir
        ops = {n.op_type for n, i in cap.graph.value(ir).uses()}
        role[key] = "emb" if ops == {"Gather"} else "head" if ops and ops <= {"MatMul", "Gemm"} else None
    if role[emb] == "head" and role[head] == "emb":
        irs = {emb: cap.slots[head].ir, head: cap.slots[emb].ir}
        for key, ir in irs.items():
            shape = tuple(cap.graph.value(ir).const.shape)
            old = cap.slots[key]
            torch_shape = tuple(old.shape[::-1] if old.transpose else old.shape)
            cap.slots[key] = TensorSlot(ir, shape, transpose=shape != torch_shape)


def _untie_if_needed(cfg, graph, placed, family: dict) -> str | None:
    """A tied output head that the growth made differ from the token embedding (``widen-hidden``
    scales the head's duplicated input columns, the embedding duplicates its columns unscaled) is
    untied in ``cfg``: one tensor cannot hold both. Returns why, or ``None`` when nothing changed."""
    field, emb, head = family.get("tied", (None, None, None))
    if field is None or not getattr(cfg, field, False):
        return None
    by_key = {p.key: p for p in placed}
    if emb not in by_key or head not in by_key:
        return None
    a, b = (by_key[k].slot.from_ir(graph.value(by_key[k].ir).const.array, by_key[k].shape)
            for k in (emb, head))
    if a.shape == b.shape and np.array_equal(a, b):
        return None
    setattr(cfg, field, False)
    return (f"{head} no longer equals {emb} after the growth (a wider hidden stream scales the head's "
            f"duplicated inputs): {field} set to false, the two are saved apart")


def check_forward(parent: nn.Module, child: nn.Module, family: dict, seed: int, what: str, *,
                  rtol: float | None = None, atol: float | None = None) -> float:
    """The child's logits against the parent's on two random batches (two lengths), judged by
    :func:`netmorph.torch.agreement.judge` (``atol + rtol * max|p|``; ``rtol``: :data:`RTOL`,
    ``atol``: 0 when ``None``); the worst ``max|c - p| / max|p|``."""

    def pairs():
        for i, length in enumerate((8, 5)):
            ids = example_ids(parent.config, family, seed + 100 + i, batch=3, length=length)
            yield parent(input_ids=ids, use_cache=False).logits, child(input_ids=ids, use_cache=False).logits

    with torch.no_grad():
        return judge(pairs(), rtol=rtol, atol=atol, what=(f"{what}: the grown model's logits", "logits"))


def _carry(optimizer, wrapper, cap, steps, child, graph, placed, family, state):
    """The optimizer over ``child``'s parameters, its state carried (netmorph.torch's rules).

    Parameters the export folded into constants (GPT-2's position table at the export's length)
    are not in the graph: they are the parent's tensor unchanged, so they keep its group and state.
    """
    keys = {p.key for p in placed}
    parent_keys = dict(wrapper.named_parameters())
    kept = {}
    for k, q in child.named_parameters():
        src = "model." + parent_key_of(k, placed, family)
        if k not in keys and q.requires_grad and src in parent_keys:
            kept[k] = src
    return carry_optimizer(optimizer, wrapper, cap, steps, child, graph, state=state,
                           slots={p.key: p.slot for p in placed}, kept=kept)
