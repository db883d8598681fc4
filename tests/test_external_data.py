"""External data: read only from regular files inside the model's own folder."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import netmorph
from netmorph.onnx_io import OnnxFormatError, to_onnx
from netmorph.onnx_io.compare import proto_differences

F = TensorProto.FLOAT
W = np.arange(24, dtype=np.float32).reshape(4, 6) / 7


def _model(weight: np.ndarray = W) -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", F, ["N", weight.shape[0]])
    y = helper.make_tensor_value_info("y", F, ["N", weight.shape[1]])
    g = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], "ext", [x], [y],
        [numpy_helper.from_array(weight, "w")],
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def _with_location(folder: Path, location: str, **extra: str) -> Path:
    """A model in ``folder`` whose weight ``w`` points at ``location`` (written as given)."""
    m = _model()
    t = m.graph.initializer[0]
    t.ClearField("raw_data")
    t.data_location = TensorProto.EXTERNAL
    for k, v in {"location": location, "offset": "0", "length": str(W.nbytes), **extra}.items():
        e = t.external_data.add()
        e.key, e.value = k, v
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "model.onnx"
    path.write_bytes(m.SerializeToString())
    return path


def _refused(path: Path, match: str) -> None:
    with pytest.raises(OnnxFormatError, match=match) as err:
        netmorph.load(path)
    msg = str(err.value)
    assert "\n" not in msg and str(path) in msg and "'w'" in msg, msg


@pytest.fixture
def outside(tmp_path) -> Path:
    """A weight file that is *not* inside the model's folder."""
    p = tmp_path / "outside.bin"
    p.write_bytes(W.tobytes())
    return p


def test_legitimate_external_data_loads(tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    onnx.save(_model(), folder / "model.onnx", save_as_external_data=True, location="weights.bin",
              size_threshold=0)
    assert (folder / "weights.bin").exists()
    g = netmorph.load(folder / "model.onnx")
    np.testing.assert_array_equal(g.value("w").const.array, W)
    assert proto_differences(_model(), to_onnx(g)) == []


def test_external_data_in_a_subfolder_loads(tmp_path):
    path = _with_location(tmp_path / "m", "data/w.bin")
    (tmp_path / "m" / "data").mkdir()
    (tmp_path / "m" / "data" / "w.bin").write_bytes(W.tobytes())
    np.testing.assert_array_equal(netmorph.load(path).value("w").const.array, W)


def test_offsets_into_a_shared_file(tmp_path):
    path = _with_location(tmp_path / "m", "w.bin", offset="64")
    (tmp_path / "m" / "w.bin").write_bytes(bytes(64) + W.tobytes())
    np.testing.assert_array_equal(netmorph.load(path).value("w").const.array, W)


def test_model_in_a_symlinked_folder_still_loads(tmp_path):
    _with_location(tmp_path / "real", "w.bin")
    (tmp_path / "real" / "w.bin").write_bytes(W.tobytes())
    (tmp_path / "alias").symlink_to(tmp_path / "real", target_is_directory=True)
    np.testing.assert_array_equal(netmorph.load(tmp_path / "alias" / "model.onnx").value("w").const.array, W)


def test_parent_escape_is_refused(tmp_path, outside):
    _refused(_with_location(tmp_path / "m", "../outside.bin"), "leaves the model's folder")


def test_hidden_parent_escape_is_refused(tmp_path, outside):
    (tmp_path / "m" / "sub").mkdir(parents=True)
    _refused(_with_location(tmp_path / "m", "sub/../../outside.bin"), "leaves the model's folder")


def test_absolute_location_is_refused(tmp_path, outside):
    _refused(_with_location(tmp_path / "m", str(outside)), "absolute location")


@pytest.mark.parametrize("location", ["C:/x.bin", "sub\\w.bin", ""])
def test_non_plain_locations_are_refused(tmp_path, location):
    _refused(_with_location(tmp_path / "m", location), "not a plain relative path|empty location")


def test_symlinked_file_is_refused(tmp_path, outside):
    path = _with_location(tmp_path / "m", "w.bin")
    (tmp_path / "m" / "w.bin").symlink_to(outside)
    _refused(path, "symlink")


def test_symlink_inside_the_folder_is_refused_too(tmp_path):
    path = _with_location(tmp_path / "m", "w.bin")
    (tmp_path / "m" / "real.bin").write_bytes(W.tobytes())
    (tmp_path / "m" / "w.bin").symlink_to(tmp_path / "m" / "real.bin")
    _refused(path, "symlink")


def test_symlinked_folder_on_the_way_is_refused(tmp_path, outside):
    path = _with_location(tmp_path / "m", "sub/outside.bin")
    (tmp_path / "m" / "sub").symlink_to(tmp_path, target_is_directory=True)
    _refused(path, "symlink")


def test_hard_link_is_refused(tmp_path, outside):
    path = _with_location(tmp_path / "m", "w.bin")
    os.link(outside, tmp_path / "m" / "w.bin")
    _refused(path, "hard links")


def test_missing_file_is_refused(tmp_path):
    _refused(_with_location(tmp_path / "m", "nowhere.bin"), "not found")


def test_directory_as_location_is_refused(tmp_path):
    path = _with_location(tmp_path / "m", "d")
    (tmp_path / "m" / "d").mkdir()
    _refused(path, "not a regular file")


@pytest.mark.parametrize(
    ("extra", "match"),
    [({"offset": "8"}, "outside"), ({"length": "9999"}, "does not match its dims"),
     ({"offset": "x"}, "not integers")],
)
def test_bad_ranges_are_refused(tmp_path, extra, match):
    path = _with_location(tmp_path / "m", "w.bin", **extra)
    (tmp_path / "m" / "w.bin").write_bytes(W.tobytes())
    _refused(path, match)


def test_external_data_inside_a_subgraph_is_read(tmp_path):
    """A Constant inside an If branch whose value lives in external data."""
    big = np.linspace(0, 1, 512, dtype=np.float32)
    const = helper.make_node("Constant", [], ["c"], value=numpy_helper.from_array(big, "cval"))
    branch = helper.make_graph(
        [const, helper.make_node("Add", ["x", "c"], ["o"])], "b", [],
        [helper.make_tensor_value_info("o", F, [512])],
    )
    g = helper.make_graph(
        [helper.make_node("If", ["cond"], ["y"], then_branch=branch, else_branch=branch)], "sub",
        [helper.make_tensor_value_info("cond", TensorProto.BOOL, []),
         helper.make_tensor_value_info("x", F, [512])],
        [helper.make_tensor_value_info("y", F, [512])],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "c.bin").write_bytes(big.tobytes())
    stored = onnx.ModelProto()
    stored.CopyFrom(m)
    for attr in stored.graph.node[0].attribute:
        t = attr.g.node[0].attribute[0].t
        t.ClearField("raw_data")
        t.data_location = TensorProto.EXTERNAL
        for k, v in (("location", "c.bin"), ("offset", "0"), ("length", str(big.nbytes))):
            e = t.external_data.add()
            e.key, e.value = k, v
    (folder / "model.onnx").write_bytes(stored.SerializeToString())
    back = to_onnx(netmorph.load(folder / "model.onnx"))
    assert proto_differences(m, back) == []
    feeds = {"cond": np.array(True), "x": np.ones(512, np.float32)}
    out = ort.InferenceSession(back.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)
    np.testing.assert_array_equal(out[0], big + 1)


def test_netmorph_save_with_external_data_writes_a_side_file(tmp_path, rng):
    weight = rng.standard_normal((64, 32)).astype(np.float32)
    small = _model(weight)
    src = tmp_path / "src.onnx"
    onnx.save(small, src)
    g = netmorph.load(src)
    out = tmp_path / "out" / "model.onnx"
    netmorph.save(g, out, external_data=True)
    side = out.with_name("model.onnx.data")
    assert side.stat().st_size >= weight.nbytes
    raw = onnx.load(out, load_external_data=False)
    t = raw.graph.initializer[0]
    entries = {e.key: e.value for e in t.external_data}
    assert t.data_location == TensorProto.EXTERNAL and entries["location"] == "model.onnx.data"
    assert int(entries["offset"]) % 64 == 0
    assert out.stat().st_size < weight.nbytes  # the weights are not inline
    reloaded = netmorph.load(out)
    np.testing.assert_array_equal(reloaded.value("w").const.array, weight)
    # ONNX Runtime reads the pair from the path as well, and agrees bit for bit.
    x = rng.standard_normal((3, 64)).astype(np.float32)
    via_path = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    original = ort.InferenceSession(small.SerializeToString(), providers=["CPUExecutionProvider"])
    np.testing.assert_array_equal(via_path, original.run(None, {"x": x})[0])


def test_save_external_replaces_an_old_side_file_atomically(tmp_path, rng):
    out = tmp_path / "model.onnx"
    for seed in (1, 2):
        weight = np.random.default_rng(seed).standard_normal((32, 32)).astype(np.float32)
        src = tmp_path / f"src{seed}.onnx"
        onnx.save(_model(weight), src)
        netmorph.save(netmorph.load(src), out, external_data=True)
        np.testing.assert_array_equal(netmorph.load(out).value("w").const.array, weight)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx", "model.onnx.data", "src1.onnx",
                                                         "src2.onnx"]
