"""ONNX Runtime sessions of an IR graph that read its weights in place, and loads that hold each
external weight once (as a numpy array over the bytes read)."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

import netmorph
from netmorph.onnx_io import graph_session, to_onnx
from netmorph.onnx_io.session import graph_model_bytes

F = TensorProto.FLOAT


def _model(rng) -> onnx.ModelProto:
    """x @ W (50 KiB, handed over) + b (800 B, inline), then Where on a bool mask (inline)."""
    w = rng.standard_normal((64, 200)).astype(np.float32)
    b = rng.standard_normal(200).astype(np.float32)
    mask = rng.random(200) > 0.5
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"], name="mm"),
             helper.make_node("Add", ["h", "b"], ["hb"], name="add"),
             helper.make_node("Where", ["mask", "hb", "b"], ["y"], name="where")]
    g = helper.make_graph(nodes, "s", [helper.make_tensor_value_info("x", F, ["N", 64])],
                          [helper.make_tensor_value_info("y", F, ["N", 200])],
                          [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b"),
                           numpy_helper.from_array(mask, "mask")])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def test_session_matches_a_session_of_the_whole_model_and_leaves_the_weights_out(rng):
    m = _model(rng)
    g = netmorph.onnx_io.from_onnx(m)
    x = rng.standard_normal((3, 64)).astype(np.float32)
    ref = ort.InferenceSession(to_onnx(g).SerializeToString(), providers=["CPUExecutionProvider"])
    want_y, want_h = ref.run(["y"], {"x": x})[0], (x @ numpy_helper.to_array(m.graph.initializer[0]))
    with graph_session(g, extra_outputs=["h"]) as s:
        y, h = s.run(["y", "h"], {"x": x})
    np.testing.assert_array_equal(y, want_y)
    np.testing.assert_allclose(h, want_h, rtol=1e-5, atol=1e-5)
    data, names, arrays = graph_model_bytes(g)
    assert names == ["w"] and len(data) < 64 * 200 * 4 // 4  # the big weight is not in the bytes
    # the loaded tensor was decoded for the session only, not kept in the graph
    assert not g.value("w").const.materialised
    assert arrays[0].base is not None or not arrays[0].flags.writeable


def test_session_reads_a_materialised_weight_without_copying_it(rng):
    g = netmorph.onnx_io.from_onnx(_model(rng))
    w = g.value("w").const.array  # materialised: the session must read this very buffer
    _, _, arrays = graph_model_bytes(g)
    assert np.shares_memory(arrays[0], w)


def test_load_keeps_external_weights_as_arrays_over_the_bytes_read(tmp_path, rng):
    m = _model(rng)
    want_w, want_mask = (numpy_helper.to_array(m.graph.initializer[i]) for i in (0, 2))
    path = tmp_path / "m.onnx"
    onnx.save(m, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location="m.data",
              size_threshold=1024)
    g = netmorph.load(path)
    w = g.value("w").const
    assert w.materialised and not w.array.flags.writeable  # read once, into the array it is kept as
    np.testing.assert_array_equal(w.array, want_w)
    np.testing.assert_array_equal(g.value("mask").const.array, want_mask)
    # and the graph still saves (inline and as external data) and runs the same
    x = rng.standard_normal((2, 64)).astype(np.float32)
    want = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    for ext in (False, True):
        out = netmorph.save(g, tmp_path / f"c{int(ext)}.onnx", external_data=ext)
        got = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
        np.testing.assert_array_equal(got, want)
