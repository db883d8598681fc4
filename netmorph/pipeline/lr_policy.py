"""Learning-rate policies of the stages after a growth, as :class:`~netmorph.train.TrainConfig` values.

``restart``
    The paper: every stage restarts at the recipe's peak (lr 0.1) with its own step schedule
    (drops at 50 % and 75 % of the stage). The spike at each growth in Fig. 2e comes from it.
``restart:LR``
    The same with a lower restart peak ``LR`` (e.g. ``restart:0.02``).
``warmup:E`` / ``warmup:E:LR``
    Restart with a linear warm-up over ``E`` epochs to the peak (``LR``, default the recipe's).
``continue``
    One schedule spans the whole pipeline (all stages' epochs); each stage trains its segment of
    it (``TrainConfig.schedule_offset`` / ``schedule_epochs``), so the learning rate goes on
    from where the previous stage stopped, for the ``step``, ``cosine`` and ``constant``
    schedules alike (a warm-up happens once, at the start of the pipeline).

The first stage always trains with the recipe as configured (for ``continue``: the first
segment of the pipeline-wide schedule).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from ..errors import NetmorphError

USAGE = "restart | restart:LR | warmup:EPOCHS[:LR] | continue"


class LrPolicyError(NetmorphError):
    """A learning-rate policy string that cannot be parsed or applied."""


@dataclass(frozen=True)
class LrPolicy:
    """A parsed policy: ``kind`` (restart / warmup / continue), peak ``lr`` and ``warmup`` epochs."""

    kind: str
    lr: float | None = None
    warmup: float = 0.0

    def __str__(self) -> str:
        if self.kind == "continue":
            return "continue"
        lr = "" if self.lr is None else f":{self.lr:g}"
        return f"restart{lr}" if self.kind == "restart" else f"warmup:{self.warmup:g}{lr}"


def _positive(text: str, what: str, spec: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0:
        raise LrPolicyError(f"lr policy {spec!r}: {what} must be a positive number, got {text!r}")
    return value


def parse_lr_policy(spec: Any) -> LrPolicy:
    """Parse ``restart``, ``restart:LR``, ``warmup:E[:LR]`` or ``continue``.

    Raises
    ------
    LrPolicyError
        Anything else; the message lists the accepted forms.
    """
    if not isinstance(spec, str):
        raise LrPolicyError(f"lr policy must be a string ({USAGE}), got {spec!r}")
    parts = [p.strip() for p in spec.strip().split(":")]
    kind, args = parts[0].lower(), parts[1:]
    if kind == "restart" and len(args) <= 1:
        return LrPolicy("restart", _positive(args[0], "LR", spec) if args else None)
    if kind == "continue" and not args:
        return LrPolicy("continue")
    if kind == "warmup" and 1 <= len(args) <= 2:
        warm = _positive(args[0], "EPOCHS", spec)
        return LrPolicy("warmup", _positive(args[1], "LR", spec) if len(args) == 2 else None, warm)
    raise LrPolicyError(f"unknown lr policy {spec!r}; expected {USAGE}")


def stage_config(base: Any, policy: str | LrPolicy, *, epochs: int, offset: int, total: int,
                 first: bool) -> Any:
    """The :class:`~netmorph.train.TrainConfig` of one stage.

    Parameters
    ----------
    base
        The pipeline's recipe (its ``epochs`` is ignored).
    policy
        The stage's policy.
    epochs
        The stage's epochs.
    offset, total
        Epochs of the pipeline before this stage, and in all (for ``continue``).
    first
        The first stage trains with ``base`` as is (``continue``: its first segment).
    """
    p = parse_lr_policy(policy) if isinstance(policy, str) else policy
    if p.kind == "continue":
        return _segment(base, epochs=epochs, offset=offset, total=total)
    if first:
        return base.replace(epochs=epochs)
    lr = base.lr if p.lr is None else p.lr
    warmup = p.warmup if p.kind == "warmup" else 0.0
    return base.replace(epochs=epochs, lr=lr, warmup_epochs=warmup)


def _segment(base: Any, *, epochs: int, offset: int, total: int) -> Any:
    """Epochs ``[offset, offset + epochs)`` of ``base``'s schedule stretched over ``total`` epochs."""
    names = {f.name for f in fields(base)}
    if not {"schedule_offset", "schedule_epochs"} <= names:
        raise LrPolicyError("lr policy 'continue' needs a trainer that can start mid-schedule")
    return base.replace(epochs=epochs, schedule_offset=offset, schedule_epochs=max(1, total))
