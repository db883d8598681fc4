"""Parameters: constant tensors held by a graph, materialised lazily, shared read-only."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from .types import TensorType


class Parameter:
    """A constant tensor (an ONNX initializer).

    A parameter loaded from ONNX keeps its ``TensorProto`` and turns it into a numpy array
    only when ``.array`` is first read, so a load-and-save of an untouched model never
    copies the weights. Arrays are read-only: graphs share parameters between a parent and
    its children, so a pass that wants new values makes a new ``Parameter``.
    """

    __slots__ = ("_array", "_proto", "_type")

    def __init__(self, array: np.ndarray | None = None, *, proto: TensorProto | None = None):
        if (array is None) == (proto is None):
            raise ValueError("give exactly one of array or proto")
        self._proto = proto
        self._array = None
        if array is not None:
            array = np.asarray(array)
            if array.flags.writeable:
                array = array.copy() if array.base is not None else array
                array.flags.writeable = False
            self._array = array
            self._type = TensorType.from_numpy(array)
        else:
            self._type = TensorType(proto.data_type, tuple(proto.dims))

    @property
    def type(self) -> TensorType:
        return self._type

    @property
    def shape(self) -> tuple[int, ...]:
        return self._type.shape  # type: ignore[return-value]

    @property
    def nbytes(self) -> int:
        if self._array is not None:
            return self._array.nbytes
        return int(np.prod(self.shape, dtype=np.int64)) * self._type.dtype.itemsize

    @property
    def array(self) -> np.ndarray:
        """The values as a read-only numpy array (materialised on first use)."""
        if self._array is None:
            if self._proto.data_location == TensorProto.EXTERNAL:
                raise ValueError(
                    f"parameter {self._proto.name!r} still refers to external data; "
                    "load the model with netmorph.load so its data is read"
                )
            arr = numpy_helper.to_array(self._proto)
            arr.flags.writeable = False
            self._array = arr
        return self._array

    def peek_array(self) -> np.ndarray:
        """The values as a read-only array, without keeping it when it had to be decoded.

        For a reader that needs the values only for a while (an ONNX Runtime session, a
        comparison): a loaded tensor that no pass touched then costs a copy only while in use.
        """
        if self._array is not None:
            return self._array
        if self._proto.data_location == TensorProto.EXTERNAL:
            return self.array  # raises the error of .array
        arr = numpy_helper.to_array(self._proto)
        arr.flags.writeable = False
        return arr

    @property
    def materialised(self) -> bool:
        return self._array is not None

    def to_proto(self, name: str) -> TensorProto:
        """A ``TensorProto`` named ``name`` holding these values."""
        if self._proto is not None and self._array is None:
            if self._proto.name == name:
                return self._proto
            tp = TensorProto()
            tp.CopyFrom(self._proto)
            tp.name = name
            return tp
        arr = self._array
        if not arr.flags.c_contiguous:
            arr = np.ascontiguousarray(arr)
        return numpy_helper.from_array(arr, name)

    def header_proto(self, name: str) -> tuple[TensorProto, memoryview | bytes | None]:
        """A data-less ``TensorProto`` header and the raw little-endian bytes to append.

        Used by the streaming writer: the header is serialised, then ``raw_data`` is written
        straight from the array's buffer without building an intermediate copy. Returns
        ``(full_proto, None)`` when the tensor cannot be streamed as raw bytes.
        """
        if self._array is None:
            proto = self.to_proto(name)
            return proto, None
        arr = self._array
        if arr.dtype.kind in "OUS" or arr.dtype == np.bool_ or arr.dtype.byteorder == ">":
            return self.to_proto(name), None
        if not arr.flags.c_contiguous:
            arr = np.ascontiguousarray(arr)
        tp = TensorProto()
        tp.name = name
        tp.data_type = helper.np_dtype_to_tensor_dtype(arr.dtype)
        tp.dims.extend(arr.shape)
        return tp, memoryview(arr).cast("B")

    def __repr__(self) -> str:
        return f"Parameter({self._type})"

