"""Morph passes and the ``PassManager`` (one pass per module, registered by discovery).

>>> from netmorph.passes import PassManager, get_pass
>>> child, reports = PassManager().run(graph, [get_pass("deepen")])
"""

from ..errors import PreconditionError
from .base import Contract, ConvSolve, Option, OptionError, Pass, PassContext, PassReport
from .conv_split import ConvSplit
from .deepen_level import Deepen, DeepenLevel
from .duplicate_block import DuplicateBlock
from .grow_kernel import GrowKernel
from .insert_identity_bn import InsertIdentityBN
from .insert_identity_prelu import InsertIdentityPReLU
from .manager import PassManager
from .registry import PASSES, discover, get_pass, list_passes, make_passes, register
from .restore_bn import RestoreBN
from .widen import Widen, WidenLevel

discover()

__all__ = [
    "PASSES", "Contract", "ConvSolve", "ConvSplit", "Deepen", "DeepenLevel", "DuplicateBlock", "GrowKernel",
    "InsertIdentityBN", "InsertIdentityPReLU", "Option", "OptionError", "Pass", "PassContext", "PassManager",
    "PassReport", "PreconditionError", "RestoreBN", "Widen", "WidenLevel", "get_pass", "list_passes",
    "make_passes", "register",
]
