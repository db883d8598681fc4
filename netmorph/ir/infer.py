"""Shape and type inference for IR values, through ``onnx.shape_inference``.

The graph is handed to ONNX's inference without its weights: parameters larger than a few
elements become typed graph inputs, so inference costs no copy of the model.
"""

from __future__ import annotations

import onnx
from onnx import numpy_helper, shape_inference

from .graph import Graph, IRError
from .types import TensorType

_SMALL = 64  # parameters up to this many elements keep their data (shape tensors, axes …)


def _light_model(graph: Graph) -> onnx.ModelProto:
    from ..onnx_io.convert import graph_proto_without_initializers, model_shell

    m = model_shell(graph)
    gp = graph_proto_without_initializers(graph)
    del gp.value_info[:]  # infer from scratch
    input_names = {v.name for v in graph.inputs}
    for v in graph.parameters:
        if v.const.nbytes <= _SMALL * 8 or v.type.rank == 0:
            gp.initializer.append(numpy_helper.from_array(v.const.array, v.name))
        elif v.name not in input_names:
            gp.input.append(onnx.helper.make_tensor_value_info(v.name, v.type.elem_type, v.type.shape))
    m.graph.CopyFrom(gp)
    return m


def infer_types(graph: Graph, *, overwrite: bool = False, strict: bool = False) -> int:
    """Fill in the types of values that lack one; returns how many were filled.

    With ``overwrite`` every intermediate type is replaced by the inferred one. With
    ``strict`` a stored type that contradicts the inferred one raises :class:`IRError`
    (this is how ``check_types`` catches shape bugs right after a pass).
    """
    try:
        inferred = shape_inference.infer_shapes(_light_model(graph), strict_mode=strict, data_prop=True)
    except onnx.shape_inference.InferenceError as e:
        raise IRError(f"type inference failed: {e}") from None
    found: dict[str, TensorType] = {}
    for vi in list(inferred.graph.value_info) + list(inferred.graph.output):
        t = TensorType.from_type_proto(vi.type)
        if t is not None and t.elem_type:
            found[vi.name] = t
    filled = 0
    for n in graph.nodes:
        for o in n.outputs:
            t = found.get(o.name)
            if t is None:
                continue
            if o.type is not None and not o.type.compatible(t):
                if strict:
                    raise IRError(
                        f"value {o.name!r} (output of {n.name!r}, {n.op_type}) is typed {o.type} "
                        f"but infers as {t}"
                    )
            if o.type is None or overwrite:
                o.type = t
                filled += 1
            elif o.type.shape is not None and t.shape is not None and len(o.type.shape) == len(t.shape):
                # keep symbolic names, fill unknown dims
                merged = tuple(a if a is not None else b for a, b in zip(o.type.shape, t.shape, strict=True))
                if merged != o.type.shape:
                    o.type = o.type.with_shape(merged)
                    filled += 1
    return filled


def check_types(graph: Graph) -> None:
    """Raise :class:`IRError` if a stored type contradicts what inference derives."""
    infer_types(graph, strict=True)
