"""``load`` / ``save``: ONNX files on disk, read safely and written atomically."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import onnx
from google.protobuf.message import DecodeError

from ..ir.graph import Graph
from .convert import (
    OnnxFormatError,
    from_onnx,
    graph_proto_without_initializers,
    model_shell,
)
from .external import load_external_data

# Above this many bytes of weights, save() writes them to a side file (protobuf's 2 GiB cap).
EXTERNAL_DATA_THRESHOLD = 1_800_000_000
_ALIGN = 64


def read_model_proto(path: str | os.PathLike) -> onnx.ModelProto:
    """Parse ``path`` as an ONNX model, with its external data read safely."""
    p = Path(path)
    if not p.exists():
        raise OnnxFormatError(f"{p}: no such file")
    if not p.is_file():
        raise OnnxFormatError(f"{p}: not a regular file")
    data = p.read_bytes()
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError) as e:
        raise OnnxFormatError(f"{p}: not a readable ONNX model (truncated or corrupt: {e})") from None
    del data
    if model.ir_version <= 0 or not len(model.opset_import) or not model.HasField("graph"):
        raise OnnxFormatError(
            f"{p}: not an ONNX model (no ir_version, opset imports or graph in the file)"
        )
    load_external_data(model, p.parent)
    return model


def load(path: str | os.PathLike) -> Graph:
    """Read an ONNX file into an IR :class:`~netmorph.ir.Graph`.

    External data is read only from regular files inside the model's own folder (see
    :func:`netmorph.onnx_io.external.resolve_location`). Weights are not copied: the graph's
    parameters keep the parsed tensors and turn into numpy arrays when first read.
    """
    return from_onnx(read_model_proto(path))


# -- protobuf wire helpers for the streaming writer ----------------------------------------
def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _tag(field: int) -> bytes:
    return _varint((field << 3) | 2)


_MODEL_GRAPH, _GRAPH_INITIALIZER, _TENSOR_RAW_DATA = 7, 5, 9


def _plan_tensors(g: Graph, side, side_name: str | None):
    """Per parameter: (header bytes or a TensorProto, raw buffer or None, serialised length)."""
    plan = []
    offset = 0
    for v in g.parameters:
        header, raw = v.const.header_proto(v.name)
        if side is not None and (raw is not None or not header.HasField("raw_data")):
            if raw is None:  # an untouched loaded tensor: pull out its raw bytes
                full = header
                header = onnx.TensorProto()
                header.CopyFrom(full)
                raw = header.raw_data if header.HasField("raw_data") else None
                header.ClearField("raw_data")
                if raw is None:  # typed fields (float_data …): keep it inline
                    plan.append((full, None, full.ByteSize()))
                    continue
            pad = (-offset) % _ALIGN
            side.write(b"\0" * pad)
            offset += pad
            side.write(raw)
            header.data_location = onnx.TensorProto.EXTERNAL
            for k, val in (("location", side_name), ("offset", str(offset)), ("length", str(len(raw)))):
                e = header.external_data.add()
                e.key, e.value = k, val
            offset += len(raw)
            raw = None
        if raw is None:
            # Serialised only when written, one tensor at a time (no full-model copy).
            plan.append((header, None, header.ByteSize()))
            continue
        hb = header.SerializeToString()
        n = len(hb) + len(_tag(_TENSOR_RAW_DATA)) + len(_varint(len(raw))) + len(raw)
        plan.append((hb, raw, n))
    return plan


def save(graph: Graph, path: str | os.PathLike, *, external_data: bool | None = None) -> Path:
    """Write ``graph`` to ``path`` atomically (temporary file, fsync, rename).

    Weights are streamed from their buffers: no second in-memory copy of the model is
    built. ``external_data`` writes the weights to ``<name>.data`` beside the model (also
    atomically); ``None`` chooses it only when the weights exceed protobuf's 2 GiB limit.
    A crash or error leaves any existing file at ``path`` untouched.
    """
    path = Path(path)
    if external_data is None:
        external_data = sum(v.const.nbytes for v in graph.parameters) > EXTERNAL_DATA_THRESHOLD
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_files: list[str] = []
    side_tmp = side_final = None
    try:
        side = None
        if external_data:
            side_final = path.with_name(path.name + ".data")
            fd, side_tmp = tempfile.mkstemp(prefix=f".{side_final.name}.", dir=path.parent)
            tmp_files.append(side_tmp)
            side = os.fdopen(fd, "wb")
        try:
            plan = _plan_tensors(graph, side, side_final.name if side_final else None)
        finally:
            if side is not None:
                side.flush()
                os.fsync(side.fileno())
                side.close()
        shell = model_shell(graph).SerializeToString()
        gbytes = graph_proto_without_initializers(graph).SerializeToString()
        tag_init = _tag(_GRAPH_INITIALIZER)
        glen = len(gbytes) + sum(len(tag_init) + len(_varint(n)) + n for _, _, n in plan)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        tmp_files.append(tmp)
        with os.fdopen(fd, "wb") as f:
            f.write(shell)
            f.write(_tag(_MODEL_GRAPH) + _varint(glen))
            f.write(gbytes)
            for hb, raw, n in plan:
                f.write(tag_init + _varint(n))
                f.write(hb if isinstance(hb, bytes) else hb.SerializeToString())
                if raw is not None:
                    f.write(_tag(_TENSOR_RAW_DATA) + _varint(len(raw)))
                    f.write(raw)
            f.flush()
            os.fsync(f.fileno())
        mode = 0o666 & ~_umask()
        if side_tmp is not None:
            os.chmod(side_tmp, mode)
            os.replace(side_tmp, side_final)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
        tmp_files.clear()
    finally:
        for t in tmp_files:
            try:
                os.unlink(t)
            except FileNotFoundError:
                pass
    return path


def _umask() -> int:
    m = os.umask(0)
    os.umask(m)
    return m


def save_proto(model: onnx.ModelProto, path: str | os.PathLike) -> Path:
    """Write an in-memory ``ModelProto`` atomically (for protos not built from a Graph)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(model.SerializeToString())
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path
