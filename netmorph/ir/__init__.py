"""The typed graph IR: ``Graph``, ``Node``, ``Value``, ``TensorType``, ``Parameter``."""

from .graph import Graph, IRError, Node, Value
from .infer import infer_types
from .parameter import Parameter
from .types import TensorType

__all__ = ["Graph", "IRError", "Node", "Parameter", "TensorType", "Value", "infer_types"]
