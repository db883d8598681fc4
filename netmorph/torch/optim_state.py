"""Optimizer state through a growth: torch's names for the moments, and the rebuilt optimizer.

Per optimizer class, every per-parameter state entry is a first moment (mapped like the weight:
copied, gathered, gathered and divided by ``d``), a second moment (divided by ``d²``), or a
step counter (copied; ``0`` for a new parameter). The array rule is
:func:`netmorph.morphs.lineage.map_state`; this module only knows torch's entry names.

| optimizer | first moments | second moments | counters |
|---|---|---|---|
| ``SGD`` (momentum, Nesterov) | ``momentum_buffer`` | | |
| ``Adam`` / ``AdamW`` (amsgrad too) | ``exp_avg`` | ``exp_avg_sq``, ``max_exp_avg_sq`` | ``step`` |

Any other class is refused (its state may hold entries whose growth rule nobody stated), unless
the caller asks for ``state="reset"``.
"""

from __future__ import annotations

from typing import Any

import torch

from ..errors import NetmorphError

RULES: dict[str, dict[str, int]] = {
    "SGD": {"momentum_buffer": 1},
    "Adam": {"exp_avg": 1, "exp_avg_sq": 2, "max_exp_avg_sq": 2, "step": 0},
    "AdamW": {"exp_avg": 1, "exp_avg_sq": 2, "max_exp_avg_sq": 2, "step": 0},
}
"""Optimizer class name -> state entry -> moment (1, 2; 0 = a counter)."""

STATE_MODES = ("map", "reset")


class OptimizerStateError(NetmorphError):
    """An optimizer whose state netmorph does not know how to carry through a growth."""


def rules_for(optimizer: torch.optim.Optimizer) -> dict[str, int]:
    """The state rules of ``optimizer``'s class, or an :class:`OptimizerStateError` saying why not."""
    cls = type(optimizer)
    if cls.__module__.startswith("torch.optim") and cls.__name__ in RULES:
        return RULES[cls.__name__]
    known = ", ".join(f"torch.optim.{k}" for k in RULES)
    raise OptimizerStateError(
        f"cannot carry the state of {cls.__module__}.{cls.__name__} through a growth: its state entries "
        f"have no stated growth rule (known: {known}); pass state='reset' to start it afresh"
    )


def check_entries(key: str, entries: dict[str, Any], rules: dict[str, int], cls: str) -> None:
    """Refuse a parameter state holding an entry with no rule (a flag this class gained later)."""
    unknown = sorted(set(entries) - set(rules))
    if unknown:
        raise OptimizerStateError(
            f"{cls} state of {key!r} has entries {unknown} with no growth rule; pass state='reset'"
        )


def group_hyper(group: dict[str, Any]) -> dict[str, Any]:
    """A param group's hyper-parameters (everything but ``params``)."""
    return {k: v for k, v in group.items() if k != "params"}


def rebuild(optimizer: torch.optim.Optimizer,
            groups: list[list[torch.nn.Parameter]]) -> torch.optim.Optimizer:
    """An optimizer of ``optimizer``'s class with its groups' hyper-parameters over ``groups``."""
    spec = [{"params": ps, **group_hyper(g)} for ps, g in zip(groups, optimizer.param_groups, strict=True)]
    try:
        return type(optimizer)(spec, **dict(optimizer.defaults))
    except TypeError:  # classes whose constructor does not take every default as a keyword
        return type(optimizer)(spec)
