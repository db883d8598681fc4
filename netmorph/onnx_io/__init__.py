"""ONNX ⇄ IR: lossless conversion, safe loading, atomic streaming saves."""

from .convert import OnnxFormatError, from_onnx, to_onnx
from .files import load, read_model_proto, save, save_proto
from .session import GraphSession, graph_session

__all__ = [
    "GraphSession", "OnnxFormatError", "from_onnx", "graph_session", "load", "read_model_proto", "save",
    "save_proto", "to_onnx",
]
