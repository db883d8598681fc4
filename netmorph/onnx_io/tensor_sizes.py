"""How many bytes a ``TensorProto`` declares (dims x element size), checked before any data is read.

A file's tensor header says what the tensor is; its data (inline ``raw_data``, typed fields or an
external file) must hold exactly that much. Checking the declaration first bounds every read by
what the model itself states, so a 108-float weight can never read a 3 GiB side file.
"""

from __future__ import annotations

import math

from onnx import TensorProto, helper

from .convert import OnnxFormatError

_FOUR_BIT = {getattr(TensorProto, n) for n in ("INT4", "UINT4", "FLOAT4E2M1") if hasattr(TensorProto, n)}
_SIX_BIT = {getattr(TensorProto, n) for n in ("FLOAT6E2M3", "FLOAT6E3M2") if hasattr(TensorProto, n)}
_TWO_BIT = {getattr(TensorProto, n) for n in ("INT2", "UINT2") if hasattr(TensorProto, n)}
_TYPED_FIELDS = ("float_data", "int32_data", "int64_data", "double_data", "uint64_data", "string_data")


def declared_elements(t: TensorProto, where: str) -> int:
    """The element count of ``t``'s dims (refusing negative dims)."""
    for d in t.dims:
        if d < 0:
            raise OnnxFormatError(f"{where}: negative dimension {d} in dims {list(t.dims)}")
    return math.prod(t.dims)


def declared_nbytes(t: TensorProto, where: str) -> int | None:
    """Bytes of ``t``'s data as declared by dims and data type.

    ``None`` when the size is not fixed by the declaration (strings) or the type's packing is not
    known here (such tensors are carried through unchecked inline, and refused as external data).
    """
    n = declared_elements(t, where)
    if t.data_type == TensorProto.STRING:
        return None
    if t.data_type in _FOUR_BIT:
        return (n + 1) // 2
    if t.data_type in _TWO_BIT:
        return (n + 3) // 4
    try:
        itemsize = helper.tensor_dtype_to_np_dtype(t.data_type).itemsize
    except (KeyError, ValueError, TypeError):
        return None
    if t.data_type in _SIX_BIT:
        return None
    return n * itemsize


def check_inline(t: TensorProto, where: str) -> None:
    """Refuse an inline tensor whose stored data does not match its declared dims."""
    if t.HasField("data_location") and t.data_location == TensorProto.EXTERNAL:
        return
    want = declared_nbytes(t, where)
    if t.HasField("raw_data"):
        if want is not None and len(t.raw_data) != want:
            raise OnnxFormatError(
                f"{where}: raw data holds {len(t.raw_data)} bytes but dims {list(t.dims)} need {want}"
            )
        return
    if want is None or t.data_type in _FOUR_BIT | _TWO_BIT:
        return
    n = declared_elements(t, where)
    for field in _TYPED_FIELDS:
        have = len(getattr(t, field))
        if not have:
            continue
        # complex numbers take two entries; 16-bit and 8-bit types are packed one per int32
        per = 2 if t.data_type in (TensorProto.COMPLEX64, TensorProto.COMPLEX128) else 1
        if have != n * per and not (n == 0 and have == 0):
            raise OnnxFormatError(f"{where}: {have} values in {field} but dims {list(t.dims)} need {n * per}")
        return
