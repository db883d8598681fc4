"""``carry_optimizer = true``: a stage's optimizer state carried into the next, grown, stage.

Between stage ``k-1`` and stage ``k`` the runner grows the trained graph; with
``carry_optimizer`` it then reads stage ``k-1``'s final optimizer state (its training
checkpoint), maps it through the growth's lineage with :func:`netmorph.torch.grow.carry_optimizer`
(unchanged parameters keep their momentum / Adam moments and step bit for bit, new ones start
at zero, widened ones follow their weights), and writes it as ``stage_k/carried_optimizer.pt``
*before* ``stage_k/init.onnx``, so an interrupted run resumes with the same state. Stage ``k``'s
trainer starts from it (:func:`netmorph.train.fit`'s ``initial_optimizer_state``); the learning
rate and other hyper-parameters are the stage's own (its lr policy).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..atomic import atomic_open
from .spec import PipelineError

CARRIED_NAME = "carried_optimizer.pt"


def carry_stage_optimizer(parent_graph: Any, child_graph: Any, reports: list, parent_checkpoint: Path,
                          config: Any) -> dict | None:
    """The child's optimizer ``state_dict`` (indexed like :func:`netmorph.train.fit`'s optimizer).

    ``None`` when the previous stage left no checkpoint (it trained zero epochs): the stage then
    starts with a fresh optimizer, as without carrying.
    """
    from ..lowering import lower
    from ..torch.carry import carry_optimizer
    from ..torch.export import Captured, lowered_slots
    from ..torch.trace import Step
    from ..train import build_optimizer, load_checkpoint

    if not parent_checkpoint.is_file():
        return None
    if len(reports) != 1:
        raise PipelineError(f"carry_optimizer: a stage's growth is one pass, got {len(reports)} reports")
    parent = lower(parent_graph)
    optimizer = build_optimizer(parent.parameters(), config)
    try:
        optimizer.load_state_dict(load_checkpoint(parent_checkpoint)["optimizer"])
    except (ValueError, KeyError) as e:
        raise PipelineError(f"carry_optimizer: {parent_checkpoint} does not fit the previous stage's model "
                            f"({e})") from None
    child = lower(child_graph)
    steps = [Step(parent_graph, child_graph, reports[0].lineage)]
    carried = carry_optimizer(optimizer, parent, Captured(parent_graph, lowered_slots(parent), "lowered"),
                              steps, child, child_graph)
    index = {id(p): i for i, p in enumerate(p for p in child.parameters() if p.requires_grad)}
    state = {index[id(p)]: dict(s) for p, s in carried.state.items() if id(p) in index}
    return {"state": state}


def save_carried(stage_dir: Path, state: dict | None) -> None:
    """Write the carried state (atomically; nothing when ``state`` is ``None``)."""
    import torch

    if state is not None:
        with atomic_open(stage_dir / CARRIED_NAME, "wb") as f:
            torch.save(state, f)


def load_carried(stage_dir: Path) -> dict | None:
    """The carried state of an interrupted stage, or ``None`` when there is none."""
    import torch

    path = stage_dir / CARRIED_NAME
    if not path.is_file():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for corrupt files
        raise PipelineError(f"{path}: cannot read the carried optimizer state ({e})") from None
