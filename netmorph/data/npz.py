"""Data sets stored as ``.npz`` in the layout of ``/work/shared/data/README.md``.

Arrays: ``x_train`` / ``x_test`` ``uint8 (N, H, W, C)`` (or ``float32 (N, C, H, W)``),
``y_train`` / ``y_test`` integer labels, optional ``test_lossless`` (bool mask) and
``class_names`` (strings). Read with ``numpy.load(allow_pickle=False)``: no code runs.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np

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
        with np.load(p, allow_pickle=False) as z:
            missing = [k for k in REQUIRED if k not in z.files]
            if missing:
                raise DataError(f"{p}: missing array(s) {', '.join(missing)} (have {', '.join(z.files)})")
            arrays = {k: z[k] for k in z.files if k in (*REQUIRED, "test_lossless", "class_names")}
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as e:
        raise DataError(f"{p}: not a readable .npz file ({e})") from e
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
