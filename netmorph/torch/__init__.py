"""Grow a torch module inside your own training loop, keeping its optimizer state.

Needs torch (``pip install -e '.[torch]'`` in the checkout)::

    import netmorph.torch as nmt

    g = nmt.grow(model, x, "deepen", optimizer=opt)      # export, grow, verify (ORT), lower
    model, opt = g.module, g.optimizer                    # a torch.fx GraphModule; same param groups
    g.report.name_map                                     # parent state_dict key -> child key(s)
    g.save("ck.pt"); g2 = nmt.load("ck.pt")               # graph + state, weights_only safe

See ``docs/torch.md`` for the state-mapping table per pass.
"""

from __future__ import annotations

try:
    import torch as _torch  # noqa: F401
except ImportError as e:  # pragma: no cover - exercised only without torch
    from ..extras import install_hint

    raise ImportError(f"netmorph.torch: {install_hint('torch')}") from e

from .carry import carry_optimizer
from .checkpoint import FORMAT, CheckpointError, load, save
from .export import ExportError, TensorSlot, capture
from .grow import Grown, GrowthReport, grow
from .optim_state import RULES, OptimizerStateError

__all__ = [
    "FORMAT", "RULES", "CheckpointError", "ExportError", "GrowthReport", "Grown", "OptimizerStateError",
    "TensorSlot", "capture", "carry_optimizer", "grow", "load", "save",
]
