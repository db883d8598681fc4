"""What an IR value becomes while it is being lowered: a runtime tensor, a constant, or a shape.

A runtime tensor is a ``torch.fx.Node``. Two more kinds are resolved while lowering, so that
shape arithmetic and constant sub-graphs cost nothing at run time:

* :class:`Const` — a tensor known now (a parameter, a ``Constant``, or something folded
  from them). ``origin`` names the graph parameter whose elements it holds, in the same
  order, when it is only a reshape of one: that is where trained values are written back.
* :class:`Sym` — a small integer tensor (rank 0 or 1) whose entries are Python ints or
  ``fx.Node`` s that evaluate to ints (``x.size(0)``): what ``Shape`` → ``Gather`` →
  ``Concat`` → ``Reshape`` chains compute. They stay ints, so batch-symbolic reshapes work
  at any batch size and ``torch.compile`` sees plain size arithmetic.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch.fx as fx


@dataclass(frozen=True)
class Const:
    """A tensor known at lowering time."""

    array: np.ndarray
    origin: str | None = None
    """Name of the graph parameter holding the same elements in the same order, if any."""


@dataclass(frozen=True)
class Sym:
    """A rank-0 or rank-1 integer tensor whose entries are ints or ``fx.Node`` s (ints at run time)."""

    items: tuple = field(default_factory=tuple)
    scalar: bool = False
    cols: int | None = None
    """Set for a rank-2 shape value (``items`` row-major, ``cols`` per row): the ``[-1, 2]`` pads of
    ``F.pad`` as TorchScript exports them (reshaped, rows reversed, transposed, flattened)."""

    @property
    def is_static(self) -> bool:
        return all(isinstance(i, int) for i in self.items)


Lowered = fx.Node | Const | Sym
"""What one IR value lowers to."""


def is_weight(x: Lowered) -> bool:
    """Whether ``x`` holds a float graph parameter (not a scalar): a tensor training should change."""
    return isinstance(x, Const) and x.origin is not None and x.array.dtype.kind == "f" and x.array.size > 1
