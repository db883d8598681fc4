"""The paper's growth schedules as pipelines, and the ``--schedule`` shorthand of ``netmorph iterate``.

PlainNet (CIFAR, 3 levels): ``n = 1 + 2^(i-1)`` blocks per level, depth ``3n + 1``:
7 → 10 → 16 → 28 → 52 → 100. ResNet(r): ``n = 2^(i-1)``, depth ``6n + 2``: 8 → 14 → 26 → 50 → 98.
Each growth is one ``deepen`` pass (PlainNet n → 2n−1 with conv splits, ResNet n → 2n with
identity blocks). "full" gives every stage the recipe's epochs (320); "half" gives each stage
half (Table 3), while the FixLearn baseline keeps the full budget.
"""

from __future__ import annotations

from typing import Any

from .spec import Baseline, Pipeline, PipelineError, Stage, Start

PAPER_EPOCHS = 320
FAMILY_ALIASES = {"plain": "plain", "plainnet": "plain", "resnet": "resnet"}


def paper_blocks(family: str, iteration: int) -> int:
    """Blocks per level ``n`` at iteration ``i`` (1-based): PlainNet ``1 + 2^(i-1)``, ResNet ``2^(i-1)``."""
    if iteration < 1:
        raise PipelineError(f"iterations count from 1, got {iteration}")
    return 1 + 2 ** (iteration - 1) if family == "plain" else 2 ** (iteration - 1)


def paper_depth(family: str, blocks: int, levels: int = 3) -> int:
    """The paper's depth of a CIFAR DynamicNet: PlainNet ``levels·n + 1``, ResNet ``2·levels·n + 2``."""
    return levels * blocks + 1 if family == "plain" else 2 * levels * blocks + 2


def paper_depths(family: str, iterations: int | None = None) -> list[int]:
    """Depths of the paper's schedule: PlainNet 7…100 (6 iterations), ResNet 8…98 (5)."""
    family = _family(family)
    iterations = iterations or (6 if family == "plain" else 5)
    return [paper_depth(family, paper_blocks(family, i)) for i in range(1, iterations + 1)]


def _family(family: str) -> str:
    f = FAMILY_ALIASES.get(str(family).lower())
    if f is None:
        raise PipelineError(f"unknown family {family!r} (plain or resnet)")
    return f


def paper_pipeline(
    family: str = "plain",
    *,
    data: str = "synthetic",
    epochs: int = PAPER_EPOCHS,
    half: bool = False,
    residual_ratio: float = 0.5,
    solver: str = "optgd",
    max_depth: int | None = None,
    lr_policy: str = "restart",
    baseline: bool = True,
    baseline_budget: str = "stage",
    train: dict[str, Any] | None = None,
    seed: int = 0,
    name: str | None = None,
) -> Pipeline:
    """The paper's IterLearn schedule (Table 1) as a :class:`Pipeline`.

    Parameters
    ----------
    family
        ``"plain"`` (PlainNet 7 → … → 100) or ``"resnet"`` (ResNet(r) 8 → … → 98).
    data
        Data spec (``cifar10:PATH`` for the paper).
    epochs
        The recipe's epochs per stage (paper: 320).
    half
        Each stage trains ``epochs // 2`` (Table 3's "half"); the baseline keeps ``epochs``.
    residual_ratio
        ``r`` of ResNet(r) (ignored for PlainNet).
    solver
        Kernel solver of the growth passes (paper: ``optgd``; Table 4 compares ``lsq``).
    max_depth
        Stop the schedule at the last depth not above this (a smaller run).
    lr_policy, train, seed
        See :class:`Pipeline`.
    baseline, baseline_budget
        Add the FixLearn baseline at every depth with this budget (``stage`` or ``total``).
    """
    family = _family(family)
    depths = paper_depths(family)
    if max_depth is not None:
        depths = [d for d in depths if d <= max_depth]
        if not depths:
            raise PipelineError(f"max_depth {max_depth} is below the first depth of the {family} schedule")
    per_stage = max(1, epochs // 2) if half else epochs
    options: dict[str, Any] = {"blocks": paper_blocks(family, 1)}
    if family == "resnet":
        options["residual_ratio"] = float(residual_ratio)
    options["seed"] = seed
    stages = [Stage(per_stage)] + [Stage(per_stage, grow="deepen", solver=solver) for _ in depths[1:]]
    if name is None:
        tag = "plainnet" if family == "plain" else f"resnet-r{residual_ratio:g}"
        name = f"{tag}-{depths[-1]}-{solver}{'-half' if half else ''}"
    return Pipeline(
        start=Start(family=family, options=options),
        data=data,
        stages=tuple(stages),
        train=dict(train or {}),
        lr_policy=lr_policy,
        seed=seed,
        baseline=Baseline(budget=baseline_budget, epochs=epochs if half else None) if baseline else None,
        name=name,
    )


def parse_schedule(
    schedule: str,
    epochs: int,
    *,
    solver: str | None = None,
    options: dict[str, Any] | None = None,
    first_epochs: int | None = None,
) -> tuple[Stage, ...]:
    """Stages from the shorthand ``PASS:COUNT[,PASS:COUNT…]``: ``deepen:5`` is 1 + 5 stages.

    The first stage trains the start model (``first_epochs``, default ``epochs``); then every
    ``PASS`` is applied ``COUNT`` times (default 1), each followed by ``epochs`` of training.
    ``solver`` and ``options`` go to every growth pass.
    """
    stages = [Stage(epochs if first_epochs is None else first_epochs)]
    for part in str(schedule).split(","):
        part = part.strip()
        name, _, count = part.partition(":")
        name = name.strip()
        try:
            n = int(count) if count.strip() else 1
        except ValueError:
            n = -1
        if not name or n < 0:
            raise PipelineError(
                f"schedule {schedule!r}: expected PASS[:COUNT][,PASS[:COUNT]...], e.g. deepen:5"
            )
        stages += [Stage(epochs, grow=name, solver=solver, options=dict(options or {})) for _ in range(n)]
    return tuple(stages)
