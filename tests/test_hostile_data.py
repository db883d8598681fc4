"""Hostile data files: CIFAR pickles that would expand to gigabytes, npz zip bombs, empty and float
labels. Each is refused (or read) with peak memory measured in a subprocess under a stated bound."""

from __future__ import annotations

import io
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hostile_util import MiB, check_error, invoke, one_line, run_cli

import netmorph
from netmorph.data import DataError
from netmorph.data.cifar import CIFAR10_TRAIN, load_cifar10
from netmorph.data.npz import load_npz

MARGIN = 100 * MiB
"""Peak RSS a hostile data file may add to ``netmorph train``'s own (the ``baseline`` fixture: the
same command refusing a 200-byte file; PyTorch's import alone is 350-650 MiB, by build). Every file
below would take far more than this if it were expanded (the smallest, the npz bomb, 120 MiB)."""
AS_LIMIT = 6 << 30
"""Address-space cap of the child, so that a regression fails the test instead of the machine."""


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("small") / "small.onnx"
    netmorph.save(netmorph.build("plain", levels=3, blocks=2, channels=(4, 4, 4), classes=10,
                                 input_shape=(3, 32, 32)), path)
    return path


@pytest.fixture(scope="module")
def baseline(small, tmp_path_factory) -> int:
    """Peak RSS of ``netmorph train`` refusing a tiny CIFAR batch (float labels) in the same way."""
    tmp = tmp_path_factory.mktemp("baseline")
    blob = pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [1.5, 2.5]}, protocol=2)
    root = _cifar_folder(tmp / "c", first_batch=blob)
    r = run_cli("train", small, "--data", f"cifar10:{root}", "--epochs", "1", "-o", tmp / "t.onnx",
                mem_limit=AS_LIMIT)
    one_line(r.stderr, 2, r.code, contains="must hold integers")
    return r.max_rss


def _cifar_folder(root: Path, first_batch: bytes | None = None, n: int = 4) -> Path:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i, name in enumerate((*CIFAR10_TRAIN, "test_batch")):
        d = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"labels": [int(v) for v in range(n)]}
        blob = pickle.dumps(d, protocol=2)
        (folder / name).write_bytes(first_batch if (i == 0 and first_batch is not None) else blob)
    return root


def _refused_in_child(small: Path, tmp_path: Path, spec: str, contains: str, baseline: int,
                      env: dict | None = None):
    r = run_cli("train", small, "--data", spec, "--epochs", "1", "-o", tmp_path / "t.onnx",
                mem_limit=AS_LIMIT, env=env)
    one_line(r.stderr, 2, r.code, contains=contains)
    assert r.max_rss < baseline + MARGIN, f"{r.max_rss / MiB:.0f} MiB (baseline {baseline / MiB:.0f} MiB)"
    assert not (tmp_path / "t.onnx").exists()
    return r


def test_memo_repeated_list_is_not_expanded(small, tmp_path, baseline):
    """About 600 KB of pickle; np.asarray of it would need 7 GB."""
    row = [0] * 3072
    blob = pickle.dumps({b"data": [row] * 300_000, b"labels": [0] * 300_000}, protocol=2)
    assert len(blob) < 2 * MiB
    root = _cifar_folder(tmp_path / "c", first_batch=blob)
    _refused_in_child(small, tmp_path, f"cifar10:{root}", "must be a uint8 array", baseline)


def test_tiny_pickle_allocating_a_huge_array_is_refused(small, tmp_path, baseline):
    """An 84-byte-class pickle calling numpy.ndarray((10**6, 3072)) (3 GB)."""
    blob = (b"\x80\x02}(U\x04datacnumpy\nndarray\nJ@B\x0f\x00M\x00\x0c\x86cnumpy\ndtype\nU\x02u1\x85R"
            b"\x86RU\x06labels]u.")
    assert len(blob) < 100
    root = _cifar_folder(tmp_path / "c", first_batch=blob)
    _refused_in_child(small, tmp_path, f"cifar10:{root}", "exceeds what the file can hold", baseline)
    with pytest.raises(DataError, match="exceeds"):
        load_cifar10(root)


def test_object_arrays_and_code_are_refused(tmp_path):
    blob = pickle.dumps({b"data": np.array([1, "x"], dtype=object), b"labels": [0]}, protocol=2)
    with pytest.raises(DataError, match="object"):
        load_cifar10(_cifar_folder(tmp_path / "c", first_batch=blob))


def test_float_labels_are_refused_not_truncated(tmp_path):
    blob = pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [1.7, 2.2]}, protocol=2)
    with pytest.raises(DataError, match="must hold integers, found float"):
        load_cifar10(_cifar_folder(tmp_path / "c", first_batch=blob))


def test_an_empty_batch_is_read(tmp_path):
    blob = pickle.dumps({b"data": np.zeros((0, 3072), np.uint8), b"labels": []}, protocol=2)
    train, test = load_cifar10(_cifar_folder(tmp_path / "c", first_batch=blob, n=3))
    assert len(train) == 4 * 3 and len(test) == 3


def _npz_bomb(path: Path, declared_rows: int) -> None:
    """x_train: zeros (rows, 32, 32, 3) uint8, deflated (about 1000:1)."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        small = {"y_train": np.zeros(declared_rows, np.int64), "x_test": np.zeros((2, 32, 32, 3), np.uint8),
                 "y_test": np.zeros(2, np.int64)}
        for key, arr in small.items():
            buf = io.BytesIO()
            np.save(buf, arr)
            zf.writestr(f"{key}.npy", buf.getvalue())
        with zf.open("x_train.npy", "w", force_zip64=True) as f:
            header = io.BytesIO()
            np.lib.format.write_array_header_1_0(
                header, {"descr": "|u1", "fortran_order": False, "shape": (declared_rows, 32, 32, 3)})
            f.write(header.getvalue())
            chunk = bytes(1 << 22)
            for _ in range(declared_rows * 3072 // len(chunk)):
                f.write(chunk)


def test_npz_zip_bomb_is_refused_before_decompression(small, tmp_path, baseline):
    bomb = tmp_path / "bomb.npz"
    _npz_bomb(bomb, 40_960)  # 120 MiB of zeros in about 130 KB
    assert bomb.stat().st_size < 2 * MiB
    _refused_in_child(small, tmp_path, f"npz:{bomb}", "above the data limit", baseline,
                      env={"NETMORPH_MAX_DATA_BYTES": str(64 * MiB)})


def test_npz_member_declaring_more_than_it_holds(tmp_path):
    path = tmp_path / "lie.npz"
    buf = io.BytesIO()
    np.save(buf, np.zeros((2, 32, 32, 3), np.uint8))
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("x_train.npy", buf.getvalue().replace(b"'shape': (2,", b"'shape': (9,"))
        for key, arr in (("y_train", np.zeros(2, np.int64)), ("x_test", np.zeros((2, 32, 32, 3), np.uint8)),
                         ("y_test", np.zeros(2, np.int64))):
            b = io.BytesIO()
            np.save(b, arr)
            zf.writestr(f"{key}.npy", b.getvalue())
    with pytest.raises(DataError, match="declares .* bytes but the member holds"):
        load_npz(path)
    check_error(invoke("train", tmp_path / "none.onnx", "--data", f"npz:{path}", "-o", tmp_path / "t.onnx"))
