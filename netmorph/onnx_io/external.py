"""Reading ONNX external data safely: only regular files inside the model's own folder."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path

import onnx
from onnx import TensorProto

from ..limits import max_weight_bytes
from .convert import OnnxFormatError
from .tensor_sizes import declared_nbytes

MAX_LOCATION_CHARS = 1024


class ExternalDataMismatch(OnnxFormatError):
    """A side file's SHA-1 differs from the ``checksum`` its model recorded (not written together)."""


def _entries(t: TensorProto) -> dict[str, str]:
    return {e.key: e.value for e in t.external_data}


def resolve_location(base_dir: Path, location: str, tensor_name: str) -> Path:
    """The file ``location`` names, refusing anything that could leave ``base_dir``.

    Refused: empty or absolute locations, drive letters, ``..`` components, symlinks
    anywhere on the way, files with more than one hard link, and anything that is not a
    regular file. ``base_dir`` itself is resolved first, so a model inside a symlinked
    folder still works.
    """
    where = f"external data of tensor {tensor_name!r}"
    if not location:
        raise OnnxFormatError(f"{where}: empty location")
    if "\0" in location or len(location) > MAX_LOCATION_CHARS:
        raise OnnxFormatError(f"{where}: location {location[:60]!r}… is not a usable file name "
                              f"(NUL byte, or over {MAX_LOCATION_CHARS} characters)")
    if "\\" in location or ":" in location:
        raise OnnxFormatError(f"{where}: location {location!r} is not a plain relative path")
    rel = Path(location)
    if rel.is_absolute() or location.startswith("/"):
        raise OnnxFormatError(f"{where}: absolute location {location!r} refused")
    if any(part == ".." for part in rel.parts):
        raise OnnxFormatError(f"{where}: location {location!r} leaves the model's folder")
    base = base_dir.resolve()
    cur = base
    st = None
    for part in rel.parts:
        if part in ("", "."):
            continue
        cur = cur / part
        try:
            st = os.lstat(cur)
        except FileNotFoundError:
            raise OnnxFormatError(f"{where}: file {location!r} not found next to the model") from None
        except OSError as e:  # a component under a regular file, a name too long …
            raise OnnxFormatError(f"{where}: location {location!r} cannot be used ({e.strerror})") from None
        if stat.S_ISLNK(st.st_mode):
            raise OnnxFormatError(f"{where}: {location!r} goes through a symlink; refused")
    if cur == base or st is None:
        raise OnnxFormatError(f"{where}: location {location!r} names the model's folder")
    if not stat.S_ISREG(st.st_mode):
        raise OnnxFormatError(f"{where}: {location!r} is not a regular file")
    if st.st_nlink > 1:
        raise OnnxFormatError(f"{where}: {location!r} has {st.st_nlink} hard links; refused")
    if os.path.commonpath([str(base), str(cur.resolve())]) != str(base):
        raise OnnxFormatError(f"{where}: location {location!r} leaves the model's folder")
    return cur


def _open_checked(path: Path, tensor_name: str):
    """Open ``path`` without following a symlink swapped in since it was checked and without
    blocking (a FIFO swapped in opens at once), then re-check on the open descriptor (``fstat``,
    not the path) that it is a regular file with one link."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags)
    except OSError as e:
        raise OnnxFormatError(
            f"external data of tensor {tensor_name!r}: cannot open {path.name!r} ({e.strerror})"
        ) from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_nlink > 1:
        os.close(fd)
        raise OnnxFormatError(
            f"external data of tensor {tensor_name!r}: {path.name!r} changed while being opened; refused"
        )
    return os.fdopen(fd, "rb")


def load_external_data(model: onnx.ModelProto, base_dir: Path,
                       keep: Callable[[TensorProto, bytes], bool] | None = None) -> int:
    """Read every external tensor of ``model`` into ``raw_data``, in place.

    Returns the number of tensors read. Files are opened once each. ``keep(tensor, data)``, when
    given, may take the bytes of a tensor itself (returning True): that tensor is left pointing
    at its file and its bytes are not copied into the proto.
    """
    tensors = [
        t
        for t in _all_tensors(model)
        if t.HasField("data_location") and t.data_location == TensorProto.EXTERNAL
    ]
    handles: dict[Path, object] = {}
    budget = max_weight_bytes()
    declared = [_declared_length(t) for t in tensors]
    total = sum(declared)
    if total > budget:
        raise OnnxFormatError(
            f"external data declares {total:,} bytes of weights, above the limit of {budget:,} "
            "(NETMORPH_MAX_WEIGHT_BYTES)"
        )
    try:
        for t, want in zip(tensors, declared, strict=True):
            info = _entries(t)
            path = resolve_location(base_dir, info.get("location", ""), t.name)
            f = handles.get(path)
            if f is None:
                f = handles[path] = _open_checked(path, t.name)
                checked = _check_checksum(f, path, [x for x in tensors if _entries(x).get("location")
                                                    == info.get("location")])
                if checked:
                    f.seek(0)
            size = os.fstat(f.fileno()).st_size
            try:
                offset = int(info.get("offset", 0) or 0)
                length = info.get("length")
                length = want if length in (None, "") else int(length)
            except ValueError:
                raise OnnxFormatError(
                    f"external data of tensor {t.name!r}: offset/length "
                    f"{info.get('offset')!r}/{info.get('length')!r} are not integers"
                ) from None
            if length != want:
                raise OnnxFormatError(
                    f"external data of tensor {t.name!r}: length {length} does not match its dims "
                    f"{list(t.dims)} ({want} bytes)"
                )
            if offset < 0 or length < 0 or offset + length > size:
                raise OnnxFormatError(
                    f"external data of tensor {t.name!r}: bytes {offset}..{offset + length} "
                    f"are outside {info.get('location')!r} ({size} bytes)"
                )
            f.seek(offset)
            data = f.read(length)
            if len(data) != length:
                raise OnnxFormatError(f"external data of tensor {t.name!r}: file ended after {len(data)} "
                                      f"of {length} bytes")
            if keep is not None and keep(t, data):
                continue
            del t.external_data[:]
            t.data_location = TensorProto.DEFAULT
            t.raw_data = data
    finally:
        for f in handles.values():
            f.close()
    return len(tensors)


def _check_checksum(f, path: Path, tensors: list[TensorProto]) -> bool:
    """Compare the SHA-1 of the open side file with the ``checksum`` its tensors record (if any)."""
    import hashlib

    sums = {_entries(t).get("checksum") for t in tensors} - {None, ""}
    if not sums:
        return False
    if len(sums) > 1:
        raise ExternalDataMismatch(f"external data {path.name!r}: tensors record different checksums")
    size = os.fstat(f.fileno()).st_size
    bound = sum(_declared_length(t) + 64 for t in tensors) + 4096  # tensors + our 64-byte alignment
    if size > bound:
        raise ExternalDataMismatch(f"external data {path.name!r}: {size:,} bytes, far more than its tensors "
                                   f"need ({bound:,}); refusing to checksum it")
    h = hashlib.sha1()
    while chunk := f.read(1 << 24):
        h.update(chunk)
    if h.hexdigest() != sums.pop():
        raise ExternalDataMismatch(
            f"external data {path.name!r} does not belong to this model (checksum differs: written by "
            "another save, or a save was interrupted between its two renames)"
        )
    return True


def _declared_length(t: TensorProto) -> int:
    where = f"external data of tensor {t.name!r}"
    n = declared_nbytes(t, where)
    if n is None:
        raise OnnxFormatError(f"{where}: its data type ({t.data_type}) has no fixed size; refused as "
                              "external data")
    return n


def _all_tensors(model: onnx.ModelProto):
    """Every ``TensorProto`` of ``model``: initializers and tensor attributes, subgraphs and
    local functions included (any of them may point at external data)."""
    yield from _graph_tensors(model.graph)
    for f in model.functions:
        yield from _node_tensors(f.node)


def _graph_tensors(graph: onnx.GraphProto):
    yield from graph.initializer
    for st in graph.sparse_initializer:
        yield st.values
        yield st.indices
    yield from _node_tensors(graph.node)


def _node_tensors(nodes):
    for n in nodes:
        for a in n.attribute:
            if a.HasField("t"):
                yield a.t
            yield from a.tensors
            if a.HasField("sparse_tensor"):
                yield a.sparse_tensor.values
                yield a.sparse_tensor.indices
            for st in a.sparse_tensors:
                yield st.values
                yield st.indices
            if a.HasField("g"):
                yield from _graph_tensors(a.g)
            for sub in a.graphs:
                yield from _graph_tensors(sub)
