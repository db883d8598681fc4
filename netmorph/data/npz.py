"""Data sets stored as ``.npz`` in the layout ``netmorph data prepare`` writes.

Arrays: ``x_train`` / ``x_test`` ``uint8 (N, H, W, C)`` (or ``float32 (N, C, H, W)``),
``y_train`` / ``y_test`` integer labels, optional ``test_lossless`` (bool mask) and
``class_names`` (strings). Read with ``numpy.load(allow_pickle=False)``: no code runs.
Before anything is decompressed, every member's ``.npy`` header is read and its declared size
(shape x item size) checked against the member's stored size and the data limit
(:func:`netmorph.limits.max_data_bytes`), so a zip bomb is refused at a few kilobytes.
"""

from __future__ import annotations

import math
import os
import zipfile
from pathlib import Path

import numpy as np

from ..limits import max_data_bytes
from .dataset import DataError, Splits, make_splits

REQUIRED = ("x_train", "y_train", "x_test", "y_test")


def load_npz(path: str | os.PathLike, *, name: str | None = None) -> Splits:
    """Read a train/test ``.npz`` file.

    Parameters
    ----------
    path
        The ``.npz`` file.
    name
        Name used in logs and errors; defaults to the file stem.

    Returns
    -------
    Splits
        ``(train, test)``; both normalise with the training split's per-channel mean/std.

    Raises
    ------
    DataError
        The file is missing, not an ``.npz``, lacks an array, or an array has the wrong
        shape or dtype (the message names the file and the array).
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: no such data file")
    try:
        check_declared_sizes(p, (*REQUIRED, "test_lossless", "class_names"))
        with np.load(p, allow_pickle=False) as z:
            missing = [k for k in REQUIRED if k not in z.files]
            if missing:
                raise DataError(f"{p}: missing array(s) {', '.join(missing)} (have {', '.join(z.files)})")
            arrays = {k: z[k] for k in z.files if k in (*REQUIRED, "test_lossless", "class_names")}
    except (ValueError, OSError, zipfile.BadZipFile, EOFError, NotImplementedError, RuntimeError) as e:
        reason = str(e).splitlines()[0] if str(e) else repr(e)
        raise DataError(f"{p}: not a readable .npz file ({reason})") from None
    for k in ("x_train", "x_test"):
        x = arrays[k]
        if x.dtype not in (np.uint8, np.float32) or x.ndim != 4:
            raise DataError(f"{p}: {k} must be uint8 (N,H,W,C) or float32 (N,C,H,W), got {x.dtype} {x.shape}")
    for k, xk in (("y_train", "x_train"), ("y_test", "x_test")):
        y = arrays[k]
        if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer) or len(y) != len(arrays[xk]):
            raise DataError(f"{p}: {k} must be {len(arrays[xk])} integer labels, got {y.dtype} {y.shape}")
    lossless = arrays.get("test_lossless")
    if lossless is not None and (lossless.dtype != np.bool_ or lossless.shape != arrays["y_test"].shape):
        raise DataError(f"{p}: test_lossless must be a bool array like y_test, got {lossless.dtype}")
    names = arrays.get("class_names")
    class_names = () if names is None else tuple(str(n) for n in names.reshape(-1))
    try:
        return make_splits(
            arrays["x_train"], arrays["y_train"], arrays["x_test"], arrays["y_test"],
            class_names=class_names, test_lossless=lossless, name=name or p.stem,
        )
    except DataError as e:
        raise DataError(f"{p}: {e}") from e


def check_declared_sizes(path: Path, names: tuple[str, ...], *, limit: int | None = None,
                         limit_name: str = "NETMORPH_MAX_DATA_BYTES") -> int:
    """Total bytes the ``.npy`` members ``names`` of ``path`` declare; refuse lies and bombs.

    Only each member's header is decompressed. A member whose header declares more bytes than
    the member holds (uncompressed size from the zip directory), an object array, or a total
    above ``limit`` (default :func:`~netmorph.limits.max_data_bytes`; ``limit_name`` names its
    environment variable in the message) raises :class:`DataError`.
    """
    limit = max_data_bytes() if limit is None else limit
    total = 0
    with zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            key = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
            if key not in names:
                continue
            with zf.open(info) as f:
                version = np.lib.format.read_magic(f)
                read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                               else np.lib.format.read_array_header_2_0)
                shape, _, dtype = read_header(f, max_header_size=10_000)
                header = f.tell()
            if dtype.hasobject:
                raise DataError(f"{path}: {key} is an object array (refused: loading it could run code)")
            declared = math.prod(shape) * dtype.itemsize
            if declared > info.file_size - header:
                raise DataError(f"{path}: {key} declares {declared:,} bytes but the member holds "
                                f"{info.file_size - header:,}")
            total += declared
            if total > limit:
                raise DataError(f"{path}: the arrays declare {total:,} bytes, above the data limit "
                                f"of {limit:,} ({limit_name})")
    return total
