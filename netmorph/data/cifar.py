"""CIFAR-10 / CIFAR-100 from the official "python version" batch folders.

The official files are Python pickles of dicts (``data``: ``uint8 (N, 3072)`` rows of 1024 red,
1024 green, 1024 blue values; ``labels`` / ``fine_labels``). Pickle *is* the distributed format,
so we read it with :class:`SafeUnpickler`, which refuses every global except the numpy array
reconstruction helpers (and ``_codecs.encode``, used by protocol-2 pickles for bytes): a
tampered file fails with :class:`DataError` instead of running code. Memory is bounded too:
every array the pickle asks numpy to allocate is counted against a budget derived from the
file's size (an array's bytes are stored in the file), object arrays are refused, and ``data``
must be a real ``uint8`` array (a list repeated through the pickle memo is not expanded).
Nothing is downloaded.
"""

from __future__ import annotations

import codecs
import math
import os
import pickle
import stat
from pathlib import Path

import numpy as np

from ..limits import max_data_bytes
from .dataset import DataError, Splits, make_splits

CIFAR10_DIR = "cifar-10-batches-py"
CIFAR100_DIR = "cifar-100-python"
CIFAR10_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))


def _multiarray():
    try:
        from numpy._core import multiarray
    except ImportError:  # numpy < 2
        from numpy.core import multiarray  # type: ignore[no-redef]
    return multiarray


class _Budget:
    """Bytes of numpy arrays a pickle may still allocate."""

    def __init__(self, limit: int):
        self.left = limit

    def take(self, shape, dtype) -> None:
        dt = np.dtype(dtype)
        if dt.hasobject:
            raise pickle.UnpicklingError("object arrays are refused")
        try:
            dims = [int(d) for d in (shape if isinstance(shape, tuple | list) else (shape,))]
        except (TypeError, ValueError):
            raise pickle.UnpicklingError(f"array shape {shape!r} is not a tuple of integers") from None
        if any(d < 0 for d in dims):
            raise pickle.UnpicklingError(f"negative array shape {tuple(dims)}")
        n = math.prod(dims) * dt.itemsize
        if n > self.left:
            raise pickle.UnpicklingError(
                f"an array of shape {tuple(dims)} ({n:,} bytes) exceeds what the file can hold"
            )
        self.left -= n


class SafeUnpickler(pickle.Unpickler):
    """An unpickler for data files: builtin containers, strings, numbers and numpy arrays only.

    ``find_class`` resolves only numpy's array/dtype reconstruction, ``bytes`` and ``_codecs.encode``; any
    other global (``os.system``, ``builtins.eval`` …) raises :class:`pickle.UnpicklingError`.
    Array constructors are wrapped so that the bytes they allocate are charged to ``max_bytes``.
    """

    def __init__(self, file, *, max_bytes: int, **kwargs):
        super().__init__(file, **kwargs)
        budget = _Budget(max_bytes)
        multiarray = _multiarray()

        def ndarray(shape, dtype=float, *args, **kw):
            budget.take(shape, dtype)
            return np.ndarray(shape, dtype, *args, **kw)

        def reconstruct(subtype, shape, dtype):
            if subtype is not ndarray and subtype is not np.ndarray:  # `numpy.ndarray` resolves to ours
                raise pickle.UnpicklingError("only plain numpy arrays are allowed")
            budget.take(shape, dtype)
            return multiarray._reconstruct(np.ndarray, shape, dtype)

        def dtype(*args, **kw):
            dt = np.dtype(*args, **kw)
            if dt.hasobject:
                raise pickle.UnpicklingError("object dtypes are refused")
            return dt

        def bytes_(*args):  # protocol 2 writes b"" as bytes(); bytes(n) would allocate n bytes
            if args and isinstance(args[0], int):
                budget.take((args[0],), np.uint8)
            return bytes(*args)

        self._allowed = {("numpy", "ndarray"): ndarray, ("numpy", "dtype"): dtype,
                         ("_codecs", "encode"): codecs.encode, ("__builtin__", "bytes"): bytes_,
                         ("builtins", "bytes"): bytes_}
        for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
            self._allowed[(mod, "_reconstruct")] = reconstruct
            self._allowed[(mod, "scalar")] = multiarray.scalar

    def find_class(self, module: str, name: str):
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}") from None


def read_pickle(path: Path) -> dict:
    """One official batch file as a dict with ``str`` keys (memory bounded by the file's size)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))  # a FIFO must not block
    except FileNotFoundError:
        raise DataError(f"{path}: missing batch file") from None
    except OSError as e:
        raise DataError(f"{path}: cannot be opened ({e.strerror})") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            raise DataError(f"{path}: not a regular file (a batch file of the CIFAR python version)")
        with os.fdopen(fd, "rb") as f:
            limit = min(max_data_bytes(), 2 * st.st_size + (1 << 20))
            obj = SafeUnpickler(f, max_bytes=limit, encoding="latin1").load()
    except DataError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError,
            MemoryError, RecursionError, UnicodeError, OverflowError) as e:
        raise DataError(f"{path}: not a CIFAR python batch file ({first_line(e)})") from None
    if not isinstance(obj, dict):
        raise DataError(f"{path}: expected a dict, found {type(obj).__name__}")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


def first_line(e: BaseException) -> str:
    text = str(e).strip()
    return (text.splitlines()[0] if text else type(e).__name__)[:200]


def _labels(path: Path, raw, n: int, label_key: str) -> np.ndarray:
    """Integer labels, one per image; floats, bools and nested lists are refused (not truncated)."""
    if isinstance(raw, np.ndarray):
        if raw.ndim != 1 or raw.dtype.kind not in "iu":
            raise DataError(f"{path}: '{label_key}' must be {n} integers, got {raw.dtype} {raw.shape}")
        labels = raw.astype(np.int64)
    elif isinstance(raw, list | tuple):
        if len(raw) != n:
            raise DataError(f"{path}: {len(raw)} labels for {n} images")
        bad = next((v for v in raw if isinstance(v, bool) or not isinstance(v, int | np.integer)), None)
        if bad is not None:
            raise DataError(
                f"{path}: '{label_key}' must hold integers, found {type(bad).__name__} {repr(bad)[:40]}"
            )
        labels = np.array(raw, dtype=np.int64) if raw else np.zeros(0, np.int64)
    else:
        raise DataError(f"{path}: '{label_key}' must be a list of integers, got {type(raw).__name__}")
    if labels.shape != (n,):
        raise DataError(f"{path}: {len(labels)} labels for {n} images")
    return labels


def _images_labels(path: Path, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    d = read_pickle(path)
    if "data" not in d or label_key not in d:
        raise DataError(f"{path}: batch lacks 'data' or '{label_key}' (keys: {', '.join(map(str, d))})")
    data = d["data"]
    if not isinstance(data, np.ndarray):  # never expand a list: it may repeat one object endlessly
        raise DataError(f"{path}: 'data' must be a uint8 array (N, 3072), got {type(data).__name__}")
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise DataError(f"{path}: 'data' must be uint8 (N, 3072), got {data.dtype} {data.shape}")
    labels = _labels(path, d[label_key], len(data), label_key)
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), labels


def _names(path: Path, key: str) -> tuple[str, ...]:
    if not path.is_file():
        return ()
    names = read_pickle(path).get(key, ())
    return tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names)


def _folder(path: str | os.PathLike, inner: str, marker: str, what: str) -> Path:
    p = Path(path)
    if (p / inner / marker).is_file():
        p = p / inner
    if not p.is_dir():
        if p.is_file() and p.name.endswith((".tar.gz", ".tgz")):
            raise DataError(f"{p}: extract the archive first (tar xzf) and pass the folder")
        raise DataError(f"{p}: no such {what} folder")
    if not (p / marker).is_file():
        raise DataError(f"{p}: not a {what} python-version folder (no '{marker}' inside)")
    return p


def load_cifar10(path: str | os.PathLike) -> Splits:
    """CIFAR-10 from ``cifar-10-batches-py`` (``data_batch_1..5``, ``test_batch``, ``batches.meta``).

    ``path`` may be that folder or its parent.
    """
    p = _folder(path, CIFAR10_DIR, "test_batch", "CIFAR-10")
    parts = [_images_labels(p / f, "labels") for f in CIFAR10_TRAIN]
    x_test, y_test = _images_labels(p / "test_batch", "labels")
    names = _names(p / "batches.meta", "label_names")
    return make_splits(
        np.concatenate([x for x, _ in parts]), np.concatenate([y for _, y in parts]), x_test, y_test,
        num_classes=10, class_names=names if len(names) == 10 else (), name="cifar10",
    )


def load_cifar100(path: str | os.PathLike) -> Splits:
    """CIFAR-100 (fine labels) from ``cifar-100-python`` (``train``, ``test``, ``meta``).

    ``path`` may be that folder or its parent.
    """
    p = _folder(path, CIFAR100_DIR, "test", "CIFAR-100")
    x_train, y_train = _images_labels(p / "train", "fine_labels")
    x_test, y_test = _images_labels(p / "test", "fine_labels")
    names = _names(p / "meta", "fine_label_names")
    return make_splits(
        x_train, y_train, x_test, y_test,
        num_classes=100, class_names=names if len(names) == 100 else (), name="cifar100",
    )
