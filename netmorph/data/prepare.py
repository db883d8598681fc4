"""Build the class-balanced CIFAR-10 subset ``.npz`` from the official "python version" batches.

The examples, reproductions and docs read one file, ``data/cifar10_small.npz`` relative to the
folder they run in (:data:`DEFAULT_PATH`). It is made from the CIFAR-10 "python version" archive
the user downloads (``cifar-10-python.tar.gz`` from the dataset's page, extracted)::

    netmorph data prepare --from cifar-10-batches-py          # -> data/cifar10_small.npz (+ .sha256)
    netmorph data check                                      # the file matches its .sha256

Contents (``netmorph.data.npz`` layout): the first ``train_per_class`` images of each class of the
official training set and the first ``test_per_class`` of each class of the official test set, in the
official order, ``uint8`` HWC; ``y_*`` ``int64``; ``test_lossless`` all true (every test image is an
original); ``class_names``. Before anything is read, each source file's MD5 is compared with the
value published for the official archive (:data:`OFFICIAL_MD5`); a different file is refused
unless ``any_source=True``. The ``.npz`` is written byte-for-byte reproducibly (stored members,
fixed timestamps), so the same source gives the same SHA-256, which is written beside it as
``<file>.sha256`` (``sha256sum -c`` reads it) and checked by :func:`check_file`.
"""

from __future__ import annotations

import hashlib
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..atomic import atomic_open, atomic_write_text
from .cifar import CIFAR10_DIR, CIFAR10_TRAIN, _folder, load_cifar10
from .dataset import DataError

DEFAULT_PATH = Path("data") / "cifar10_small.npz"
"""Where every example, reproduction and doc looks for the subset: relative to the working folder."""
TRAIN_PER_CLASS = 1500
TEST_PER_CLASS = 300
OFFICIAL_MD5 = {
    # published with the CIFAR-10 "python version" (the files of cifar-10-python.tar.gz,
    # MD5 c58f30108f718f92721af3b95e74349a)
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
    "batches.meta": "5ff9c542aee3614f3951f8cda6e48888",
}
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)


@dataclass(frozen=True)
class Prepared:
    path: Path
    sha256: str
    train: int
    test: int
    official: bool
    """Whether every source file had its official MD5."""


def file_digest(path: str | os.PathLike, algorithm: str = "sha256") -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def check_source(folder: str | os.PathLike) -> list[str]:
    """The source files of ``folder`` whose MD5 is not the official one (``[]``: all official)."""
    p = _folder(folder, CIFAR10_DIR, "test_batch", "CIFAR-10")
    return [name for name, md5 in OFFICIAL_MD5.items()
            if not (p / name).is_file() or file_digest(p / name, "md5") != md5]


def first_per_class(labels: np.ndarray, per_class: int, classes: int = 10) -> np.ndarray:
    """Indices of the first ``per_class`` images of each class, in the original order."""
    idx = [np.flatnonzero(labels == c)[:per_class] for c in range(classes)]
    short = [c for c, i in enumerate(idx) if len(i) < per_class]
    if short:
        raise DataError(f"class {short[0]} has only {len(idx[short[0]])} images, fewer than {per_class} "
                        f"per class")
    return np.sort(np.concatenate(idx))


def write_npz(path: str | os.PathLike, arrays: dict[str, np.ndarray]) -> None:
    """An ``.npz`` (uncompressed, fixed timestamps: the same arrays give the same bytes), atomically."""
    with atomic_open(path, "wb") as f, zipfile.ZipFile(f, "w", zipfile.ZIP_STORED) as zf:
        for name, a in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_TIME)
            info.external_attr = 0o644 << 16
            with zf.open(info, "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.ascontiguousarray(a), allow_pickle=False)


def sha256_file_of(path: str | os.PathLike) -> Path:
    return Path(f"{path}.sha256")


def prepare_cifar10(source: str | os.PathLike, out: str | os.PathLike = DEFAULT_PATH, *,
                    train_per_class: int = TRAIN_PER_CLASS, test_per_class: int = TEST_PER_CLASS,
                    any_source: bool = False) -> Prepared:
    """Write the subset of the CIFAR-10 batches in ``source`` to ``out`` and ``out.sha256``.

    Raises
    ------
    DataError
        ``source`` is not a CIFAR-10 python-version folder, a file is not the official one (unless
        ``any_source``), or a class has fewer images than asked for.
    """
    if train_per_class < 1 or test_per_class < 1:
        raise DataError("images per class must be positive")
    unofficial = check_source(source)
    if unofficial and not any_source:
        raise DataError(f"{source}: {', '.join(unofficial)} differ from the official CIFAR-10 python-version "
                        f"files (MD5); extract cifar-10-python.tar.gz again, or pass --any-source to build "
                        f"from these files anyway")
    train, test = load_cifar10(source)
    tr = first_per_class(train.labels, train_per_class)
    te = first_per_class(test.labels, test_per_class)
    names = np.array(train.class_names or [str(c) for c in range(10)])
    arrays = {
        "x_train": train.images[tr], "y_train": train.labels[tr].astype(np.int64),
        "x_test": test.images[te], "y_test": test.labels[te].astype(np.int64),
        "test_lossless": np.ones(len(te), np.bool_), "class_names": names,
    }
    out = Path(out)
    write_npz(out, arrays)
    digest = file_digest(out)
    atomic_write_text(sha256_file_of(out), f"{digest}  {out.name}\n")
    return Prepared(out, digest, len(tr), len(te), not unofficial)


def check_file(path: str | os.PathLike = DEFAULT_PATH) -> str:
    """The file's SHA-256 when it equals the one recorded in ``<path>.sha256``; else :class:`DataError`."""
    p, record = Path(path), sha256_file_of(path)
    if not p.is_file():
        raise DataError(f"{p}: no such data file (netmorph data prepare --from cifar-10-batches-py "
                        f"-o {p} makes it)")
    if not record.is_file():
        raise DataError(f"{record}: no recorded SHA-256 beside {p}")
    try:
        expected = record.read_text(encoding="ascii").split()[0].lower()
    except (OSError, UnicodeError, IndexError):
        raise DataError(f"{record}: not a SHA-256 record (sha256sum format)") from None
    digest = file_digest(p)
    if digest != expected:
        raise DataError(f"{p}: SHA-256 {digest} differs from the recorded {expected} ({record})")
    return digest


__all__ = ["CIFAR10_TRAIN", "DEFAULT_PATH", "OFFICIAL_MD5", "Prepared", "check_file", "check_source",
           "prepare_cifar10"]
