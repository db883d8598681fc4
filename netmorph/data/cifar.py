"""CIFAR-10 / CIFAR-100 from the official "python version" batch folders.

The official files are Python pickles of dicts (``data``: ``uint8 (N, 3072)`` rows of 1024 red,
1024 green, 1024 blue values; ``labels`` / ``fine_labels``). Pickle *is* the distributed format,
so we read it with :class:`SafeUnpickler`, which refuses every global except the numpy array
reconstruction helpers (and ``_codecs.encode``, used by protocol-2 pickles for bytes): a
tampered file fails with :class:`DataError` instead of running code. Nothing is downloaded.
"""

from __future__ import annotations

import codecs
import os
import pickle
from pathlib import Path

import numpy as np

from .dataset import DataError, Splits, make_splits

CIFAR10_DIR = "cifar-10-batches-py"
CIFAR100_DIR = "cifar-100-python"
CIFAR10_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))


def _numpy_globals() -> dict[tuple[str, str], object]:
    try:
        from numpy._core import multiarray
    except ImportError:  # numpy < 2
        from numpy.core import multiarray  # type: ignore[no-redef]
    allowed: dict[tuple[str, str], object] = {}
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(mod, "_reconstruct")] = multiarray._reconstruct
        allowed[(mod, "scalar")] = multiarray.scalar
    allowed[("numpy", "ndarray")] = np.ndarray
    allowed[("numpy", "dtype")] = np.dtype
    allowed[("_codecs", "encode")] = codecs.encode
    return allowed


class SafeUnpickler(pickle.Unpickler):
    """An unpickler for data files: builtin containers, strings, numbers and numpy arrays only.

    ``find_class`` resolves only numpy's array/dtype reconstruction and ``_codecs.encode``;
    any other global (``os.system``, ``builtins.eval`` …) raises :class:`pickle.UnpicklingError`.
    """

    _allowed = _numpy_globals()

    def find_class(self, module: str, name: str):
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}") from None


def read_pickle(path: Path) -> dict:
    """One official batch file as a dict with ``str`` keys."""
    try:
        with open(path, "rb") as f:
            obj = SafeUnpickler(f, encoding="latin1").load()
    except FileNotFoundError:
        raise DataError(f"{path}: missing batch file") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as e:
        raise DataError(f"{path}: not a CIFAR python batch file ({e})") from e
    if not isinstance(obj, dict):
        raise DataError(f"{path}: expected a dict, found {type(obj).__name__}")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _images_labels(path: Path, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    d = read_pickle(path)
    if "data" not in d or label_key not in d:
        raise DataError(f"{path}: batch lacks 'data' or '{label_key}' (keys: {', '.join(map(str, d))})")
    data = np.asarray(d["data"])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise DataError(f"{path}: 'data' must be uint8 (N, 3072), got {data.dtype} {data.shape}")
    labels = np.asarray(d[label_key], dtype=np.int64)
    if labels.shape != (len(data),):
        raise DataError(f"{path}: {len(labels)} labels for {len(data)} images")
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
