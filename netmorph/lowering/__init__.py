"""Lowering: the IR as a ``torch.fx.GraphModule`` of real torch modules, and back.

``lower(graph)`` gives a module to train with plain PyTorch (``torch.compile``, autocast,
``channels_last``, DDP); ``write_back(graph, module)`` returns a new graph holding the trained
weights and BatchNorm statistics. See ``docs/lowering.md``.
"""


from ..errors import LoweringError
from .build import lower
from .writeback import write_back

__all__ = ["LoweringError", "lower", "write_back"]

