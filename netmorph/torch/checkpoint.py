"""Grown checkpoints: the graph (ONNX bytes) with the module and optimizer state, ``weights_only`` safe.

A checkpoint is one ``torch.save`` of a dict holding only tensors, numbers, strings, lists and
dicts, so ``torch.load(weights_only=True)`` reads it and loading never runs code from the file::

    {"format": "netmorph-torch-checkpoint/1",
     "graph": uint8 tensor,            # the ONNX model (architecture and, written back, weights)
     "state_dict": {...},              # module.state_dict() of the lowered module
     "training": bool,                 # the module's mode
     "optimizer": None | {"class": "Adam",          # a torch.optim class name
                          "groups": [[key, ...]],   # state_dict keys of each param group
                          "state_dict": {...}},     # optimizer.state_dict()
     "extra": {...}}                   # the caller's own (epoch, scheduler state ...)

Lowering the graph gives the same module paths every time, so the saved ``state_dict`` loads
with ``strict=True``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from google.protobuf.message import DecodeError
from torch import nn

from ..atomic import atomic_open
from ..errors import NetmorphError
from ..ir import Graph
from ..onnx_io import from_onnx, to_onnx
from .export import _GRAPHS, first_line, remember

FORMAT = "netmorph-torch-checkpoint/1"


class CheckpointError(NetmorphError):
    """A file that is not a readable netmorph.torch checkpoint (the message says why)."""


def save(path: str | Path, module: nn.Module, optimizer: torch.optim.Optimizer | None = None, *,
         graph: Graph | None = None, extra: dict[str, Any] | None = None) -> None:
    """Write ``module`` (a module :func:`netmorph.torch.grow` or :func:`load` returned) atomically.

    ``graph`` defaults to the graph the module was lowered from; the module's current weights
    are written back into it first, so the ONNX model in the checkpoint is the trained one.
    """
    from ..lowering import write_back

    graph = graph if graph is not None else _GRAPHS.get(module)
    if graph is None:
        raise CheckpointError("save needs the module's graph: pass graph= or a module netmorph.torch made")
    proto = to_onnx(write_back(graph, module)).SerializeToString()
    state: dict[str, Any] = {
        "format": FORMAT,
        "graph": torch.from_numpy(np.frombuffer(proto, dtype=np.uint8).copy()),
        "state_dict": {k: v.detach().cpu() for k, v in module.state_dict().items()},
        "training": bool(module.training),
        "optimizer": None if optimizer is None else _optimizer_entry(module, optimizer),
        "extra": dict(extra or {}),
    }
    with atomic_open(Path(path), "wb") as f:
        torch.save(state, f)


def _optimizer_entry(module: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    key_of = {id(p): k for k, p in module.named_parameters()}
    groups = []
    for g in optimizer.param_groups:
        missing = [p for p in g["params"] if id(p) not in key_of]
        if missing:
            raise CheckpointError("the optimizer holds a tensor that is not a parameter of the module")
        groups.append([key_of[id(p)] for p in g["params"]])
    return {"class": type(optimizer).__name__, "groups": groups, "state_dict": optimizer.state_dict()}


def load(path: str | Path, *, map_location: str | torch.device = "cpu",
         optimizer_class: type | None = None):
    """Read a checkpoint :func:`save` wrote: a :class:`~netmorph.torch.Grown` (``report`` is ``None``).

    The optimizer is rebuilt when the checkpoint holds one: its class from ``torch.optim`` by name
    (or ``optimizer_class``), its groups by ``state_dict`` key, then ``load_state_dict``; its
    per-parameter state must name the checkpoint's parameters and, for element-wise optimizers
    (SGD, Adam …), have their shapes. ``grown.extra`` holds the caller's ``extra`` dict.

    Raises
    ------
    CheckpointError
        Not a netmorph.torch checkpoint, unreadable, malformed, or its state does not fit its graph.
    """
    try:
        ck = torch.load(Path(path), map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises several types for corrupt or unsafe files
        raise CheckpointError(f"{path}: cannot read checkpoint ({first_line(e)})") from e
    if not isinstance(ck, dict) or ck.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a netmorph.torch checkpoint")
    try:
        return _load(path, ck, map_location, optimizer_class)
    except CheckpointError:
        raise
    except (NetmorphError, KeyError, TypeError, ValueError, IndexError, AttributeError, RuntimeError,
            DecodeError, UnicodeError, MemoryError, RecursionError, OverflowError) as e:
        # a crafted file fails somewhere deep inside torch or onnx: it is still a bad checkpoint
        raise CheckpointError(f"{path}: malformed checkpoint ({type(e).__name__}: {first_line(e)})") from None


def _field(path, ck: dict, key: str, kind: type | tuple[type, ...], optional: bool = False) -> Any:
    if key not in ck:
        raise CheckpointError(f"{path}: malformed checkpoint (no {key!r})")
    value = ck[key]
    if optional and value is None:
        return None
    if not isinstance(value, kind):
        raise CheckpointError(f"{path}: malformed checkpoint ({key!r} is a {type(value).__name__})")
    return value


def _load(path, ck: dict, map_location, optimizer_class: type | None):
    from ..lowering import lower
    from .grow import Grown

    raw = _field(path, ck, "graph", torch.Tensor)
    if raw.dtype != torch.uint8 or raw.dim() != 1:
        raise CheckpointError(f"{path}: malformed checkpoint ('graph' is not a 1-D uint8 tensor)")
    state_dict = _field(path, ck, "state_dict", dict)
    if not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state_dict.items()):
        raise CheckpointError(f"{path}: malformed checkpoint ('state_dict' must map names to tensors)")
    training = _field(path, ck, "training", bool)
    entry = _field(path, ck, "optimizer", dict, optional=True)
    extra = _field(path, ck, "extra", dict, optional=True) if "extra" in ck else None
    try:
        proto = onnx.load_from_string(raw.cpu().numpy().tobytes())
    except (DecodeError, RuntimeError, ValueError) as e:
        raise CheckpointError(f"{path}: its graph is not a readable ONNX model ({first_line(e)})") from None
    graph = from_onnx(proto)
    module = lower(graph)
    try:
        module.load_state_dict(state_dict, strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"{path}: the saved state does not fit the saved graph "
                              f"({first_line(e)})") from None
    module.to(map_location)
    module.train(training)
    remember(module, graph)
    optimizer = None
    if entry is not None:
        optimizer = _rebuild_optimizer(path, module, entry, optimizer_class)
    return Grown(module, optimizer, None, graph, dict(extra or {}))


ELEMENTWISE_OPTIMIZERS = ("SGD", "Adam", "AdamW", "Adamax", "NAdam", "RAdam", "RMSprop", "Adagrad",
                          "Adadelta", "ASGD", "Rprop", "SparseAdam")
"""Optimizers whose per-parameter state tensors have the parameter's shape (or are scalars)."""


def _rebuild_optimizer(path, module: nn.Module, entry: dict[str, Any], cls: type | None):
    name = entry.get("class")
    if cls is None:
        cls = getattr(torch.optim, str(name), None)
        known = isinstance(cls, type) and issubclass(cls, torch.optim.Optimizer)
        if not known or cls is torch.optim.Optimizer:
            raise CheckpointError(f"{path}: optimizer class {name!r} is not in torch.optim; "
                                  "pass optimizer_class=")
    params = dict(module.named_parameters())
    sd, keys = entry.get("state_dict"), entry.get("groups")
    if not isinstance(sd, dict) or not isinstance(sd.get("param_groups"), list) or \
            not isinstance(sd.get("state"), dict):
        raise CheckpointError(f"{path}: malformed optimizer entry (no state_dict with state and "
                              "param_groups)")
    if not isinstance(keys, list) or not all(isinstance(g, list) and all(isinstance(k, str) for k in g)
                                             for g in keys) or len(keys) != len(sd["param_groups"]):
        raise CheckpointError(f"{path}: malformed optimizer entry (groups must be one list of parameter "
                              "names per param group)")
    missing = sorted({k for g in keys for k in g} - set(params))
    if missing:
        raise CheckpointError(f"{path}: an optimizer group names {missing[0]!r}, which the module lacks")
    if not all(isinstance(g, dict) for g in sd["param_groups"]):
        raise CheckpointError(f"{path}: malformed optimizer entry (a param group is not a dict)")
    for g in sd["param_groups"]:
        _check_hyperparameters(path, g)
    groups = [{"params": [params[k] for k in names], **{h: v for h, v in g.items() if h != "params"}}
              for names, g in zip(keys, sd["param_groups"], strict=True)]
    optimizer = cls(groups)
    _check_state(path, sd, [params[k] for g in keys for k in g], [k for g in keys for k in g],
                 elementwise=cls.__name__ in ELEMENTWISE_OPTIMIZERS)
    optimizer.load_state_dict(sd)
    return optimizer


NON_NEGATIVE = ("lr", "weight_decay", "momentum", "dampening", "eps", "alpha", "lr_decay", "rho")


def _check_hyperparameters(path, group: dict) -> None:
    """Numbers in a param group are finite; learning rate, decay, momentum and eps are not negative."""
    for key, value in group.items():
        values = value if isinstance(value, list | tuple) else [value]
        for v in values:
            if isinstance(v, float | int) and not isinstance(v, bool) and not math.isfinite(v):
                raise CheckpointError(f"{path}: optimizer hyper-parameter {key!r} is {v}")
        if key in NON_NEGATIVE and isinstance(value, float | int) and value < 0:
            raise CheckpointError(f"{path}: optimizer hyper-parameter {key!r} is negative ({value})")


def _check_state(path, sd: dict, ordered: list, names: list[str], elementwise: bool) -> None:
    """The optimizer state names only parameters of its groups, each a dict of tensors and numbers;
    for element-wise optimizers every non-scalar tensor has its parameter's shape."""
    indices = [i for g in sd["param_groups"] for i in (g.get("params") or [])]
    if len(indices) != len(ordered) or len(set(map(str, indices))) != len(indices):
        raise CheckpointError(f"{path}: the optimizer's param groups list {len(indices)} parameters, its "
                              f"groups name {len(ordered)}")
    by_index = dict(zip(indices, zip(ordered, names, strict=True), strict=True))
    for index, state in sd["state"].items():
        if index not in by_index:
            raise CheckpointError(f"{path}: optimizer state for parameter {index!r}, which no group holds")
        if not isinstance(state, dict):
            raise CheckpointError(f"{path}: optimizer state of parameter {index!r} is not a dict")
        param, name = by_index[index]
        for key, value in state.items():
            if not isinstance(value, torch.Tensor | int | float | bool) and value is not None:
                raise CheckpointError(f"{path}: optimizer state {key!r} of {name!r} is a "
                                      f"{type(value).__name__}")
            tensor = isinstance(value, torch.Tensor) and value.dim() > 0
            if elementwise and tensor and value.shape != param.shape:
                raise CheckpointError(f"{path}: optimizer state {key!r} of {name!r} has shape "
                                      f"{list(value.shape)}, the parameter {list(param.shape)}")
