"""Verification of an IR graph reads its weights in place: no ModelProto copy of the weights, probe
copies equal to the inline ones, one digest whichever way a weight is held, a bounded float64 probe."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from netmorph.onnx_io import from_onnx, to_onnx
from netmorph.verification import cache, verify_models
from netmorph.verification.calibrate import (
    as_float64,
    as_float64_weights,
    ulp_perturbed,
    ulp_perturbed_weights,
)
from netmorph.verification.models import load_model
from netmorph.verification.session import make_session


def mlp(seed: int = 0) -> onnx.ModelProto:
    """x (N, 16) -> MatMul 16x64 -> Add -> Tanh -> MatMul 64x8 -> Softmax; two small constants."""
    rng = np.random.default_rng(seed)
    inits = [numpy_helper.from_array(rng.standard_normal((16, 64)).astype(np.float32), "w1"),
             numpy_helper.from_array(rng.standard_normal(64).astype(np.float32) * 0.1, "b1"),  # 256 B: inline
             numpy_helper.from_array(rng.standard_normal((64, 8)).astype(np.float32), "w2"),
             numpy_helper.from_array(np.array([1, -1], np.int64), "shape")]
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"]), helper.make_node("Add", ["h", "b1"], ["a"]),
             helper.make_node("Tanh", ["a"], ["t"]), helper.make_node("MatMul", ["t", "w2"], ["z"]),
             helper.make_node("Reshape", ["z", "shape"], ["r"]), helper.make_node("Softmax", ["r"], ["y"])]
    g = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


@pytest.fixture()
def graph():
    return from_onnx(mlp())


def _inline(proto: onnx.ModelProto, weights) -> dict[str, np.ndarray]:
    """Every initializer's values, the in-memory ones from ``weights``."""
    return {t.name: np.asarray(weights[t.name]) if t.name in weights else numpy_helper.to_array(t)
            for t in proto.graph.initializer}


def test_a_graphs_large_weights_go_to_onnx_runtime_as_its_own_buffers(graph):
    params = {v.name: v.const.array for v in graph.parameters}  # as after netmorph.load or a pass
    m = load_model(graph, "a")
    assert set(m.weights) == {"w1", "w2"}  # b1 (256 bytes) and the shape stay inline
    for name, arr in m.weights.items():
        assert np.shares_memory(arr, params[name])
        header = next(t for t in m.proto.graph.initializer if t.name == name)
        assert header.data_location == TensorProto.EXTERNAL and not header.raw_data
    assert m.proto.ByteSize() < 1024  # the model handed over holds no large weight
    x = np.random.default_rng(1).standard_normal((3, 16)).astype(np.float32)
    got = make_session(m, optimize=False).run(["y"], {"x": x})[0]
    inline = make_session(load_model(to_onnx(graph), "b"), optimize=False).run(["y"], {"x": x})[0]
    np.testing.assert_array_equal(got, inline)


def test_probe_copies_of_in_memory_weights_equal_the_inline_models_copies(graph):
    m = load_model(graph, "a")
    full = to_onnx(graph)
    moved, w = ulp_perturbed_weights(m.proto, 3, m.weights)
    expected = {t.name: numpy_helper.to_array(t) for t in ulp_perturbed(full, 3).graph.initializer}
    got = _inline(moved, w)
    for name, arr in expected.items():
        np.testing.assert_array_equal(got[name], arr)
    assert not np.array_equal(got["w1"], numpy_helper.to_array(full.graph.initializer[0]))  # it moved
    assert got["shape"].tolist() == [1, -1]  # a shape is never moved
    assert m.weights["w1"] is not w["w1"]  # the parent's buffer is untouched
    wide, ww = as_float64_weights(m.proto, m.weights)
    expected = {t.name: numpy_helper.to_array(t) for t in as_float64(full).graph.initializer}
    got = _inline(wide, ww)
    for name, arr in expected.items():
        assert got[name].dtype == arr.dtype
        np.testing.assert_array_equal(got[name], arr)
    x = np.random.default_rng(2).standard_normal((2, 16))
    from netmorph.verification.models import LoadedModel

    y = make_session(LoadedModel(wide, "wide", weights=ww), optimize=False).run(["y"], {"x": x})[0]
    assert y.dtype == np.float64 and np.allclose(y.sum(axis=1), 1.0)


def test_the_digest_is_the_same_inline_or_in_memory_and_changes_with_a_weight(graph):
    m = load_model(graph, "a")
    assert cache.model_digest(m.proto, m.weights) == cache.model_digest(to_onnx(graph))
    other = load_model(from_onnx(mlp(seed=1)), "a")
    assert cache.model_digest(other.proto, other.weights) != cache.model_digest(m.proto, m.weights)
    w = dict(m.weights)
    w["w2"] = w["w2"].copy()
    w["w2"].flat[5] += 1e-3
    assert cache.model_digest(m.proto, w) != cache.model_digest(m.proto, m.weights)


def test_the_float64_probe_is_skipped_with_its_reason_past_its_memory_limit(graph, monkeypatch):
    cache.clear()
    full = verify_models(graph, graph.clone())
    assert full.ok and "float64" in full.calibration["probes"]
    assert set(full.extra["seconds"]) >= {"load", "reference", "calibration", "probe float64"}
    cache.clear()
    monkeypatch.setenv("NETMORPH_MAX_FLOAT64_PROBE_BYTES", "1000")
    capped = verify_models(graph, graph.clone())
    assert capped.ok and "float64" not in capped.calibration["probes"]
    assert "NETMORPH_MAX_FLOAT64_PROBE_BYTES" in capped.calibration["skipped"]["float64"]
    cache.clear()


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_the_ulp_step_on_bit_patterns_is_nextafter(dtype):
    """The ulp probe moves each weight by integer steps of its bit pattern: bit-identical to
    ``nextafter(w, +-inf)`` with the same seeded draws, zeros and subnormals included."""
    from netmorph.verification.calibrate import _nudged

    fi = np.finfo(dtype)
    special = np.array([0.0, -0.0, fi.smallest_subnormal, -fi.smallest_subnormal, fi.tiny, -fi.tiny, 1.0,
                        -1.0,
                        fi.max / 4, -fi.max / 4], dtype)
    w = np.concatenate([np.repeat(special, 20), np.random.default_rng(1).standard_normal(800).astype(dtype)])
    for x in (w.reshape(25, 40), w.reshape(40, 25).T, np.array(dtype(0.0)), np.array(dtype(-2.5))):
        got = _nudged(x, np.random.default_rng(7))
        bits = np.frombuffer(np.random.default_rng(7).bytes((x.size + 7) // 8), np.uint8)
        up = np.unpackbits(bits, count=x.size).view(bool).reshape(x.shape)  # one seeded bit per element
        want = np.where(up, np.nextafter(x, np.inf), np.nextafter(x, -np.inf)).astype(dtype)
        ints = {2: np.int16, 4: np.int32, 8: np.int64}[np.dtype(dtype).itemsize]
        assert got.shape == x.shape and got.dtype == x.dtype
        assert np.array_equal(np.asarray(got).view(ints), np.asarray(want).view(ints))
        assert not np.array_equal(np.asarray(got).view(ints), np.asarray(x).view(ints))
