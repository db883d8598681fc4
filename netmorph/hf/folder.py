"""Hugging Face model folders in and out: ``config.json`` + safetensors (sharded too), never pickle.

:func:`load_folder` reads with ``from_pretrained(..., use_safetensors=True)``; :func:`write_folder`
writes the model with ``save_pretrained`` (safetensors), the growth report as
``netmorph_lineage.json`` and, given an optimizer, its state as ``optimizer.safetensors`` plus
``optimizer.json`` (class, param groups by parameter name, counters), all into a temporary folder
beside ``out`` that is renamed into place: an existing ``out`` is never touched.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from ..atomic import OutputError
from ..errors import NetmorphError

LINEAGE = "netmorph_lineage.json"
OPTIMIZER_TENSORS = "optimizer.safetensors"
OPTIMIZER_META = "optimizer.json"
_PLAIN = (int, float, bool, str, list, tuple, type(None))  # hyper-parameters JSON can hold


class FolderError(NetmorphError):
    """A model folder that cannot be read (no config, no safetensors weights, unknown class)."""


def load_folder(path: str | os.PathLike):
    """The ``transformers`` model saved in folder ``path`` (eval mode, float32 as saved)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    p = Path(path)
    if not (p / "config.json").is_file():
        raise FolderError(f"{p}: no config.json (not a Hugging Face model folder)")
    if not any(p.glob("*.safetensors")):
        raise FolderError(f"{p}: no .safetensors weights (pickled checkpoints are not read)")
    try:
        cfg = AutoConfig.from_pretrained(p)
        model = AutoModelForCausalLM.from_pretrained(p, config=cfg, use_safetensors=True)
    except (OSError, ValueError, KeyError) as e:
        raise FolderError(f"{p}: cannot be loaded ({str(e).splitlines()[0]})") from None
    return model.eval()


def write_folder(out: str | os.PathLike, model, report: dict[str, Any] | None = None,
                 optimizer: torch.optim.Optimizer | None = None,
                 max_shard_size: str | int | None = None) -> Path:
    """Write ``model`` (and its lineage / optimizer) as a new folder ``out`` (``max_shard_size``:
    split the weights into safetensors shards of at most that size, as ``save_pretrained`` does)."""
    out = Path(out)
    if out.exists():
        raise OutputError(f"{out}: already exists (a grown checkpoint is written as a new folder)")
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise OutputError(f"{out}: the folder {parent} does not exist")
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=parent))
    try:
        shards = {} if max_shard_size is None else {"max_shard_size": max_shard_size}
        model.save_pretrained(tmp, safe_serialization=True, **shards)
        if report is not None:
            (tmp / LINEAGE).write_text(json.dumps(report, indent=1, default=str))
        if optimizer is not None:
            _write_optimizer(tmp, model, optimizer)
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _write_optimizer(folder: Path, model, optimizer: torch.optim.Optimizer) -> None:
    from safetensors.torch import save_file

    names = {id(p): k for k, p in model.named_parameters()}
    tensors: dict[str, torch.Tensor] = {}
    meta: dict[str, Any] = {"class": f"{type(optimizer).__module__}.{type(optimizer).__name__}",
                            "groups": [], "counters": {}}
    for g in optimizer.param_groups:
        hyper = {k: v for k, v in g.items() if k != "params" and isinstance(v, _PLAIN)}
        meta["groups"].append({"params": [names[id(p)] for p in g["params"]], **hyper})
        for p in g["params"]:
            for k, v in optimizer.state.get(p, {}).items():
                if isinstance(v, torch.Tensor) and v.ndim > 0:
                    tensors[f"{names[id(p)]}::{k}"] = v.detach().cpu().contiguous()
                elif isinstance(v, torch.Tensor):
                    meta["counters"].setdefault(names[id(p)], {})[k] = v.item()
    save_file(tensors, str(folder / OPTIMIZER_TENSORS))
    (folder / OPTIMIZER_META).write_text(json.dumps(meta, indent=1))


def load_optimizer(folder: str | os.PathLike, model) -> torch.optim.Optimizer:
    """The optimizer :func:`write_folder` saved beside ``model`` (same class, groups, state)."""
    import importlib

    from safetensors.torch import load_file

    folder = Path(folder)
    meta = json.loads((folder / OPTIMIZER_META).read_text())
    tensors = load_file(str(folder / OPTIMIZER_TENSORS))
    mod, _, cls_name = meta["class"].rpartition(".")
    if not mod.startswith("torch.optim"):
        raise FolderError(f"{folder}: optimizer class {meta['class']!r} is not a torch.optim class")
    cls = getattr(importlib.import_module(mod), cls_name)
    params = dict(model.named_parameters())
    groups = [{**{k: v for k, v in g.items() if k != "params"}, "params": [params[k] for k in g["params"]]}
              for g in meta["groups"]]
    opt = cls(groups)
    entries: dict[str, dict[str, torch.Tensor]] = {}
    for name, v in tensors.items():
        key, _, k = name.partition("::")
        entries.setdefault(key, {})[k] = v
    for key, p in params.items():
        entry = {k: v.to(p.device) for k, v in entries.get(key, {}).items()}
        for k, v in meta["counters"].get(key, {}).items():
            entry[k] = torch.tensor(float(v))
        if entry:
            opt.state[p] = entry
    return opt
