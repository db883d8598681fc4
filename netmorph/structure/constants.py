"""The constant a value holds, seen through the wrappers exporters put around weights."""

from __future__ import annotations

import numpy as np

from ..ir import Value

MAX_HOPS = 4


def constant_array(v: Value | None, *, transpose: bool = True, cast: bool = False) -> np.ndarray | None:
    """The array ``v`` holds when it is a constant, else ``None``.

    A constant is a parameter or a ``Constant`` node's value, possibly behind up to
    :data:`MAX_HOPS` ``Identity`` nodes; with ``transpose`` also behind a ``Transpose`` (a linear's
    weight transposed in the graph; the array comes back transposed), with ``cast`` behind a
    ``Cast`` (the array comes back cast).
    """
    for _ in range(MAX_HOPS):
        if v is None:
            return None
        if v.const is not None:
            return v.const.array
        p = v.producer
        if p is None:
            return None
        if p.op_type == "Constant":
            if "value" not in p.attributes:
                return None
            from onnx import numpy_helper

            return numpy_helper.to_array(p.attributes["value"].t)
        if transpose and p.op_type == "Transpose" and p.inputs[0] is not None:
            src = constant_array(p.inputs[0], transpose=transpose, cast=cast)
            return None if src is None else np.transpose(src, p.attr("perm") or None)
        if cast and p.op_type == "Cast" and p.inputs[0] is not None:
            src = constant_array(p.inputs[0], transpose=transpose, cast=cast)
            if src is None:
                return None
            from onnx import helper

            return src.astype(helper.tensor_dtype_to_np_dtype(int(p.attr("to"))))
        if p.op_type != "Identity":
            return None
        v = p.inputs[0]
    return None
