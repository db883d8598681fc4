"""The one reader of a value's constant, seen through the wrappers exporters put around weights."""

from __future__ import annotations

import numpy as np

from ..ir import Value

MAX_HOPS = 8
CAST_OPS = ("Cast", "CastLike")
RESHAPING_OPS = ("Reshape", "Expand", "Unsqueeze", "Squeeze")


def constant_array(v: Value | None, *, transpose: bool = True, cast: bool = False,
                   reshape: bool = False) -> np.ndarray | None:
    """The array ``v`` holds when it is a constant, else ``None``.

    A constant is a parameter or a ``Constant`` node's value, possibly behind up to
    :data:`MAX_HOPS` ``Identity`` nodes; with ``transpose`` also behind a ``Transpose`` (a linear's
    weight transposed in the graph; the array comes back transposed), with ``cast`` behind a
    ``Cast`` / ``CastLike`` (the array comes back cast; ``CastLike`` keeps its dtype), with
    ``reshape`` behind a ``Reshape`` / ``Expand`` / ``Unsqueeze`` / ``Squeeze`` (the array comes
    back *unreshaped*: for questions about its values, such as "is it a scalar 0.5").
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
            return _constant_attr(p)
        if transpose and p.op_type == "Transpose" and p.inputs[0] is not None:
            src = constant_array(p.inputs[0], transpose=transpose, cast=cast, reshape=reshape)
            return None if src is None else np.transpose(src, p.attr("perm") or None)
        if cast and p.op_type == "Cast" and p.inputs[0] is not None:
            src = constant_array(p.inputs[0], transpose=transpose, cast=cast, reshape=reshape)
            if src is None:
                return None
            from onnx import helper

            return src.astype(helper.tensor_dtype_to_np_dtype(int(p.attr("to"))))
        if not (p.op_type == "Identity" or (cast and p.op_type == "CastLike")
                or (reshape and p.op_type in RESHAPING_OPS)):
            return None
        v = p.inputs[0]
    return None


def constant_shape(v: Value | None) -> tuple[int, ...] | None:
    """The shape of a constant ``v`` (behind ``Identity`` / casts; initializers are not read)."""
    for _ in range(MAX_HOPS):
        if v is None:
            return None
        if v.const is not None:
            return tuple(v.const.shape)
        p = v.producer
        if p is None:
            return None
        if p.op_type == "Constant":
            arr = _constant_attr(p)
            return None if arr is None else arr.shape
        if p.op_type != "Identity" and p.op_type not in CAST_OPS:
            return None
        v = p.inputs[0]
    return None


def _constant_attr(n) -> np.ndarray | None:
    """A ``Constant`` node's value, whichever attribute holds it."""
    for key in ("value", "value_float", "value_floats", "value_int", "value_ints"):
        if key in n.attributes:
            if key == "value":
                from onnx import numpy_helper

                return numpy_helper.to_array(n.attributes["value"].t)
            return np.asarray(n.attr(key))
    return None
