"""netmorph: a graph-IR compiler for function-preserving network growth.

Public API (the rest is reachable through the subpackages)::

    g = netmorph.load("model.onnx")          # ONNX -> IR
    netmorph.save(g, "out.onnx")             # IR -> ONNX, atomic
    report = netmorph.verify(a, b)           # function equivalence in ONNX Runtime

The names below are imported on first use (PEP 562), so ``import netmorph`` and ``netmorph --help``
do not pay for onnx, networkx, ONNX Runtime or torch until a function needs them.
"""

from __future__ import annotations

import importlib
from importlib import metadata as _metadata
from typing import TYPE_CHECKING

try:
    __version__ = _metadata.version("netmorph")
except _metadata.PackageNotFoundError:  # pragma: no cover - source tree without install
    __version__ = "0.0.0+unknown"

# public name -> the submodule that defines it
_LAZY = {
    **dict.fromkeys(("Graph", "IRError", "Node", "Parameter", "TensorType", "Value"), ".ir"),
    **dict.fromkeys(("OnnxFormatError", "from_onnx", "load", "save", "to_onnx"), ".onnx_io"),
}

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from .ir import Graph, IRError, Node, Parameter, TensorType, Value
    from .onnx_io import OnnxFormatError, from_onnx, load, save, to_onnx


def __getattr__(name: str):
    """Import a public name (or a subpackage: ``netmorph.ir``) the first time it is asked for."""
    module = _LAZY.get(name)
    if module is not None:
        value = getattr(importlib.import_module(module, __name__), name)
        globals()[name] = value
        return value
    if not name.startswith("_"):
        try:
            return importlib.import_module(f".{name}", __name__)
        except ModuleNotFoundError as e:
            if e.name != f"{__name__}.{name}":
                raise
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


def verify(a, b, **kwargs):
    """Compare two models in ONNX Runtime; see :func:`netmorph.verification.verify_models`."""
    from .verification import verify_models

    return verify_models(a, b, **kwargs)


def build(family: str, **kwargs):
    """Build a DynamicNet model; see :func:`netmorph.dynamicnet.build`."""
    from .dynamicnet import build as _build

    return _build(family, **kwargs)


def recognise(graph):
    """Find the DynamicNet structure of a graph; see :func:`netmorph.structure.recognise`."""
    from .structure import recognise as _recognise

    return _recognise(graph)


def lower(graph, **kwargs):
    """Lower a graph to a ``torch.fx.GraphModule``; see :func:`netmorph.lowering.lower`."""
    from .lowering import lower as _lower

    return _lower(graph, **kwargs)


def write_back(graph, module):
    """Copy trained weights back into a new graph; see :func:`netmorph.lowering.write_back`."""
    from .lowering import write_back as _write_back

    return _write_back(graph, module)


__all__ = [
    "build", "lower", "recognise", "write_back",
    "Graph", "IRError", "Node", "OnnxFormatError", "Parameter", "TensorType", "Value",
    "from_onnx", "load", "save", "to_onnx", "verify", "__version__",
]
