"""A model rebuilt as its own class, checked by its own forward against the parent's.

:func:`netmorph.hf.grow` (a ``transformers`` class) and :mod:`netmorph.torch.classes` (torchvision
``ResNet`` / ``VisionTransformer``) place the grown tensors into a new instance of the parent's
class; both judge it by one rule: on every batch, ``max|child - parent| <= atol + rtol *
max|parent|`` (``rtol``: :data:`RTOL`, ``atol``: 0 unless the user gives them).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from ..errors import VerificationError

RTOL = 1e-4
"""The rebuilt model's outputs may differ from the parent's by ``RTOL * max|parent outputs|``
(unless ``rtol`` / ``atol`` are given)."""


def judge(outputs: Iterable[tuple[torch.Tensor, torch.Tensor]], *, rtol: float | None, atol: float | None,
          what: str) -> float:
    """``outputs``: ``(parent, child)`` output pairs, one per batch. Returns the worst
    ``max|c - p| / max|p|``; raises :class:`VerificationError` at the first batch past the bound
    (``what``: the message's subject and its outputs' noun, e.g. ``("the grown model's logits",
    "logits")``)."""
    rtol = RTOL if rtol is None else rtol
    atol = 0.0 if atol is None else atol
    subject, noun = what
    worst = 0.0
    for p, c in outputs:
        diff, scale = float((c - p).abs().max()), float(p.abs().max())
        worst = max(worst, diff / max(scale, 1e-12))
        if not diff <= atol + rtol * scale:
            raise VerificationError(f"{subject} differ from the parent's (max abs error {diff:.3g} > atol "
                                    f"{atol:g} + rtol {rtol:g} * max|{noun}| {scale:.3g}; max rel error "
                                    f"{diff / max(scale, 1e-12):.3g})")
    return worst
