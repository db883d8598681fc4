"""Optimiser and learning-rate schedule from a :class:`~netmorph.train.config.TrainConfig`."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

from .config import TrainConfig


def build_optimizer(params: Iterable[torch.nn.Parameter], config: TrainConfig) -> torch.optim.Optimizer:
    """SGD (optionally Nesterov) with momentum and weight decay, Adam, or AdamW, with ``config.lr``."""
    params = [p for p in params if p.requires_grad]
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    if config.optimizer == "adamw":  # decoupled weight decay, as ViTs are trained
        return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(
        params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay,
        nesterov=config.optimizer == "nesterov" and config.momentum > 0,
    )


def schedule_length(config: TrainConfig) -> int:
    """Epochs the schedule spans: ``schedule_epochs`` when set, else ``epochs``."""
    return config.epochs if config.schedule_epochs is None else config.schedule_epochs


def milestone_epochs(config: TrainConfig) -> list[int]:
    """Epoch indices (0-based, in schedule time) where step drops apply: 160 and 240 of 320."""
    return [int(m * schedule_length(config) + 0.5) for m in config.milestones]


def lr_factor(step: int, config: TrainConfig, steps_per_epoch: int) -> float:
    """Multiplier of ``config.lr`` for optimiser step ``step`` (0-based) of this run.

    The step schedule changes at epoch boundaries; cosine and warm-up move every step. With
    ``schedule_offset`` the run starts that many epochs into the schedule.
    """
    steps_per_epoch = max(1, steps_per_epoch)
    step = step + int(round(config.schedule_offset * steps_per_epoch))
    total = max(1, schedule_length(config) * steps_per_epoch)
    warmup = int(round(config.warmup_epochs * steps_per_epoch))
    if config.schedule == "step":
        epoch = step // steps_per_epoch
        factor = config.gamma ** sum(epoch >= m for m in milestone_epochs(config))
    elif config.schedule == "cosine":
        t = min(1.0, max(0, step - warmup) / max(1, total - warmup))
        factor = 0.5 * (1 + math.cos(math.pi * t))
    else:
        factor = 1.0
    if step < warmup:
        factor *= (step + 1) / warmup
    return factor


def build_scheduler(
    optimizer: torch.optim.Optimizer, config: TrainConfig, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-step ``LambdaLR`` following :func:`lr_factor` (its state dict holds only numbers)."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, config, steps_per_epoch)
    )


def load_per_parameter_state(optimizer: torch.optim.Optimizer, state_dict: dict) -> None:
    """Give ``optimizer`` the per-parameter ``state`` of ``state_dict``, keeping its own groups.

    The hyper-parameters (lr, momentum, ...) stay ``optimizer``'s: the run's lr policy sets them.
    ``state_dict["state"]`` is indexed like ``optimizer``'s parameters (``state_dict()`` order).
    """
    own = optimizer.state_dict()
    n = sum(len(g["params"]) for g in own["param_groups"])
    state = state_dict.get("state", {})
    bad = [i for i in state if not 0 <= int(i) < n]
    if bad:
        raise ValueError(f"optimizer state for parameter {bad[0]} but the optimizer has {n} parameters")
    optimizer.load_state_dict({"state": state, "param_groups": own["param_groups"]})
