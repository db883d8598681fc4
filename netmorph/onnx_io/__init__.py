"""ONNX ⇄ IR: lossless conversion, safe loading, atomic streaming saves."""

from .convert import OnnxFormatError, from_onnx, to_onnx
from .files import load, read_model_proto, save, save_proto

__all__ = ["OnnxFormatError", "from_onnx", "load", "read_model_proto", "save", "save_proto", "to_onnx"]
