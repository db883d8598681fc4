"""Passes by name: ``get_pass("conv-split", node=...)``, ``list_passes()``."""

from __future__ import annotations

from typing import Any

from ..errors import PreconditionError
from ..verification.options import DEFAULT_K
from .base import Pass
from .conv_split import ConvSplit
from .deepen_level import Deepen, DeepenLevel
from .duplicate_block import DuplicateBlock
from .grow_kernel import GrowKernel
from .insert_identity_bn import InsertIdentityBN
from .insert_identity_prelu import InsertIdentityPReLU
from .restore_bn import RestoreBN
from .transformer_add_heads import AddHeads
from .transformer_deepen import TransformerDeepen
from .transformer_widen_hidden import WidenHidden
from .transformer_widen_mlp import WidenMLP
from .widen import Widen, WidenLevel

PASSES: dict[str, type[Pass]] = {
    cls.name: cls
    for cls in (ConvSplit, InsertIdentityBN, InsertIdentityPReLU, DuplicateBlock, RestoreBN, DeepenLevel,
                Deepen, Widen, WidenLevel, GrowKernel)
}
# transformers (issue 10)
PASSES.update({cls.name: cls for cls in (TransformerDeepen, WidenMLP, AddHeads, WidenHidden)})


def register(cls: type[Pass]) -> type[Pass]:
    """Add a pass class to the registry (usable as a decorator)."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name")
    PASSES[cls.name] = cls
    return cls


def get_pass(name: str, **options: Any) -> Pass:
    """A pass instance by registry name; unknown names and options are precondition errors."""
    cls = PASSES.get(name)
    if cls is None:
        raise PreconditionError(f"no pass named {name!r} (passes: {', '.join(PASSES)})")
    return cls(**options)


def list_passes() -> list[dict[str, Any]]:
    """One row per pass: name, summary, default contract, options."""
    rows = []
    for name, cls in PASSES.items():
        try:
            c = cls().contract
            contract = str(c)
            if c.is_exact:  # what grow actually checks (PassManager.EXACT_TOLERANCE)
                contract = (f"exact (verified within {DEFAULT_K:g}x the parent's own rounding noise; "
                            f"--rtol/--atol for the fixed rtol={c.rtol:g}, atol={c.atol:g})")
        except Exception:  # noqa: BLE001 - a pass whose contract needs options
            contract = "?"
        if any(o.name == "solver" for o in cls.option_specs):
            contract = f"{contract} with --solver exact; approx with optgd / lsq"
        rows.append({
            "name": name,
            "summary": cls.summary,
            "contract": contract,
            "options": [
                {"name": o.name, "type": o.type.__name__, "default": o.default, "help": o.help,
                 "choices": list(o.choices) if o.choices else None}
                for o in cls.option_specs
            ],
        })
    return rows
