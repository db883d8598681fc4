"""Structure recognition.

Two readings of a graph:

- the paper's DynamicNet shape (stem, levels of switch + template blocks, tail):
  :func:`recognise`;
- the general one every morph is said in (``docs/structure.md``): residual units found in any
  graph (:func:`find_residual_units`, also for transformers), and for CNNs the chain of units
  grouped into stages of equal width and resolution.

>>> s = recognise(netmorph.load("model.onnx"))
>>> print(s.summary())
>>> units = find_residual_units(netmorph.load("model.onnx"))
"""

from .activations import ActivationView
from .model import Block, Level, Structure
from .recognise import recognise
from .residual import ResidualUnit, find_residual_units, match_residual
from .stages import Anatomy, Stage, StageUnit, anatomy

__all__ = [
    "ActivationView", "Anatomy", "Block", "Level", "ResidualUnit", "Stage", "StageUnit", "Structure",
    "anatomy", "find_residual_units", "match_residual", "recognise",
]
