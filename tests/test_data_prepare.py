"""``netmorph data prepare / check``: the CIFAR-10 subset from batches in the official pickle format."""

from __future__ import annotations

import hashlib
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_data import write_batch

from netmorph.data import load_npz
from netmorph.data.prepare import OFFICIAL_MD5, check_file, first_per_class, prepare_cifar10

NAMES = "airplane automobile bird cat deer dog frog horse ship truck".split()


def fake_cifar10(root: Path, train_per_class: int = 4, test_per_class: int = 2, seed: int = 0) -> Path:
    """A ``cifar-10-batches-py`` folder in the official format: 5 training batches, a test batch,
    ``batches.meta``; labels shuffled so "first per class" is not "first N"."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    y = rng.permutation(np.repeat(np.arange(10), train_per_class + 1))
    x = rng.integers(0, 256, (len(y), 32, 32, 3), dtype=np.uint8)
    for i, part in enumerate(np.array_split(np.arange(len(y)), 5), start=1):
        write_batch(folder / f"data_batch_{i}", x[part], y[part])
    yt = rng.permutation(np.repeat(np.arange(10), test_per_class + 1))
    write_batch(folder / "test_batch", rng.integers(0, 256, (len(yt), 32, 32, 3), dtype=np.uint8), yt)
    meta = {b"label_names": [n.encode() for n in NAMES], b"num_vis": 3072}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    return folder


def netmorph(*args, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "netmorph.cli.main", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


def test_first_per_class_keeps_official_order():
    y = np.array([3, 1, 3, 0, 1, 3, 2, 0, 2, 1, 0, 2])
    idx = first_per_class(y, 2, classes=4)
    assert idx.tolist() == [0, 1, 2, 3, 4, 6, 7, 8]
    with pytest.raises(Exception, match="class 0 has only 3 images"):
        first_per_class(y, 4, classes=4)


def test_prepare_writes_subset_reproducibly_and_records_sha256(tmp_path):
    src = fake_cifar10(tmp_path / "dl")
    with pytest.raises(Exception, match="differ from the official CIFAR-10"):
        prepare_cifar10(src, tmp_path / "a.npz", train_per_class=4, test_per_class=2)
    assert not (tmp_path / "a.npz").exists()
    r = prepare_cifar10(src.parent, tmp_path / "a.npz", train_per_class=4, test_per_class=2, any_source=True)
    assert (r.train, r.test, r.official) == (40, 20, False)
    assert r.sha256 == hashlib.sha256((tmp_path / "a.npz").read_bytes()).hexdigest()
    assert (tmp_path / "a.npz.sha256").read_text() == f"{r.sha256}  a.npz\n"
    again = prepare_cifar10(src, tmp_path / "b.npz", train_per_class=4, test_per_class=2, any_source=True)
    assert again.sha256 == r.sha256                       # byte-for-byte reproducible
    assert check_file(tmp_path / "a.npz") == r.sha256

    train, test = load_npz(tmp_path / "a.npz")
    assert np.bincount(train.labels).tolist() == [4] * 10 and np.bincount(test.labels).tolist() == [2] * 10
    assert train.images.shape == (40, 32, 32, 3) and train.images.dtype == np.uint8
    assert test.lossless.all() and train.class_names == tuple(NAMES)
    from netmorph.data import load_cifar10

    full, _ = load_cifar10(src)                          # the subset is the first of each class, in order
    keep = first_per_class(full.labels, 4)
    assert np.array_equal(train.images, full.images[keep]) and np.array_equal(train.labels, full.labels[keep])

    with open(tmp_path / "a.npz", "r+b") as f:           # one flipped byte is caught
        f.seek(-1, 2)
        last = f.read(1)
        f.seek(-1, 2)
        f.write(bytes([last[0] ^ 1]))
    with pytest.raises(Exception, match="differs from the recorded"):
        check_file(tmp_path / "a.npz")


def test_official_md5s_are_the_published_ones():
    assert set(OFFICIAL_MD5) == {f"data_batch_{i}" for i in range(1, 6)} | {"test_batch", "batches.meta"}
    assert all(len(v) == 32 and int(v, 16) >= 0 for v in OFFICIAL_MD5.values())


def test_cli_prepare_default_location_and_check(tmp_path):
    src = fake_cifar10(tmp_path / "dl", train_per_class=3, test_per_class=1)
    work = tmp_path / "work"
    work.mkdir()
    r = netmorph("data", "prepare", "--from", src, "--train-per-class", 3, "--test-per-class", 1, cwd=work)
    assert r.returncode == 2 and "--any-source" in r.stderr and "Traceback" not in r.stderr
    assert not (work / "data").exists() or not any((work / "data").iterdir())
    r = netmorph("data", "prepare", "--from", src, "--train-per-class", 3, "--test-per-class", 1,
                 "--any-source", cwd=work)
    assert r.returncode == 0, r.stderr
    out = work / "data" / "cifar10_small.npz"
    assert out.is_file() and "30 training and 10 test images" in r.stdout
    r = netmorph("data", "check", cwd=work)
    assert r.returncode == 0 and "as recorded" in r.stdout, r.stderr
    (work / "data" / "cifar10_small.npz.sha256").write_text("0" * 64 + "  cifar10_small.npz\n")
    r = netmorph("data", "check", cwd=work)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "differs from the recorded" in r.stderr
    r = netmorph("data", "prepare", "--from", tmp_path / "nowhere", cwd=work)
    assert r.returncode == 2 and "no such CIFAR-10 folder" in r.stderr
