"""Structure recognition: find the DynamicNet shape (stem, levels, blocks, tail) of any graph.

>>> s = recognise(netmorph.load("model.onnx"))
>>> print(s.summary())
"""

from .model import Block, Level, Structure
from .recognise import recognise

__all__ = ["Block", "Level", "Structure", "recognise"]
