"""Tensor types of IR values: element type plus a shape with optional symbolic dims."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper

Dim = int | str | None
"""One dimension: a fixed size, a symbolic name such as ``"N"``, or ``None`` (unknown)."""


class TensorType:
    """Element type (an ONNX ``TensorProto.DataType`` code) and shape.

    ``shape`` is ``None`` when the rank is unknown; otherwise a tuple whose entries are
    ints, symbolic names (``"N"``) or ``None`` for an unknown, unnamed dim.
    """

    __slots__ = ("elem_type", "shape")

    def __init__(self, elem_type: int, shape: Sequence[Dim] | None = None):
        self.elem_type = int(elem_type)
        self.shape = None if shape is None else tuple(shape)

    # -- constructors -------------------------------------------------------------------
    @classmethod
    def float32(cls, *shape: Dim) -> TensorType:
        return cls(TensorProto.FLOAT, shape)

    @classmethod
    def from_numpy(cls, array: np.ndarray) -> TensorType:
        return cls(helper.np_dtype_to_tensor_dtype(array.dtype), array.shape)

    @classmethod
    def from_type_proto(cls, tp: onnx.TypeProto) -> TensorType | None:
        """The tensor type of ``tp``, or ``None`` when it is not a plain tensor type."""
        if tp.WhichOneof("value") != "tensor_type":
            return None
        tt = tp.tensor_type
        if not tt.HasField("shape"):
            return cls(tt.elem_type, None)
        dims: list[Dim] = []
        for d in tt.shape.dim:
            kind = d.WhichOneof("value")
            dims.append(d.dim_value if kind == "dim_value" else d.dim_param if kind else None)
        return cls(tt.elem_type, dims)

    def to_type_proto(self) -> onnx.TypeProto:
        return helper.make_tensor_type_proto(self.elem_type, self.shape)

    # -- queries ------------------------------------------------------------------------
    @property
    def dtype(self) -> np.dtype:
        return helper.tensor_dtype_to_np_dtype(self.elem_type)

    @property
    def rank(self) -> int | None:
        return None if self.shape is None else len(self.shape)

    @property
    def is_static(self) -> bool:
        return self.shape is not None and all(isinstance(d, int) for d in self.shape)

    def with_shape(self, shape: Sequence[Dim] | None) -> TensorType:
        return TensorType(self.elem_type, shape)

    def compatible(self, other: TensorType) -> bool:
        """True when nothing known about the two types contradicts the other."""
        if self.elem_type and other.elem_type and self.elem_type != other.elem_type:
            return False
        if self.shape is None or other.shape is None:
            return True
        if len(self.shape) != len(other.shape):
            return False
        return all(
            not (isinstance(a, int) and isinstance(b, int)) or a == b
            for a, b in zip(self.shape, other.shape, strict=True)
        )

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, TensorType)
            and self.elem_type == other.elem_type
            and self.shape == other.shape
        )

    def __hash__(self) -> int:
        return hash((self.elem_type, self.shape))

    def __repr__(self) -> str:
        name = TensorProto.DataType.Name(self.elem_type).lower() if self.elem_type else "?"
        if self.shape is None:
            return f"{name}[*]"
        return f"{name}[{','.join('?' if d is None else str(d) for d in self.shape)}]"
