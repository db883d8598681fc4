"""Lowering: the IR as a ``torch.fx.GraphModule`` of real torch modules, and back.

``lower(graph)`` gives a module to train with plain PyTorch (``torch.compile``, autocast,
``channels_last``, DDP); ``write_back(graph, module)`` returns a new graph holding the trained
weights and BatchNorm statistics. See ``docs/lowering.md``.
"""

import sys
import types

from ..errors import LoweringError
from .build import lower
from .writeback import write_back

__all__ = ["LoweringError", "lower", "write_back"]


class _CallableModule(types.ModuleType):
    """Importing this package rebinds ``netmorph.lower`` from the function to the package;
    making the package callable keeps ``netmorph.lower(graph)`` working either way."""

    def __call__(self, graph, **kwargs):
        return lower(graph, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
