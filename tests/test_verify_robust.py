"""The equivalence checker against pairs built to fool it: extreme values, shapes the child cannot
run at, hostile ``--inputs``, name maps that hide outputs, and sizes that would exhaust memory."""

from __future__ import annotations

import warnings
import zipfile

import numpy as np
import onnx
import pytest
from hostile_util import MiB, check_error, invoke, one_line, run_cli
from onnx import TensorProto, helper, numpy_helper

from netmorph.verification import InterfaceMismatchError, make_inputs, verify_models
from netmorph.verification.calibrate import ulp_perturbed
from netmorph.verification.inputs import random_batches
from netmorph.verification.interface import Interface
from netmorph.verification.limits import MAX_COVER_BATCHES
from netmorph.verification.options import VerifyOptions

OPSET = [helper.make_opsetid("", 17)]


def classifier(*, extra: np.ndarray | None = None, bias_shift: float = 0.0, cancel: bool = False,
               seed: int = 0) -> onnx.ModelProto:
    """x[N, 8] -> logits[N, 10] = x W (+ x A + x B: near-cancelling 1e7 weights into logit 0) + b
    (+ ``extra``, a constant such as a -1e9 mask); ``bias_shift`` is added to the bias of logit 1."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((8, 10)).astype(np.float32)
    b = rng.standard_normal(10).astype(np.float32)
    b[1] += bias_shift
    inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")]
    nodes = [helper.make_node("MatMul", ["x", "w"], ["xw"]), helper.make_node("Add", ["xw", "b"], ["h0"])]
    cur = "h0"
    if cancel:
        big = np.zeros((8, 10), np.float32)
        big[:, 0] = 1e7 + rng.integers(1, 4, 8)
        neg = -np.where(big != 0, 1e7, 0).astype(np.float32)
        inits += [numpy_helper.from_array(big, "big"), numpy_helper.from_array(neg, "neg")]
        nodes += [helper.make_node("MatMul", ["x", "big"], ["p"]),
                  helper.make_node("MatMul", ["x", "neg"], ["q"]),
                  helper.make_node("Add", ["p", "q"], ["pq"]),
                  helper.make_node("Add", [cur, "pq"], ["h1"])]
        cur = "h1"
    if extra is not None:
        inits.append(numpy_helper.from_array(extra.astype(np.float32), "extra"))
        nodes.append(helper.make_node("Add", [cur, "extra"], ["h2"]))
        cur = "h2"
    nodes.append(helper.make_node("Identity", [cur], ["logits"]))
    g = helper.make_graph(nodes, "clf", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8])],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])], inits)
    return helper.make_model(g, opset_imports=OPSET)


def _mask(value: float) -> np.ndarray:
    m = np.zeros((1, 10), np.float32)
    m[0, 3] = value
    return m


@pytest.mark.parametrize("kind", ["masked -1e9", "one 1e30 element", "near-cancelling 1e7 weights"])
def test_one_extreme_value_does_not_lend_its_noise_to_the_other_logits(kind):
    build = {"masked -1e9": dict(extra=_mask(-1e9)), "one 1e30 element": dict(extra=_mask(1e30)),
             "near-cancelling 1e7 weights": dict(cancel=True)}[kind]
    parent = classifier(**build)
    assert verify_models(parent, classifier(**build)).ok  # the same function passes
    r = verify_models(parent, classifier(**build, bias_shift=1.0))
    (o,) = r.outputs
    assert r.tolerance == "calibrated:8" and r.rule_source == "the default"
    assert not r.ok and o.rule == "calibrated", r.failure_line()
    assert o.worst_index[1] == 1 and o.noise_ratio > 1e3  # the shifted logit, far above its own noise
    assert "x noise" in r.failure_line() and "of that element" in r.failure_line()


def _reshape_pair() -> tuple[onnx.ModelProto, onnx.ModelProto]:
    """Parent: x[N, 4, 2] -> Reshape to [N, 8] with N read from the input; child: the same Reshape
    with the batch baked in as 2 (what a careless surgery writes)."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, 2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8])
    parent = helper.make_graph(
        [helper.make_node("Shape", ["x"], ["s"], start=0, end=1),
         helper.make_node("Concat", ["s", "eight"], ["shape"], axis=0),
         helper.make_node("Reshape", ["x", "shape"], ["y"])], "p", [x], [y],
        [numpy_helper.from_array(np.array([8], np.int64), "eight")])
    child = helper.make_graph([helper.make_node("Reshape", ["x", "baked"], ["y"])], "c", [x], [y],
                              [numpy_helper.from_array(np.array([2, 8], np.int64), "baked")])
    return helper.make_model(parent, opset_imports=OPSET), helper.make_model(child, opset_imports=OPSET)


def test_child_with_a_baked_batch_fails_by_default(tmp_path):
    parent, child = _reshape_pair()
    onnx.save(parent, tmp_path / "p.onnx")
    onnx.save(child, tmp_path / "c.onnx")
    r = verify_models(parent, child)
    assert not r.ok and r.b_failure and "where" in r.b_failure and "batch 1" in r.b_failure
    assert [f["x"].shape[0] for f in make_inputs(parent)] == [2, 3]  # dim 0 at two sizes
    assert verify_models(parent, child, dims={"N": 2}).ok  # --dim still overrides
    res = invoke("verify", tmp_path / "p.onnx", tmp_path / "c.onnx")
    assert res.exit_code == 1 and "NOT equivalent" in res.output and len(r.failure_line()) <= 300


def test_a_size_the_parent_cannot_run_at_is_its_limit_not_the_childs():
    """Parent: a 4x4 conv with stride 4 over a symbolic H x W (it fails at 1 x 1): the sizes the
    parent runs at are found, and the child is checked there."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, "H", "W"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    w = numpy_helper.from_array(np.ones((1, 1, 4, 4), np.float32), "w")
    conv = helper.make_node("Conv", ["x", "w"], ["y"], strides=[4, 4])
    parent = helper.make_model(helper.make_graph([conv], "p", [x], [y], [w]), opset_imports=OPSET)
    r = verify_models(parent, parent)
    assert r.ok and "does not run at the default sizes" in r.plan["note"]
    assert all(d["H"] >= 4 for d in r.plan["batch_dims"])


def test_child_runs_as_written_and_optimised():
    parent = classifier()
    r = verify_models(parent, classifier())
    assert r.b_runs == ["as written", "ORT-optimised"] and len(r.optimised_outputs) == 1
    assert r.to_dict()["optimised_outputs"][0]["ok"]
    bad = verify_models(parent, classifier(bias_shift=1.0), optimize_b=True)
    assert bad.b_runs == ["optimised"] and not bad.ok


def test_ulp_probe_moves_only_float_weights_without_overflow():
    """A Resize scale, a finfo.min mask and an integer tensor stay; the float weights move."""
    fmin = np.finfo(np.float32).min
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, 4, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2, 8, 8])
    inits = [numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales"),
             numpy_helper.from_array(np.full((1, 1, 8, 8), 0.0, np.float32) + np.eye(8, dtype=np.float32)
                                     * fmin, "mask"),
             numpy_helper.from_array(np.array([2], np.int64), "axes"),
             numpy_helper.from_array(np.float32(0.5) * np.ones((1, 2, 1, 1), np.float32), "w")]
    nodes = [helper.make_node("Resize", ["x", "", "scales"], ["r"], mode="nearest"),
             helper.make_node("Mul", ["r", "w"], ["rw"]), helper.make_node("Max", ["rw", "mask"], ["m"]),
             helper.make_node("ReduceSum", ["m", "axes"], ["s"], keepdims=1),
             helper.make_node("Add", ["m", "s"], ["y"])]
    model = helper.make_model(helper.make_graph(nodes, "u", [x], [y], inits), opset_imports=OPSET)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "overflow encountered in nextafter"
        moved = {t.name: numpy_helper.to_array(t) for t in ulp_perturbed(model, 0).graph.initializer}
        r = verify_models(model, model)
    before = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    for name in ("scales", "mask", "axes"):
        assert np.array_equal(moved[name], before[name]), name
    assert not np.array_equal(moved["w"], before["w"])
    assert r.ok and "ulp-weights" in r.calibration["probes"]


def _npz(path, **arrays) -> str:
    np.savez(path, **arrays)
    return str(path)


def test_zero_row_inputs_are_refused(tmp_path):
    parent = classifier()
    onnx.save(parent, tmp_path / "a.onnx")
    onnx.save(classifier(bias_shift=1.0), tmp_path / "b.onnx")
    empty = _npz(tmp_path / "empty.npz", x=np.zeros((0, 8), np.float32))
    res = invoke("verify", tmp_path / "a.onnx", tmp_path / "b.onnx", "--inputs", empty)
    check_error(res, 2, contains="no elements")


def test_map_may_not_hide_bs_own_output(tmp_path):
    a = classifier()
    b = classifier()
    b.graph.node.append(helper.make_node("Identity", ["logits"], ["out2"]))
    b.graph.output.append(helper.make_tensor_value_info("out2", TensorProto.FLOAT, ["N", 10]))
    a.graph.node.append(helper.make_node("Identity", ["logits"], ["aux"]))
    a.graph.output.append(helper.make_tensor_value_info("aux", TensorProto.FLOAT, ["N", 10]))
    with pytest.raises(InterfaceMismatchError, match="has its own 'logits' too"):
        verify_models(a, b, name_map={"logits": "out2"})
    onnx.save(a, tmp_path / "a.onnx")
    onnx.save(b, tmp_path / "b.onnx")
    res = invoke("verify", tmp_path / "a.onnx", tmp_path / "b.onnx", "--map", "logits=out2")
    check_error(res, 2, contains="would be hidden")
    assert verify_models(a, b, name_map={"logits": "out2", "aux": "logits"}).ok  # both mapped: both compared


def _zip_bomb(path, declared_bytes: int) -> None:
    """A .npz whose one member declares (and really holds) ``declared_bytes`` of zeros, deflated."""
    n = declared_bytes // 4
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        with zf.open("x.npy", "w", force_zip64=True) as f:
            header = {"descr": "<f4", "fortran_order": False, "shape": (n // 8, 8)}
            np.lib.format.write_array_header_2_0(f, header)
            chunk = bytes(1 << 20)
            for _ in range(declared_bytes // len(chunk)):
                f.write(chunk)


def test_inputs_over_the_size_limit_are_refused_before_decompressing(tmp_path):
    onnx.save(classifier(), tmp_path / "a.onnx")
    bomb = tmp_path / "bomb.npz"
    _zip_bomb(bomb, 64 * MiB)
    assert bomb.stat().st_size < MiB
    r = run_cli("verify", tmp_path / "a.onnx", tmp_path / "a.onnx", "--inputs", bomb,
                env={"NETMORPH_MAX_VERIFY_INPUT_BYTES": str(8 * MiB)}, timeout=120)
    one_line(r.stderr, 2, r.code, contains="NETMORPH_MAX_VERIFY_INPUT_BYTES")
    assert r.max_rss < 64 * MiB + 400 * MiB  # the member was never decompressed


def _one_token_model() -> onnx.ModelProto:
    """ids[1, 1] (fixed) reading a 1024-row table, broadcast to 1 x 1 x 50,000 floats per batch."""
    ids = helper.make_tensor_value_info("ids", TensorProto.INT64, [1, 1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 50_000])
    table = numpy_helper.from_array(np.arange(1024, dtype=np.float32).reshape(1024, 1), "table")
    shape = numpy_helper.from_array(np.array([1, 1, 50_000], np.int64), "shape")
    nodes = [helper.make_node("Gather", ["table", "ids"], ["e"]),
             helper.make_node("Expand", ["e", "shape"], ["y"])]
    return helper.make_model(helper.make_graph(nodes, "tok", [ids], [y], [table, shape]), opset_imports=OPSET)


def test_coverage_batches_are_bounded(tmp_path):
    model = _one_token_model()
    feeds, plan = random_batches(Interface.of(model), VerifyOptions(), model)
    assert len(feeds) == 2 + MAX_COVER_BATCHES and plan.to_dict()["ranges"]["ids"]["covered"] is False
    onnx.save(model, tmp_path / "m.onnx")
    r = run_cli("verify", tmp_path / "m.onnx", tmp_path / "m.onnx", timeout=120)
    assert r.code == 0, r.stderr[-2000:]
    assert r.max_rss < 1000 * MiB


def test_huge_outputs_are_refused_before_they_are_made(tmp_path):
    """A 1e8-element int64 output (800 MB per batch): refused from its declared shape."""
    y = helper.make_tensor_value_info("y", TensorProto.INT64, [100_000_000])
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2])
    shape = numpy_helper.from_array(np.array([100_000_000], np.int64), "shape")
    node = helper.make_node("ConstantOfShape", ["shape"], ["y"],
                            value=numpy_helper.from_array(np.array([7], np.int64)))
    model = helper.make_model(helper.make_graph([node], "big", [x], [y], [shape]), opset_imports=OPSET)
    onnx.save(model, tmp_path / "m.onnx")
    r = run_cli("verify", tmp_path / "m.onnx", tmp_path / "m.onnx", timeout=120)
    one_line(r.stderr, 2, r.code, contains="NETMORPH_MAX_VERIFY_OUTPUT_BYTES")
    assert r.max_rss < 600 * MiB


def test_random_inputs_past_the_limit_are_refused_before_allocating(tmp_path):
    """A fixed input dim of a million channels: the check refuses before making 1.3 GB of inputs."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1_000_000, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1_000_000, 8, 8])
    m = helper.make_model(helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "big", [x], [y]),
                          opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(m, tmp_path / "big.onnx")
    r = run_cli("verify", tmp_path / "big.onnx", tmp_path / "big.onnx", mem_limit=2 << 30)
    assert r.code == 2, r.stderr
    assert "NETMORPH_MAX_VERIFY_INPUT_BYTES" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert r.max_rss < 600 << 20
