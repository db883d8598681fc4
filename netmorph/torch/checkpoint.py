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

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
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
    (or ``optimizer_class``), its groups by ``state_dict`` key, then ``load_state_dict``.
    ``grown.extra`` holds the caller's ``extra`` dict.

    Raises
    ------
    CheckpointError
        Not a netmorph.torch checkpoint, unreadable, or its state does not fit its graph.
    """
    from ..lowering import lower
    from .grow import Grown

    try:
        ck = torch.load(Path(path), map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises several types for corrupt or unsafe files
        raise CheckpointError(f"{path}: cannot read checkpoint ({first_line(e)})") from e
    if not isinstance(ck, dict) or ck.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a netmorph.torch checkpoint")
    graph = from_onnx(onnx.load_from_string(ck["graph"].numpy().tobytes()))
    module = lower(graph)
    try:
        module.load_state_dict(ck["state_dict"], strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"{path}: the saved state does not fit the saved graph ({e})") from None
    module.to(map_location)
    module.train(bool(ck["training"]))
    remember(module, graph)
    optimizer = None
    if ck.get("optimizer") is not None:
        optimizer = _rebuild_optimizer(path, module, ck["optimizer"], optimizer_class)
    return Grown(module, optimizer, None, graph, dict(ck.get("extra") or {}))


def _rebuild_optimizer(path, module: nn.Module, entry: dict[str, Any], cls: type | None):
    if cls is None:
        cls = getattr(torch.optim, str(entry["class"]), None)
        if not (isinstance(cls, type) and issubclass(cls, torch.optim.Optimizer)):
            raise CheckpointError(f"{path}: optimizer class {entry['class']!r} is not in torch.optim; "
                                  "pass optimizer_class=")
    params = dict(module.named_parameters())
    sd = entry["state_dict"]
    try:
        groups = [{"params": [params[k] for k in keys],
                   **{h: v for h, v in g.items() if h != "params"}}
                  for keys, g in zip(entry["groups"], sd["param_groups"], strict=True)]
    except KeyError as e:
        raise CheckpointError(f"{path}: an optimizer group names {e}, which the module lacks") from None
    optimizer = cls(groups)
    optimizer.load_state_dict(sd)
    return optimizer
