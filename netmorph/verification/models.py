"""Turning what the user hands us (Graph, ModelProto or file path) into a model ORT can load.

A model read from a file is handed to ONNX Runtime by its **path** (ORT reads the file and its
external data itself, after :func:`~netmorph.onnx_io.read_model_proto` has checked them), so no
serialised copy of the model is made and models with external data over 2 GiB load. A netmorph
``Graph`` is handed over without its large weights, which ONNX Runtime reads in place from the
graph's own buffers (:func:`~netmorph.onnx_io.session.graph_model_parts`): no ``ModelProto`` copy of
the weights and no 2 GiB limit. A ``ModelProto`` given in memory is handed over as bytes."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from ..ir import Graph
from ..onnx_io import OnnxFormatError, read_model_proto
from ..onnx_io.session import graph_model_parts

ModelSource = Graph | onnx.ModelProto | str | os.PathLike
"""Anything :func:`~netmorph.verification.verify_models` accepts as a model."""


@dataclass
class LoadedModel:
    """A model ready for ONNX Runtime, with a label for messages (the path, or a description).

    ``weights``: the tensors ``proto`` declares as external data held in memory (by name), given
    to ONNX Runtime in place; ``proto`` then holds the graph and the small tensors only."""

    proto: onnx.ModelProto
    label: str
    path: Path | None = None
    weights: Mapping[str, np.ndarray] | None = None

    def ort_source(self) -> str | bytes:
        """What ``onnxruntime.InferenceSession`` is given: the file's path, else the bytes."""
        return str(self.path) if self.path is not None else self.serialized()

    def serialized(self) -> bytes:
        """The model as bytes (for a model given in memory)."""
        try:
            return self.proto.SerializeToString()
        except ValueError as e:  # protobuf refuses messages over 2 GiB
            raise ValueError(f"{self.label}: cannot serialise the model for ONNX Runtime ({e})") from None


def load_model(source: ModelSource, role: str) -> LoadedModel:
    """Read ``source`` into a :class:`LoadedModel`; ``role`` (``"a"``/``"b"``) names it in messages.

    Paths are read with :func:`netmorph.onnx_io.read_model_proto` (external data only from
    inside the model's folder; a truncated or corrupt file raises ``OnnxFormatError``).
    """
    if isinstance(source, Graph):
        shell, names, arrays = graph_model_parts(source)
        return LoadedModel(shell, f"model {role} (graph {source.name!r})",
                           weights=dict(zip(names, arrays, strict=True)))
    if isinstance(source, onnx.ModelProto):
        name = source.graph.name or "unnamed"
        return LoadedModel(source, f"model {role} (ModelProto {name!r})")
    if isinstance(source, str | os.PathLike):
        try:
            return LoadedModel(read_model_proto(source), str(Path(source)), Path(source))
        except OSError as e:
            raise OnnxFormatError(f"{Path(source)}: cannot read ({e.strerror or e})") from None
    raise TypeError(
        f"model {role}: expected a netmorph Graph, an onnx.ModelProto or a path, got {type(source).__name__}"
    )
