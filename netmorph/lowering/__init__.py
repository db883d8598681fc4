"""Lowering: the IR as a ``torch.fx.GraphModule`` of real torch modules, and back.

``lower(graph)`` gives a module to train with plain PyTorch (``torch.compile``, autocast,
``channels_last``, DDP); ``write_back(graph, module)`` returns a new graph holding the trained
weights and BatchNorm statistics. See ``docs/lowering.md``.
"""

from ..extras import require

require("torch")

from ..errors import LoweringError  # noqa: E402
from .build import lower  # noqa: E402
from .writeback import write_back  # noqa: E402

__all__ = ["LoweringError", "lower", "write_back"]

