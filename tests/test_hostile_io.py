"""Outputs that would replace inputs, odd output names, parents that cannot be grown, warnings
beside an error, a conv that reads and writes one channel group: one line, exit 2, nothing replaced."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from hostile_util import check_error, invoke, run_cli, tree_digest
from onnx import TensorProto, helper, numpy_helper

import netmorph

BN = ("--pass", "insert-identity-bn", "--value", "level1.block1.relu1")


@pytest.fixture
def work(tmp_path, small) -> Path:
    shutil.copy(small, tmp_path / "m.onnx")
    np.savez(tmp_path / "in.npz", input=np.zeros((2, 3, 16, 16), np.float32))
    (tmp_path / "inputs").mkdir()
    np.savez(tmp_path / "inputs" / "b1.npz", input=np.ones((2, 3, 16, 16), np.float32))
    return tmp_path


@pytest.mark.parametrize("args, contains", [
    (("-o", "m.onnx"), "is the MODEL file"),
    (("-o", "c.onnx", "--report", "m.onnx"), "is the MODEL file"),
    (("-o", "in.npz", "--inputs", "in.npz"), "is the --inputs file"),
    (("-o", "c.onnx", "--report", "inputs/b1.npz", "--inputs", "inputs"), "inside the --inputs folder"),
    (("-o", "x.onnx", "--report", "x.onnx"), "is also -o"),
    (("-o", "./m.onnx"), "is the MODEL file"),
])
def test_grow_outputs_may_not_name_inputs(work, monkeypatch, args, contains):
    monkeypatch.chdir(work)
    before = tree_digest(work)
    check_error(invoke("grow", "m.onnx", *BN, *args), contains=contains)
    assert tree_digest(work) == before


def test_output_through_a_symlinked_name_of_the_input_is_refused(work):
    (work / "alias.onnx").symlink_to(work / "m.onnx")
    before = tree_digest(work)
    check_error(invoke("grow", work / "alias.onnx", *BN, "-o", work / "m.onnx"), contains="is the MODEL file")
    assert tree_digest(work) == before


def test_verify_json_may_not_replace_a_file_inside_the_inputs_folder(work):
    before = tree_digest(work)
    res = invoke("verify", work / "m.onnx", work / "m.onnx", "--inputs", work / "inputs",
                 "--json", work / "inputs" / "b1.npz")
    check_error(res, contains="inside the --inputs folder")
    assert tree_digest(work) == before


def test_train_output_may_not_be_the_runs_own_checkpoint(work):
    run = work / "m.run"
    run.mkdir()
    before = tree_digest(work)
    res = invoke("train", work / "m.onnx", "--data", "synthetic:16", "--epochs", "1", "--batch-size", "8",
                 "--device", "cpu", "-q", "-o", run / "checkpoint.pt", "--out-dir", run)
    check_error(res, contains="checkpoint.pt")
    assert tree_digest(work) == before


def test_iterate_write_pipeline_may_not_replace_the_start_model(work):
    before = tree_digest(work)
    res = invoke("iterate", work / "m.onnx", "--epochs-per-stage", "1", "--data", "synthetic:16",
                 "--out-dir", work / "run", "--write-pipeline", work / "m.onnx")
    check_error(res, contains="is the START file")
    assert tree_digest(work) == before


@pytest.mark.parametrize("command", ["grow", "new"])
def test_output_ending_in_a_separator_is_refused(work, monkeypatch, command):
    monkeypatch.chdir(work)
    before = tree_digest(work)
    args = ("grow", "m.onnx", *BN) if command == "grow" else ("new", "plain", "-n", "2")
    check_error(invoke(*args, "-o", "newdir/"), contains="names a folder")
    assert tree_digest(work) == before and not (work / "newdir").exists()


def test_output_in_a_missing_folder_is_refused_not_created(work):
    target = work / "missing" / "deeper" / "x.onnx"
    check_error(invoke("grow", work / "m.onnx", *BN, "-o", target), contains="does not exist")
    assert not (work / "missing").exists()


def test_longest_legal_output_name_is_written(work):
    name = "a" * (255 - len(".onnx")) + ".onnx"
    res = invoke("grow", work / "m.onnx", *BN, "-o", work / name)
    assert res.exit_code == 0, res.output
    assert netmorph.load(work / name).parameter_count() > 0
    assert [p.name for p in work.iterdir() if ".nmtmp-" in p.name] == []


def test_parent_with_nan_weights_is_refused_up_front(work):
    m = onnx.load(work / "m.onnx")
    t = m.graph.initializer[0]
    a = numpy_helper.to_array(t).copy()
    a.flat[0] = np.nan
    t.CopyFrom(numpy_helper.from_array(a, t.name))
    onnx.save(m, work / "nan.onnx")
    line = check_error(invoke("grow", work / "nan.onnx", *BN, "-o", work / "c.onnx"), contains="NaN")
    assert "cannot be grown" in line and not (work / "c.onnx").exists()


def test_no_python_warning_beside_the_error_line(work):
    # noise 1e300 overflows float32 (numpy warns) and the child then differs: the error line only
    r = run_cli("grow", work / "m.onnx", "--pass", "widen", "--noise", "1e300", "-o", work / "c.onnx")
    assert r.code in (1, 2), r.stderr
    assert "Warning" not in r.stderr, r.stderr
    assert [ln for ln in r.stderr.splitlines() if ln.strip()][0].startswith("netmorph: error: ")
    assert len([ln for ln in r.stderr.splitlines() if ln.strip()]) == 1, r.stderr


def _one_conv_residual(path: Path) -> Path:
    """x -> Conv -> Relu = h; s = Conv(h) + h; ... -> Gemm: one conv reads and writes h's group."""
    rng = np.random.default_rng(0)

    def w(name, *shape):
        return numpy_helper.from_array((0.3 * rng.standard_normal(shape)).astype(np.float32), name)

    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1] * 4, kernel_shape=[3, 3]),
             helper.make_node("Relu", ["c1"], ["h"]),
             helper.make_node("Conv", ["h", "w3", "b3"], ["c3"], pads=[1] * 4, kernel_shape=[3, 3]),
             helper.make_node("Add", ["c3", "h"], ["s"]),
             helper.make_node("Relu", ["s"], ["h2"]),
             helper.make_node("GlobalAveragePool", ["h2"], ["p"]),
             helper.make_node("Flatten", ["p"], ["f"]),
             helper.make_node("Gemm", ["f", "wf", "bf"], ["logits"], transB=1)]
    weights = [w("w1", 4, 3, 3, 3), w("b1", 4), w("w3", 4, 4, 3, 3), w("b3", 4), w("wf", 5, 4), w("bf", 5)]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 5])
    graph = helper.make_graph(nodes, "res1", [x], [y], weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def test_widen_a_conv_that_reads_and_writes_one_group(tmp_path):
    """``Conv(h) + h``: the conv is consumer and producer of one group (it raised IndexError once);
    the whole group is widened, verified and written."""
    model = _one_conv_residual(tmp_path / "res1.onnx")
    r = invoke("grow", model, "--pass", "widen", "--report", tmp_path / "r.json", "-o", tmp_path / "c.onnx")
    assert r.exit_code == 0, r.output
    v = json.loads((tmp_path / "r.json").read_text())["passes"][0]["verification"]
    assert v["ok"] and v["max_abs"] < 1e-5
    assert netmorph.load(tmp_path / "c.onnx").parameter_count() > netmorph.load(model).parameter_count()
