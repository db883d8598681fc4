"""``load`` / ``save``: ONNX files on disk, read safely and written atomically."""

from __future__ import annotations

import hashlib
import os
import stat
import time
from pathlib import Path

import numpy as np
import onnx
from google.protobuf.message import DecodeError

from ..atomic import OutputError, _umask, atomic_write_bytes, commit, make_temp, prepare
from ..ir.graph import Graph
from ..limits import max_model_bytes
from .convert import (
    OnnxFormatError,
    from_onnx,
    graph_proto_without_initializers,
    model_shell,
)
from .external import ExternalDataMismatch, _all_tensors, load_external_data
from .tensor_sizes import check_inline

# Above this many bytes of weights, save() writes them to a side file (protobuf's 2 GiB cap).
EXTERNAL_DATA_THRESHOLD = 1_800_000_000
EXTERNAL_MIN_BYTES = 1024  # smaller tensors stay inline with external_data=True (onnx's default)
_ALIGN = 64


def read_model_proto(path: str | os.PathLike, *, arrays: dict | None = None) -> onnx.ModelProto:
    """Parse ``path`` as an ONNX model, with its external data read safely.

    The file is opened without blocking and checked on the open descriptor: it must be a regular
    file of at most :func:`netmorph.limits.max_model_bytes` (protobuf's 2 GiB), read with that
    bound. Every tensor's data must match its declared dims (external data is read only for the
    declared length; see :func:`netmorph.onnx_io.external.load_external_data`).

    ``arrays``: a dict that receives the external graph initializers as read-only numpy arrays over
    the bytes read (name -> array; those tensors keep their external reference in the proto), so
    they are held once, not copied into the proto and decoded again.
    """
    for attempt in range(3):
        try:
            if arrays is not None:
                arrays.clear()
            return _read_model_proto(Path(path), arrays)
        except ExternalDataMismatch:
            if attempt == 2:
                raise
            time.sleep(0.05 * (attempt + 1))  # a writer may be between its two renames
    raise AssertionError("unreachable")  # pragma: no cover


# ONNX element types whose bytes are a plain little-endian numpy array (no packing, no bit tricks)
_PLAIN = {getattr(onnx.TensorProto, n): np.dtype(d) for n, d in (
    ("FLOAT", "<f4"), ("DOUBLE", "<f8"), ("FLOAT16", "<f2"), ("INT8", "i1"), ("UINT8", "u1"),
    ("INT16", "<i2"), ("UINT16", "<u2"), ("INT32", "<i4"), ("UINT32", "<u4"), ("INT64", "<i8"),
    ("UINT64", "<u8"), ("BOOL", "?"), ("COMPLEX64", "<c8"), ("COMPLEX128", "<c16"))}


def _array_sink(model: onnx.ModelProto, arrays: dict):
    """A ``keep`` callback for :func:`load_external_data` that turns the graph's own external
    initializers of a plain numeric type into read-only arrays over the bytes read."""
    held = list(model.graph.initializer)  # held: their wrappers (and ids) stay the same
    inits = {id(t) for t in held}

    def keep(t: onnx.TensorProto, data: bytes) -> bool:
        dt = _PLAIN.get(t.data_type)
        if dt is None or id(t) not in inits:
            return False
        arrays[t.name] = np.frombuffer(data, dtype=dt).reshape(tuple(t.dims))  # read-only view of data
        return True

    keep.held = held
    return keep


def _read_model_proto(p: Path, arrays: dict | None = None) -> onnx.ModelProto:
    data = _read_bounded(p)
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError) as e:
        if "MaxDepth" in str(e) or "recursion" in str(e).lower():
            raise OnnxFormatError(f"{p}: messages nested too deeply for protobuf (subgraphs inside "
                                  "subgraphs); refused") from None
        raise OnnxFormatError(f"{p}: not a readable ONNX model (truncated or corrupt: {e})") from None
    del data
    if model.ir_version <= 0 or not len(model.opset_import) or not model.HasField("graph"):
        raise OnnxFormatError(
            f"{p}: not an ONNX model (no ir_version, opset imports or graph in the file)"
        )
    try:
        _check_text(model)
        load_external_data(model, p.parent, None if arrays is None else _array_sink(model, arrays))
        for t in _all_tensors(model):
            if t.data_type not in _KNOWN_TYPES:
                raise OnnxFormatError(f"tensor {t.name!r} has unknown data type {t.data_type}")
            check_inline(t, f"tensor {t.name!r}")
    except OnnxFormatError as e:
        raise type(e)(f"{p}: {e}") from None
    return model


_KNOWN_TYPES = frozenset(onnx.TensorProto.DataType.values()) - {onnx.TensorProto.UNDEFINED}
_TEXT_PLANS: dict = {}


def _text_plan(descriptor) -> tuple:
    """(string fields, repeated string fields, message fields, repeated message fields) of a type."""
    plan = _TEXT_PLANS.get(descriptor)
    if plan is None:
        groups: tuple[list, list, list, list] = ([], [], [], [])
        for f in descriptor.fields:
            repeated = f.is_repeated if hasattr(f, "is_repeated") else f.label == f.LABEL_REPEATED
            if f.type == f.TYPE_STRING:
                groups[int(repeated)].append(f.name)
            elif f.type == f.TYPE_MESSAGE:  # (ONNX has no map fields)
                groups[2 + int(repeated)].append(f.name)
        plan = _TEXT_PLANS[descriptor] = tuple(tuple(g) for g in groups)
    return plan


def _check_text(msg, where: str = "model") -> None:
    """Refuse a string field that is not UTF-8 (protobuf hands such a field over as ``bytes``, which
    fails later, far from the file). Only string and message fields are read: no weight is copied."""
    strings, repeated_strings, messages, repeated_messages = _text_plan(msg.DESCRIPTOR)
    for name in strings:
        if type(getattr(msg, name)) is not str:
            raise OnnxFormatError(f"{where}: field {name!r} is not valid UTF-8 text")
    for name in repeated_strings:
        for v in getattr(msg, name):
            if type(v) is not str:
                raise OnnxFormatError(f"{where}: field {name!r} is not valid UTF-8 text")
    for name in messages:
        if msg.HasField(name):
            _check_text(getattr(msg, name), f"{where}.{name}")
    for name in repeated_messages:
        for item in getattr(msg, name):
            _check_text(item, f"{where}.{name}")


def _read_bounded(p: Path) -> bytes:
    """The bytes of the model file ``p``, refusing non-regular files and files above the limit."""
    limit = max_model_bytes()
    try:
        fd = os.open(p, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise OnnxFormatError(f"{p}: no such file") from None
    except (OSError, ValueError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise OnnxFormatError(f"{p}: cannot be opened ({reason})") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OnnxFormatError(f"{p}: not a regular file")
        if st.st_size > limit:
            raise OnnxFormatError(
                f"{p}: {st.st_size:,} bytes, above the model file limit of {limit:,} "
                "(protobuf's 2 GiB; larger weights belong in external data)"
            )
        chunks, left = [], st.st_size
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 24))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        if os.read(fd, 1):
            raise OnnxFormatError(f"{p}: grew while being read; refused")
        return b"".join(chunks)
    except OSError as e:
        raise OnnxFormatError(f"{p}: cannot be read ({e.strerror or e})") from None
    finally:
        os.close(fd)


def load(path: str | os.PathLike) -> Graph:
    """Read an ONNX file into an IR :class:`~netmorph.ir.Graph`.

    External data is read only from regular files inside the model's own folder (see
    :func:`netmorph.onnx_io.external.resolve_location`). Weights are not copied: the graph's
    parameters keep the parsed tensors and turn into numpy arrays when first read.
    """
    arrays: dict = {}
    model = read_model_proto(path, arrays=arrays)
    try:
        return from_onnx(model, arrays=arrays)
    except OnnxFormatError as e:
        raise OnnxFormatError(f"{Path(path)}: {e}") from None
    except (KeyError, TypeError, IndexError, UnicodeError, DecodeError) as e:  # a crafted file, deep down
        raise OnnxFormatError(f"{Path(path)}: malformed model ({type(e).__name__}: {e})") from None
    except MemoryError:
        raise OnnxFormatError(f"{Path(path)}: too large to read on this machine") from None


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
    """Per parameter: (header bytes or a TensorProto, raw buffer or None, serialised length).

    With a ``side`` file open, tensors of at least ``EXTERNAL_MIN_BYTES`` raw bytes are
    written there (64-byte aligned) and their header points at it; smaller ones and
    tensors stored in typed fields (``float_data`` …) stay inline.
    """
    plan = []
    offset = 0
    for v in g.parameters:
        header, raw = v.const.header_proto(v.name)
        if raw is None and header.data_location == onnx.TensorProto.EXTERNAL:
            raise OnnxFormatError(
                f"parameter {v.name!r} still refers to external data that was never read; "
                "build the graph with netmorph.load (or onnx.load) so its weights are in memory"
            )
        if side is not None:
            if raw is None and header.HasField("raw_data"):
                data = header.raw_data  # one copy of the bytes (protobuf hands out copies)
                if len(data) >= EXTERNAL_MIN_BYTES:  # an untouched loaded tensor: split it
                    raw, header = data, _without_raw_data(header)
                del data
            if raw is not None and len(raw) >= EXTERNAL_MIN_BYTES:
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


class _HashingWriter:
    """A binary file that keeps the SHA-1 of everything written (the side file's ``checksum``)."""

    def __init__(self, f):
        self.f, self.h = f, hashlib.sha1()

    def write(self, data) -> int:
        self.h.update(data)
        return self.f.write(data)

    def hexdigest(self) -> str:
        return self.h.hexdigest()

    def close(self) -> None:
        self.f.flush()
        os.fsync(self.f.fileno())
        self.f.close()


def _with_checksum(plan, side_name: str, digest: str):
    """``plan`` with ONNX's ``checksum`` (SHA-1 of the side file) on every tensor stored there.

    A model and a side file written by different saves (two writers racing on one path, or a crash
    between the two renames) then fail to load with a clear error instead of pairing one model's
    graph with another's weights.
    """
    out = []
    for hb, raw, n in plan:
        if isinstance(hb, onnx.TensorProto) and hb.data_location == onnx.TensorProto.EXTERNAL and any(
                e.key == "location" and e.value == side_name for e in hb.external_data):
            e = hb.external_data.add()
            e.key, e.value = "checksum", digest
            n = hb.ByteSize()
        out.append((hb, raw, n))
    return out


def _without_raw_data(t: onnx.TensorProto) -> onnx.TensorProto:
    """A copy of ``t`` without its ``raw_data`` (copied field by field: the bytes are not)."""
    h = onnx.TensorProto()
    for fd, val in t.ListFields():
        if fd.name == "raw_data":
            continue
        if fd.is_repeated:
            getattr(h, fd.name).extend(val)
        elif fd.type == fd.TYPE_MESSAGE:
            getattr(h, fd.name).CopyFrom(val)
        else:
            setattr(h, fd.name, val)
    return h


def _split_fields(msg, field_number: int) -> tuple[bytes, bytes]:
    """``msg`` serialised as (fields numbered below ``field_number``, fields above it).

    Writing ``head``, then field ``field_number``, then ``tail`` gives the bytes protobuf's
    own serialiser would (fields in number order).
    """
    head, tail = type(msg)(), type(msg)()
    head.CopyFrom(msg)
    tail.CopyFrom(msg)
    for fd, _ in msg.ListFields():
        (tail if fd.number < field_number else head).ClearField(fd.name)
    return head.SerializeToString(), tail.SerializeToString()


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
    side_final = path.with_name(path.name + ".data") if external_data else None
    mode = prepare(path)
    side_mode = prepare(side_final) if side_final is not None else None
    tmp_files: list[str] = []
    try:
        _write_model(graph, path, side_final, tmp_files, mode, side_mode)
    except OSError as e:
        raise OutputError(f"{path}: cannot write ({e.strerror or e})") from None
    finally:
        for t in tmp_files:
            try:
                os.unlink(t)
            except FileNotFoundError:
                pass
    return path


def _write_model(graph: Graph, path: Path, side_final: Path | None, tmp_files: list[str],
                 mode: int | None, side_mode: int | None) -> None:
    side_tmp = None
    side = None
    if side_final is not None:
        fd, side_tmp = make_temp(side_final)
        tmp_files.append(side_tmp)
        side = _HashingWriter(os.fdopen(fd, "wb"))
    try:
        plan = _plan_tensors(graph, side, side_final.name if side_final else None)
    finally:
        if side is not None:
            side.close()
    if side is not None:
        plan = _with_checksum(plan, side_final.name, side.hexdigest())
    shell = model_shell(graph).SerializeToString()
    graph_head, graph_tail = _split_fields(graph_proto_without_initializers(graph), _GRAPH_INITIALIZER)
    tag_init = _tag(_GRAPH_INITIALIZER)
    glen = len(graph_head) + len(graph_tail) + sum(
        len(tag_init) + len(_varint(n)) + n for _, _, n in plan
    )
    fd, tmp = make_temp(path)
    tmp_files.append(tmp)
    with os.fdopen(fd, "wb") as f:
        # The graph goes last: a file cut anywhere after the small header then breaks the
        # graph's declared length, so a truncated save is always detected on load.
        f.write(shell)
        f.write(_tag(_MODEL_GRAPH) + _varint(glen))
        f.write(graph_head)
        for hb, raw, n in plan:
            f.write(tag_init + _varint(n))
            f.write(hb if isinstance(hb, bytes) else hb.SerializeToString())
            if raw is not None:
                f.write(_tag(_TENSOR_RAW_DATA) + _varint(len(raw)))
                f.write(raw)
        f.write(graph_tail)
        f.flush()
        os.fsync(f.fileno())
    if side_tmp is None:
        commit(tmp, path, mode)
    else:
        os.chmod(side_tmp, (0o666 & ~_umask()) if side_mode is None else side_mode)
        os.chmod(tmp, (0o666 & ~_umask()) if mode is None else mode)
        _replace_pair(side_tmp, side_final, tmp, path)
    tmp_files.clear()


def _replace_pair(side_tmp: str, side_final: Path, tmp: str, path: Path) -> None:
    """Move the side file, then the model, into place; if the model cannot be moved, put
    the previous side file back so an existing model still finds the data it was saved with.

    (Two renames are not one atomic step: a crash between them, or two writers racing, can leave
    one save's model beside another's data; the side file's SHA-1 ``checksum`` in the model makes
    loading such a pair fail with a clear error instead of mixing them. Errors cannot mix them.)
    """
    backup = None
    if os.path.lexists(side_final):
        fd, backup = make_temp(side_final)
        os.close(fd)
        try:
            os.replace(side_final, backup)
        except FileNotFoundError:  # another writer moved it away first: nothing to restore
            os.unlink(backup)
            backup = None
    try:
        os.replace(side_tmp, side_final)
        os.replace(tmp, path)
    except BaseException:
        if backup is not None:
            os.replace(backup, side_final)
        elif os.path.lexists(side_final):
            os.unlink(side_final)
        raise
    if backup is not None:
        os.unlink(backup)


def save_proto(model: onnx.ModelProto, path: str | os.PathLike) -> Path:
    """Write an in-memory ``ModelProto`` atomically (for protos not built from a Graph)."""
    try:
        data = model.SerializeToString()
    except ValueError as e:  # e.g. above protobuf's 2 GiB
        raise OutputError(f"{path}: cannot serialise the model ({e})") from None
    return atomic_write_bytes(path, data)
