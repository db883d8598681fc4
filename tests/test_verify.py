"""netmorph.verify: equivalence checks of real ONNX models in ONNX Runtime."""

from __future__ import annotations

import json
import re

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import netmorph
from netmorph.errors import NetmorphError, VerificationError
from netmorph.onnx_io import OnnxFormatError
from netmorph.verification import (
    InputsError,
    InterfaceMismatchError,
    ModelRunError,
    OutputDiff,
    Tolerance,
    VerifyReport,
    compare_output,
    make_inputs,
    verify_models,
)


def small_cnn(*, seed: int = 0, fc_delta: float = 0.0, in_shape=("N", 3, 8, 8), in_name: str = "x",
              fc_out: int = 4, extra_op: str | None = None) -> onnx.ModelProto:
    """Conv -> Relu (output 'features') -> GlobalAveragePool -> Flatten -> Gemm (output 'logits')."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((6, 3, 3, 3)).astype(np.float32) * 0.3
    fc = rng.standard_normal((fc_out, 6)).astype(np.float32)
    fc[1, 2] += fc_delta
    nodes = [
        helper.make_node("Conv", [in_name, "w"], ["c"], pads=[1, 1, 1, 1], name="conv"),
        helper.make_node("Relu", ["c"], ["features"], name="relu"),
        helper.make_node("GlobalAveragePool", ["features"], ["p"], name="pool"),
        helper.make_node("Flatten", ["p"], ["f"], name="flat"),
        helper.make_node("Gemm", ["f", "fc"], ["logits"], transB=1, name="fc"),
    ]
    if extra_op:
        nodes[-1].output[0] = "pre"
        nodes.append(helper.make_node(extra_op, ["pre"], ["logits"], name="extra"))
    g = helper.make_graph(
        nodes, "cnn",
        [helper.make_tensor_value_info(in_name, TensorProto.FLOAT, list(in_shape))],
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", 6, 8, 8]),
         helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", fc_out])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(fc, "fc")],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(m, full_check=True)
    return m


def unary(op: str, pre: str | None = None) -> onnx.ModelProto:
    """y = op(x) (optionally op(pre(x))) on a float[N, 5] input."""
    nodes = [helper.make_node(op, ["t" if pre else "x"], ["y"])]
    if pre:
        nodes.insert(0, helper.make_node(pre, ["x"], ["t"]))
    g = helper.make_graph(
        nodes, op.lower(),
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 5])],
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


# -- accepted model forms -------------------------------------------------------------------
def test_same_model_is_equivalent_as_proto_graph_and_path(tmp_path):
    m = small_cnn()
    path = tmp_path / "m.onnx"
    onnx.save(m, path)
    for a, b in [(m, m), (netmorph.from_onnx(m), path), (str(path), m)]:
        r = verify_models(a, b)
        assert isinstance(r, VerifyReport)
        assert r.ok and r.max_abs == 0.0 and r.max_rel == 0.0
        assert [o.name for o in r.outputs] == ["features", "logits"]
        assert r.batches == 2 and r.inputs == "random" and r.provider == "CPUExecutionProvider"
        assert r.outputs[0].n_elements == (2 + 3) * (6 * 8 * 8)  # two batches: dim 0 at 2, then 3
    assert str(path) in verify_models(path, m).a


def test_external_data_model_verifies_against_its_in_memory_graph(tmp_path):
    g = netmorph.from_onnx(small_cnn())
    path = netmorph.save(g, tmp_path / "ext" / "m.onnx", external_data=True)
    assert any(p.name != "m.onnx" for p in (tmp_path / "ext").iterdir())  # weights beside the model
    assert verify_models(g, path).ok
    assert not verify_models(small_cnn(fc_delta=0.5), path).ok


def test_torch_export_round_trip_through_ir_is_equivalent(torch_cnn_onnx, tmp_path):
    g = netmorph.load(torch_cnn_onnx)
    out = netmorph.save(g, tmp_path / "rt.onnx")
    r = verify_models(torch_cnn_onnx, out, batches=3, batch_size=4)
    assert r.ok and r.max_abs == 0.0
    assert r.outputs[0].name == "logits" and r.outputs[0].shape == (4, 10) and r.batches == 3
    # ORT's fusions (Conv+BN, Conv+Relu …) on b change rounding only, well inside the tolerance.
    r2 = verify_models(torch_cnn_onnx, g, optimize_b=True)
    assert r2.ok and r2.optimized_b and r2.max_abs < 1e-4


# -- failures name the output ---------------------------------------------------------------
def test_perturbed_weight_fails_and_names_the_output():
    a, b = small_cnn(), small_cnn(fc_delta=0.5)
    r = verify_models(a, b)
    assert not r.ok
    assert r.worst_output == "logits"
    feats, logits = r.outputs
    assert feats.ok and feats.max_abs == 0.0
    assert not logits.ok and logits.n_failed > 0 and logits.n_failed <= logits.n_elements
    # the perturbation touches logits[:, 1] only: worst element is in column 1
    assert r.worst_index[1] == 1 and len(r.worst_index) == 2
    assert logits.max_abs == pytest.approx(abs(logits.a_value - logits.b_value), rel=1e-6)
    assert logits.min_atol_to_pass == pytest.approx(logits.max_abs)
    # recompute the worst difference independently from the same inputs
    feeds = make_inputs(a)
    import onnxruntime as ort
    sa, sb = (ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]) for m in (a, b))
    worst = max(float(np.abs(sa.run(["logits"], f)[0] - sb.run(["logits"], f)[0]).max()) for f in feeds)
    assert logits.max_abs == pytest.approx(worst, rel=1e-6)
    with pytest.raises(VerificationError) as ei:
        r.raise_if_failed("fc tweak")
    msg = str(ei.value)
    assert "\n" not in msg and msg.startswith("verification failed for fc tweak: output 'logits' max abs")
    assert "logits" in str(r) and "NO" in r.table()


def test_min_atol_to_pass_really_passes():
    a, b = small_cnn(), small_cnn(fc_delta=1e-3)
    r = verify_models(a, b, rtol=0.0)
    assert not r.ok
    need = r.outputs[1].min_atol_to_pass
    assert verify_models(a, b, rtol=0.0, atol=need).ok
    assert not verify_models(a, b, rtol=0.0, atol=need * 0.999).ok


# -- tolerance rule -------------------------------------------------------------------------
def _cmp(a, b, rtol, atol) -> OutputDiff:
    pair = (np.asarray(a, np.float32), np.asarray(b, np.float32))
    return compare_output("y", [pair], Tolerance(rtol, atol))


def test_tolerance_rule_edges():
    # exceeds atol but within rtol*|a|: passes
    assert _cmp([100.0], [100.001], rtol=1e-4, atol=1e-6).ok
    # exceeds rtol*|a| but within atol: passes
    assert _cmp([0.0], [1e-6], rtol=1e-4, atol=1e-5).ok
    # exceeds both: fails
    d = _cmp([1.0, 2.0], [1.0, 2.1], rtol=1e-4, atol=1e-5)
    assert not d.ok and d.n_failed == 1 and d.worst_index == (1,)
    assert d.a_value == pytest.approx(2.0) and d.b_value == pytest.approx(2.1)
    # exactly at the bound passes (strict >)
    assert _cmp([0.5], [0.75], rtol=0.0, atol=0.25).ok
    assert not _cmp([0.5], [0.75], rtol=0.0, atol=0.2499).ok
    # relative error is against the reference a, so the rule is not symmetric
    assert _cmp([10.0], [10.5], rtol=0.05, atol=0.0).ok
    assert not _cmp([10.0], [10.5], rtol=0.0499, atol=0.0).ok
    assert not _cmp([10.5], [10.0], rtol=0.0, atol=0.0).ok


def test_max_rel_and_min_atol_definitions():
    d = _cmp([2.0, 0.0, -4.0], [2.5, 1e-3, -4.0], rtol=0.1, atol=0.0)
    # rel: 0.25, 1e-3 / tiny(float32) (huge), 0
    assert d.max_rel == pytest.approx(1e-3 / np.finfo(np.float32).tiny, rel=1e-6)
    assert d.max_abs == pytest.approx(0.5)
    # element 0 needs atol 0.5 (0.5 > 0.1*2), element 1 needs 1e-3 -> 0.5
    assert d.min_atol_to_pass == pytest.approx(0.5)
    assert d.mean_abs == pytest.approx((0.5 + 1e-3) / 3, rel=1e-5)
    assert d.median_abs == pytest.approx(1e-3, rel=1e-5)
    # within rtol everywhere: no atol needed
    assert _cmp([2.0, 4.0], [2.1, 4.1], rtol=0.1, atol=0.0).min_atol_to_pass == 0.0
    with pytest.raises(ValueError):
        Tolerance(-1.0, 0.0)


# -- NaN / Inf ------------------------------------------------------------------------------
def _cmp_nan(a, b, allow_nan: bool) -> OutputDiff:
    pair = (np.asarray(a, np.float32), np.asarray(b, np.float32))
    return compare_output("y", [pair], Tolerance(0.0, 0.0, allow_nan=allow_nan))


def test_nonfinite_rules():
    nan, inf = np.nan, np.inf
    vals = [nan, inf, -inf, 1.0]
    same = _cmp_nan(vals, vals, allow_nan=False)  # NaN/Inf fail by default, even when matched
    assert not same.ok and same.n_failed == 3 and same.n_nonfinite_mismatch == 0
    assert same.n_nan == (1, 1) and same.n_inf == (2, 2) and same.first_nonfinite == (0, (0,))
    assert same.nonfinite_at == [(0, (0,)), (0, (1,)), (0, (2,))]
    assert same.max_abs == same.mean_abs == 0.0 and same.min_atol_to_pass == np.inf
    same = _cmp_nan(vals, vals, allow_nan=True)  # matched positions are equal with allow_nan
    assert same.ok and same.max_abs == same.max_rel == same.mean_abs == same.min_atol_to_pass == 0.0
    pairs = [([nan], [0.0]), ([nan], [1.0]), ([1.0], [nan]), ([inf], [-inf]), ([inf], [1e30]), ([2.0], [inf])]
    for a, b in pairs:
        d = compare_output("y", [(np.float32(a), np.float32(b))], Tolerance(1e9, 1e9, allow_nan=True))
        assert not d.ok and d.n_nonfinite_mismatch == 1 and d.n_failed == 1
        assert d.min_atol_to_pass == np.inf
        assert d.max_abs == 0.0 and d.mean_abs == 0.0  # no "mean abs inf": finite elements only


def test_nan_in_both_models_fails_by_default_and_passes_with_allow_nan():
    # sqrt of N(0,1) inputs: NaN wherever x < 0, in both models alike
    r = verify_models(unary("Sqrt"), unary("Sqrt"))
    y = r.outputs[0]
    assert not r.ok and y.n_nonfinite_mismatch == 0 and y.n_nan[0] == y.n_nan[1] > 0
    line = r.failure_line()
    assert "NaN/Inf in both models" in line and "--allow-nan" in line and f"NaN a {y.n_nan[0]}" in line
    assert "NaN/Inf in 1 output(s)" in r.summary()
    r = verify_models(unary("Sqrt"), unary("Sqrt"), allow_nan=True)
    assert r.ok and r.outputs[0].n_nan[0] > 0 and r.max_abs == 0.0 and r.outputs[0].mean_abs == 0.0
    # NaN in a where b has 0: fails, with or without allow_nan
    for allow in (False, True):
        r = verify_models(unary("Sqrt"), unary("Sqrt", pre="Abs"), allow_nan=allow)
        y = r.outputs[0]
        assert not r.ok and y.n_nonfinite_mismatch > 0 and np.isnan(y.a_value) and np.isfinite(y.b_value)
        assert "NaN/Inf in one model only" in r.failure_line()
    d = r.to_dict()
    json.dumps(d, allow_nan=False)  # strict JSON: non-finite numbers are strings
    assert d["outputs"][0]["min_atol_to_pass"] == "inf" and d["outputs"][0]["a_value"] == "nan"
    assert d["outputs"][0]["n_nan"]["a"] > 0 and d["outputs"][0]["n_nan"]["b"] == 0
    first = d["outputs"][0]["nonfinite_at"][0]
    assert make_inputs(unary("Sqrt"))[first["batch"]]["x"][tuple(first["index"])] < 0  # sqrt(x < 0) = NaN


# -- inputs ---------------------------------------------------------------------------------
def test_make_inputs_is_seeded_and_shaped():
    m = small_cnn()
    b1 = make_inputs(m, seed=3, batches=3, batch_size=5)
    b2 = make_inputs(m, seed=3, batches=3, batch_size=5)
    assert len(b1) == 3 and list(b1[0]) == ["x"]
    assert b1[0]["x"].shape == (5, 3, 8, 8) and b1[0]["x"].dtype == np.float32
    assert all(np.array_equal(p["x"], q["x"]) for p, q in zip(b1, b2, strict=True))
    assert not np.array_equal(b1[0]["x"], b1[1]["x"])
    assert not np.array_equal(b1[0]["x"], make_inputs(m, seed=4, batches=1, batch_size=5)[0]["x"])
    assert abs(float(np.concatenate([b["x"].ravel() for b in b1]).std()) - 1.0) < 0.1


def test_make_inputs_integer_inputs_and_symbolic_dims():
    g = helper.make_graph(
        [helper.make_node("Cast", ["i"], ["y"], to=TensorProto.FLOAT)], "ints",
        [helper.make_tensor_value_info("i", TensorProto.INT64, [None, 7])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 7])],
    )
    ints = make_inputs(helper.make_model(g), batch_size=3)[0]["i"]
    assert ints.dtype == np.int64 and ints.shape == (3, 7) and ints.min() >= 0 and ints.max() <= 3
    # a symbolic non-batch dim takes two sizes in alternate batches, or the size --dim gives
    feeds = make_inputs(small_cnn(in_shape=("N", 3, "H", 8)))
    assert [f["x"].shape for f in feeds] == [(2, 3, 8, 8), (3, 3, 1, 8)]
    feeds = make_inputs(small_cnn(in_shape=("N", 3, "H", 8)), dims={"H": 5, "N": 3}, batches=3)
    assert [f["x"].shape for f in feeds] == [(3, 3, 5, 8)] * 3


def test_npz_dict_and_list_inputs(tmp_path):
    a, b = small_cnn(), small_cnn(fc_delta=0.5)
    x = np.random.default_rng(7).standard_normal((3, 3, 8, 8)).astype(np.float32)
    npz = tmp_path / "in.npz"
    np.savez(npz, x=x)
    r = verify_models(a, a, inputs=npz)
    assert r.ok and r.inputs == "npz" and r.batches == 1 and r.outputs[1].shape == (3, 4)
    assert r.seed is None and r.batch_size is None
    # the given inputs are what runs: zero input -> zero conv -> logits all 0 in both
    zero = {"x": np.zeros((1, 3, 8, 8), np.float32)}
    assert verify_models(a, b, inputs=zero).ok
    r = verify_models(a, b, inputs=[zero, {"x": x.astype(np.float64)}])  # float64 is cast
    assert not r.ok and r.batches == 2 and r.outputs[1].worst_batch == 1


@pytest.mark.parametrize(
    ("inputs", "match"),
    [
        ({"y": np.zeros((1, 3, 8, 8), np.float32)}, r"no array for model input\(s\) 'x'"),
        ({"x": np.zeros((1, 3, 8, 8), np.float32), "z": np.zeros(1)}, r"'z' match no model input"),
        ({"x": np.zeros((1, 3, 9, 8), np.float32)}, r"input 'x' has shape \(1, 3, 9, 8\)"),
        ({"x": np.zeros((1, 3, 8, 8), np.int32)}, r"input 'x' is int32, the model wants float32"),
        ([], r"inputs must be"),
    ],
)
def test_bad_inputs_are_refused(inputs, match):
    with pytest.raises(InputsError, match=match):
        verify_models(small_cnn(), small_cnn(), inputs=inputs)


def test_unreadable_npz_is_refused(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(InputsError, match="bad.npz: not a readable .npz"):
        verify_models(small_cnn(), small_cnn(), inputs=bad)
    with pytest.raises(InputsError, match="no such inputs file"):
        verify_models(small_cnn(), small_cnn(), inputs=tmp_path / "missing.npz")


# -- interfaces and unreadable models ----------------------------------------------------------
def test_mismatched_interfaces_are_refused():
    with pytest.raises(InterfaceMismatchError, match=r"different inputs: 'x' only in model a.*'img' only in"):
        verify_models(small_cnn(), small_cnn(in_name="img"))
    with pytest.raises(InterfaceMismatchError, match=r"'logits' has type float\[N,4\] in .* float\[N,5\]"):
        verify_models(small_cnn(), small_cnn(fc_out=5))
    no_features = small_cnn()
    del no_features.graph.output[0]
    with pytest.raises(InterfaceMismatchError, match=r"different outputs: 'features' only in model a"):
        verify_models(small_cnn(), no_features)
    with pytest.raises(InterfaceMismatchError, match=r"different outputs: 'features' only in model b"):
        verify_models(no_features, small_cnn())  # an extra output in b is a difference too
    # declared types agree (unknown shape), the computed shapes do not
    loose = small_cnn(fc_out=5)
    loose.graph.output[1].type.tensor_type.ClearField("shape")
    # a computed shape that differs is a failed verdict (b computes another function), not bad input
    r = verify_models(small_cnn(), loose)
    assert not r.ok and re.search(r"output 'logits' has shape \(2, 4\) in .* \(2, 5\)", r.failure_line())
    assert issubclass(InterfaceMismatchError, NetmorphError)


def test_unreadable_and_unrunnable_models(tmp_path):
    good = tmp_path / "good.onnx"
    onnx.save(small_cnn(), good)
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(OnnxFormatError, match="cut.onnx"):
        verify_models(good, cut)
    with pytest.raises(OnnxFormatError, match="no such file"):
        verify_models(good, tmp_path / "nope.onnx")
    bogus = small_cnn()
    bogus.graph.node[1].op_type = "NoSuchOp"
    with pytest.raises(ModelRunError, match=r"model b .*ONNX Runtime cannot load the model"):
        verify_models(small_cnn(), bogus)


# -- top-level entry point ------------------------------------------------------------------------
def test_netmorph_verify_is_a_plain_function_after_subpackage_import():
    import inspect

    import netmorph.lowering
    import netmorph.verification  # noqa: F401

    assert inspect.isfunction(netmorph.verify) and inspect.isfunction(netmorph.lower)
    r = netmorph.verify(small_cnn(), small_cnn(), batches=1)
    assert r.ok and r.batches == 1


def test_no_module_of_the_package_is_callable():
    import importlib
    import pkgutil
    import types

    import netmorph

    seen = 0
    for info in pkgutil.walk_packages(netmorph.__path__, "netmorph."):
        mod = importlib.import_module(info.name)
        seen += 1
        assert type(mod) is types.ModuleType, info.name
        assert not callable(mod), info.name
    assert seen > 30


def test_initializers_listed_as_inputs_are_not_fed():
    m = small_cnn()
    m.graph.input.append(helper.make_tensor_value_info("fc", TensorProto.FLOAT, [4, 6]))  # IR<4 style
    assert list(make_inputs(m)[0]) == ["x"]
    assert verify_models(m, small_cnn()).ok
    assert not verify_models(m, small_cnn(fc_delta=0.5)).ok
