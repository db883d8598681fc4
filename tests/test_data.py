"""Data sets: synthetic task, the shared .npz layout, official CIFAR batch folders, data specs."""

from __future__ import annotations

import pickle
import struct
from pathlib import Path

import numpy as np
import pytest

from netmorph.data import (
    DataError,
    Dataset,
    DataSpec,
    channel_stats,
    load_cifar10,
    load_cifar100,
    load_data,
    load_npz,
    make_synthetic,
    parse_data_spec,
)
from netmorph.errors import NetmorphError


# -- helpers writing files in the official layouts ---------------------------------------------
def official_rows(images_nhwc: np.ndarray) -> np.ndarray:
    """CIFAR rows: 1024 red, 1024 green, 1024 blue values per image."""
    return images_nhwc.transpose(0, 3, 1, 2).reshape(len(images_nhwc), 3072).copy()


def py2_pickle(d: dict) -> bytes:
    """The bytes Python 2's cPickle (protocol 2) writes for a CIFAR batch dict: ``str`` keys as
    BINSTRING opcodes, the numpy 1.x array reconstruction, raw data as one string."""

    def s(b: bytes) -> bytes:
        return (b"U" + bytes([len(b)]) + b) if len(b) < 256 else (b"T" + struct.pack("<i", len(b)) + b)

    def i(n: int) -> bytes:
        return b"K" + bytes([n]) if 0 <= n < 256 else b"J" + struct.pack("<i", n)

    def obj(v) -> bytes:
        if isinstance(v, bytes):
            return s(v)
        if isinstance(v, int):
            return i(v)
        if isinstance(v, list):
            return b"](" + b"".join(obj(x) for x in v) + b"e"
        dtype = (b"cnumpy\ndtype\n" + s(b"u1") + i(0) + i(1) + b"\x87R(" + i(3) + s(b"|") + b"NNN"
                 + b"J\xff\xff\xff\xffJ\xff\xff\xff\xff" + i(0) + b"tb")
        head = b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n" + i(0) + b"\x85" + s(b"b")
        shape = i(v.shape[0]) + i(v.shape[1]) + b"\x86"
        return head + b"\x87R(" + i(1) + shape + dtype + b"\x89" + s(v.tobytes()) + b"tb"

    return b"\x80\x02}(" + b"".join(s(k) + obj(v) for k, v in d.items()) + b"u."


def write_batch(path: Path, images: np.ndarray, labels: np.ndarray, label_key: str = "labels",
                python2: bool = False) -> None:
    # like the official files: bytes keys, a uint8 array, a list of int labels
    d = {b"batch_label": b"testing batch", label_key.encode(): [int(v) for v in labels],
         b"data": official_rows(images), b"filenames": [b"x.png"] * len(labels)}
    if label_key == "fine_labels":
        d[b"coarse_labels"] = [int(v) // 5 for v in labels]
    path.write_bytes(py2_pickle(d) if python2 else pickle.dumps(d, protocol=2))


def make_cifar10_folder(root: Path, rng: np.random.Generator, per_batch: int = 6, python2: bool = False):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    xs, ys = [], []
    for i in range(1, 6):
        x = rng.integers(0, 256, (per_batch, 32, 32, 3), dtype=np.uint8)
        y = rng.integers(0, 10, per_batch)
        write_batch(folder / f"data_batch_{i}", x, y, python2=python2)
        xs.append(x)
        ys.append(y)
    xt = rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    yt = np.array([0, 9, 3, 3])
    write_batch(folder / "test_batch", xt, yt, python2=python2)
    names = [n.encode() for n in "airplane automobile bird cat deer dog frog horse ship truck".split()]
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": names, b"num_vis": 3072}, protocol=2))
    return folder, np.concatenate(xs), np.concatenate(ys), xt, yt


class Boom:
    """A pickle payload that would run a shell command when unpickled by plain pickle."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


# -- synthetic ----------------------------------------------------------------------------------
def test_synthetic_is_seeded_balanced_and_shaped():
    a = make_synthetic(200, 50, num_classes=5, size=12, seed=1)
    b = make_synthetic(200, 50, num_classes=5, size=12, seed=1)
    c = make_synthetic(200, 50, num_classes=5, size=12, seed=2)
    assert a.train.images.shape == (200, 12, 12, 3) and a.train.images.dtype == np.uint8
    assert a.train.layout == "NHWC" and a.train.image_shape == (3, 12, 12)
    assert np.array_equal(a.train.images, b.train.images) and np.array_equal(a.test.labels, b.test.labels)
    assert not np.array_equal(a.train.images, c.train.images)
    assert np.bincount(a.train.labels).tolist() == [40] * 5
    assert a.test.mean == a.train.mean and a.test.std == a.train.std  # test uses training statistics
    mean, std = channel_stats(a.train.images, "NHWC")
    flat = a.train.images.reshape(-1, 3)
    assert np.allclose(mean, flat.mean(0)) and np.allclose(std, flat.std(0))


def test_synthetic_classes_carry_their_pattern():
    s = make_synthetic(400, 40, num_classes=4, size=16, seed=0)
    x = s.train.images.astype(float).mean(-1)  # (N, H, W) grey
    rows, cols = x.mean(2).std(1), x.mean(1).std(1)  # variation across rows / across columns
    horizontal = s.train.labels % 2 == 0  # even classes: stripes across y
    assert (x.std(axis=(1, 2)) > 10).all()  # real texture, not flat images
    assert np.mean((rows > cols) == horizontal) > 0.95


def test_synthetic_rejects_bad_sizes():
    with pytest.raises(DataError, match="synthetic"):
        make_synthetic(0)


# -- Dataset ------------------------------------------------------------------------------------
def test_dataset_validates_and_subsets(rng):
    x = rng.integers(0, 256, (10, 4, 4, 3), dtype=np.uint8)
    d = Dataset.from_arrays(x, np.arange(10) % 3, 3, lossless=np.arange(10) < 5, name="toy")
    sub = d.subset(slice(2, 6))
    assert len(sub) == 4 and sub.mean == d.mean and sub.lossless.tolist() == [True, True, True, False]
    assert np.array_equal(d.subset(np.array([9, 0])).images, x[[9, 0]])
    with pytest.raises(DataError, match=r"toy: labels must lie in \[0, 3\)"):
        Dataset.from_arrays(x, np.arange(10), 3, name="toy")
    with pytest.raises(DataError, match="uint8 NHWC or float32 NCHW"):
        Dataset.from_arrays(x.astype(np.int16), np.zeros(10, int), 2)
    f = Dataset.from_arrays(rng.normal(size=(6, 2, 5, 5)).astype(np.float32), np.zeros(6, int), 2)
    assert f.layout == "NCHW" and f.image_shape == (2, 5, 5) and f.channels == 2


# -- npz ------------------------------------------------------------------------------------------
def write_npz(path: Path, rng, **override):
    arrays = {
        "x_train": rng.integers(0, 256, (20, 8, 8, 3), dtype=np.uint8), "y_train": np.arange(20) % 4,
        "x_test": rng.integers(0, 256, (8, 8, 8, 3), dtype=np.uint8), "y_test": np.arange(8) % 4,
        "test_lossless": np.arange(8) < 3, "class_names": np.array(["a", "b", "c", "d"]),
    }
    arrays.update(override)
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
    return arrays


def test_npz_in_shared_layout(tmp_path, rng):
    arrays = write_npz(tmp_path / "d.npz", rng)
    train, test = load_npz(tmp_path / "d.npz")
    assert np.array_equal(train.images, arrays["x_train"]) and np.array_equal(test.labels, arrays["y_test"])
    assert train.num_classes == 4 and test.class_names == ("a", "b", "c", "d")
    assert test.lossless.tolist() == arrays["test_lossless"].tolist() and train.lossless is None
    assert np.allclose(train.mean, arrays["x_train"].reshape(-1, 3).mean(0)) and test.mean == train.mean
    via_spec = load_data(f"npz:{tmp_path / 'd.npz'}")
    assert np.array_equal(via_spec.train.images, train.images)


@pytest.mark.parametrize("override, message", [
    ({"y_test": None}, "missing array.*y_test"),
    ({"x_train": np.zeros((20, 8, 8, 3), np.int32)}, "x_train must be uint8"),
    ({"y_train": np.arange(19)}, "y_train must be 20 integer labels"),
    ({"test_lossless": np.ones(8, np.int8)}, "test_lossless must be a bool"),
    ({"class_names": np.array([{"a": 1}], dtype=object)}, "not a readable .npz"),
])
def test_npz_errors_name_file_and_array(tmp_path, rng, override, message):
    write_npz(tmp_path / "bad.npz", rng, **override)
    with pytest.raises(DataError, match=message) as e:
        load_npz(tmp_path / "bad.npz")
    assert "bad.npz" in str(e.value) and isinstance(e.value, NetmorphError)


def test_npz_not_a_zip(tmp_path):
    (tmp_path / "junk.npz").write_bytes(b"not a zip file")
    with pytest.raises(DataError, match="junk.npz: not a readable .npz"):
        load_npz(tmp_path / "junk.npz")
    with pytest.raises(DataError, match="no such data file"):
        load_npz(tmp_path / "absent.npz")


# -- CIFAR batch folders ---------------------------------------------------------------------
def test_cifar10_folder_roundtrip(tmp_path, rng):
    folder, x, y, xt, yt = make_cifar10_folder(tmp_path, rng)
    for path in (folder, tmp_path):  # the folder itself or its parent
        train, test = load_cifar10(path)
        assert np.array_equal(train.images, x) and np.array_equal(train.labels, y)
        assert np.array_equal(test.images, xt) and test.labels.tolist() == yt.tolist()
        assert train.num_classes == 10 and train.class_names[-1] == "truck"
    assert np.allclose(train.mean, x.reshape(-1, 3).mean(0))
    assert load_data(f"cifar10:{tmp_path}").train.images.shape == (30, 32, 32, 3)


def test_cifar10_python2_pickles(tmp_path, rng):
    """The byte format of the official files (written by Python 2 cPickle with numpy 1.x)."""
    folder, x, y, xt, yt = make_cifar10_folder(tmp_path, rng, per_batch=3, python2=True)
    assert (folder / "test_batch").read_bytes().startswith(b"\x80\x02}(U\x0bbatch_label")
    train, test = load_cifar10(folder)
    assert np.array_equal(train.images, x) and np.array_equal(test.images, xt)
    assert train.labels.tolist() == y.tolist()


def test_cifar100_folder(tmp_path, rng):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    x = rng.integers(0, 256, (7, 32, 32, 3), dtype=np.uint8)
    y = np.array([0, 99, 5, 42, 42, 7, 1])
    write_batch(folder / "train", x, y, "fine_labels")
    write_batch(folder / "test", x[:3], y[:3], "fine_labels")
    names = [f"c{i}".encode() for i in range(100)]
    meta = {b"fine_label_names": names, b"coarse_label_names": []}
    (folder / "meta").write_bytes(pickle.dumps(meta, protocol=2))
    train, test = load_cifar100(tmp_path)
    assert train.num_classes == 100 and train.labels.tolist() == y.tolist()
    assert np.array_equal(test.images, x[:3]) and train.class_names[99] == "c99"


def test_cifar_refuses_code_in_pickles(tmp_path, rng):
    folder, *_ = make_cifar10_folder(tmp_path, rng, per_batch=2)
    marker = tmp_path / "pwned"
    (folder / "data_batch_3").write_bytes(pickle.dumps({b"data": Boom(marker)}, protocol=2))
    with pytest.raises(DataError, match="data_batch_3: not a CIFAR python batch file.*refusing.*system"):
        load_cifar10(folder)
    assert not marker.exists()


def test_cifar_folder_errors(tmp_path, rng):
    with pytest.raises(DataError, match="no such CIFAR-10 folder"):
        load_cifar10(tmp_path / "nowhere")
    with pytest.raises(DataError, match="not a CIFAR-100 python-version folder"):
        load_cifar100(tmp_path)
    folder, *_ = make_cifar10_folder(tmp_path, rng, per_batch=2)
    (folder / "data_batch_5").unlink()
    with pytest.raises(DataError, match="data_batch_5: missing batch file"):
        load_cifar10(folder)
    bad = {b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}
    (folder / "data_batch_5").write_bytes(pickle.dumps(bad))
    with pytest.raises(DataError, match=r"'data' must be uint8 \(N, 3072\)"):
        load_cifar10(folder)


# -- specs ----------------------------------------------------------------------------------------
def test_parse_data_spec():
    assert parse_data_spec("synthetic") == DataSpec("synthetic")
    assert parse_data_spec("synthetic:300") == DataSpec("synthetic", size=300)
    assert parse_data_spec("cifar10:/d/c10") == DataSpec("cifar10", path="/d/c10")
    assert parse_data_spec("CIFAR100:/d/x:y") == DataSpec("cifar100", path="/d/x:y")
    assert parse_data_spec("npz:a.npz").path == "a.npz"
    assert str(parse_data_spec("synthetic:5")) == "synthetic:5"
    assert len(load_data("synthetic:30").train) == 30


@pytest.mark.parametrize("spec, message", [
    ("imagenet:/x", "unknown kind 'imagenet'"),
    ("cifar10", "cifar10 needs a path"),
    ("npz:", "npz needs a path"),
    ("synthetic:0", "N must be a positive integer"),
    ("synthetic:many", "N must be a positive integer"),
])
def test_parse_data_spec_errors(spec, message):
    with pytest.raises(DataError, match=message):
        parse_data_spec(spec)
