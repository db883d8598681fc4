"""`netmorph verify` as a CI gate: exact integers, per-output tolerances, --map, --providers, JSON on exit 2.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from netmorph.cli.main import cli
from onnx import TensorProto, helper, numpy_helper

import netmorph
from netmorph.verification import InterfaceMismatchError, Tolerance, compare_output, verify_models

OPSET = [helper.make_opsetid("", 17)]


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def err_line(res) -> str:
    lines = (res.stderr if hasattr(res, "stderr") else res.output).strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("netmorph: error: "), lines
    return lines[0]


def save(m: onnx.ModelProto, path) -> str:
    onnx.save(m, path)
    return str(path)


def two_outputs(c1: float, c2: float, *, x: str = "x", y1: str = "y1") -> onnx.ModelProto:
    """y1 = x * c1, y2 = x * c2 on float[N, 6]."""
    g = helper.make_graph(
        [helper.make_node("Mul", [x, "c1"], [y1]), helper.make_node("Mul", [x, "c2"], ["y2"])], "two",
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, ["N", 6])],
        [helper.make_tensor_value_info(y1, TensorProto.FLOAT, ["N", 6]),
         helper.make_tensor_value_info("y2", TensorProto.FLOAT, ["N", 6])],
        [numpy_helper.from_array(np.array(c1, np.float32), "c1"),
         numpy_helper.from_array(np.array(c2, np.float32), "c2")],
    )
    return helper.make_model(g, opset_imports=OPSET)


def int_offset(offset: int) -> onnx.ModelProto:
    """ids int64[N, 3] -> ids + offset (an int64 output)."""
    g = helper.make_graph(
        [helper.make_node("Add", ["ids", "off"], ["out"])], "ints",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["N", 3])],
        [helper.make_tensor_value_info("out", TensorProto.INT64, ["N", 3])],
        [numpy_helper.from_array(np.array(offset, np.int64), "off")],
    )
    return helper.make_model(g, opset_imports=OPSET)


def test_int64_outputs_off_by_one_fail_exactly(tmp_path):
    r = verify_models(int_offset(100000), int_offset(100001))  # within rtol 1e-4 of 1e5: a float rule passes
    (o,) = r.outputs
    assert not r.ok and o.rule == "exact" and o.n_failed == o.n_elements and o.max_abs == 1.0
    assert isinstance(o.a_value, int) and o.b_value == o.a_value + 1
    assert "compared exactly (int64)" in r.failure_line()
    assert verify_models(int_offset(100000), int_offset(100000)).ok
    r = verify_models(int_offset(100000), int_offset(100001), tolerance="calibrated")  # no float output
    assert not r.ok and r.outputs[0].rule == "exact"
    assert r.calibration == {"probes": {}, "floor": {}, "skipped": {}}
    # an explicit per-output tolerance is the way to accept it
    assert verify_models(int_offset(100000), int_offset(100001), output_atol={"out": 1}).ok


def test_failure_line_names_a_failing_element_not_the_largest_difference():
    a = np.array([[-0.939564, 0.1, 0.2]], np.float32)
    b = a + np.array([[3.34e-5, 2e-5, 0.0]], np.float32)  # (0, 0) is within rtol x |a|; (0, 1) is not
    d = compare_output("y", [(a, b)], Tolerance(1e-4, 1e-5))
    assert not d.ok and d.n_failed == 1 and d.worst_index == (0, 1)
    assert d.max_abs == pytest.approx(3.34e-5, rel=1e-2)  # the largest difference is still reported


def test_batch_dependent_difference_fails():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 5])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 5])
    a = helper.make_model(helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "a", [x], [y]),
                          opset_imports=OPSET)
    zero = numpy_helper.from_array(np.array(0, np.float32), "zero")
    nodes = [helper.make_node("ReduceMean", ["x"], ["m"], axes=[0], keepdims=1),
             helper.make_node("Mul", ["x", "zero"], ["z"]), helper.make_node("Add", ["z", "m"], ["y"])]
    # y = mean over the batch: equal to x only when N == 1
    b = helper.make_model(helper.make_graph(nodes, "b", [x], [y], [zero]),
                          opset_imports=[helper.make_opsetid("", 13)])
    assert verify_models(a, b, dims={"N": 1}).ok
    assert not verify_models(a, b).ok
    assert not verify_models(a, b, batch_size=1).ok  # dim 0 takes 1 and 2


def test_per_output_atol_lets_one_output_pass(tmp_path):
    a = save(two_outputs(1.0, 1.0), tmp_path / "a.onnx")
    b = save(two_outputs(1.001, 1.01), tmp_path / "b.onnx")
    out = tmp_path / "r.json"
    res = invoke("verify", a, b, "--json", out)
    assert res.exit_code == 1
    d = json.loads(out.read_text())
    assert [o["ok"] for o in d["outputs"]] == [False, False] and d["exit_code"] == 1 and d["error"] is None
    res = invoke("verify", a, b, "--atol", "y1=0.01", "--json", out)
    assert res.exit_code == 1, res.output
    d = json.loads(out.read_text())
    y1, y2 = d["outputs"]
    assert y1["ok"] and y1["rule"] == "per-output" and y1["atol"] == 0.01 and not y2["ok"]
    assert d["worst_output"] == "y2" and "output 'y2'" in res.stdout
    for key in ("max_abs", "mean_abs", "median_abs", "p99_abs", "max_rel", "min_atol_to_pass", "n_failed"):
        assert key in y2
    assert invoke("verify", a, b, "--atol", "y1=0.01", "--atol", "y2=0.1").exit_code == 0
    assert invoke("verify", a, b, "--rtol", "0.02").exit_code == 0  # the global one covers both
    line = err_line(invoke("verify", a, b, "--atol", "nope=1", "--json", out))
    assert "tolerance for 'nope'" in line and json.loads(out.read_text())["exit_code"] == 2


def test_renamed_inputs_and_outputs_with_map(tmp_path):
    a = save(two_outputs(1.0, 2.0), tmp_path / "a.onnx")
    b = save(two_outputs(1.0, 2.0, x="input", y1="first"), tmp_path / "b.onnx")
    line = err_line(invoke("verify", a, b))
    assert "different inputs: 'x' only in" in line  # names must match unless mapped
    res = invoke("verify", a, b, "--map", "x=input", "--map", "y1=first")
    assert res.exit_code == 0, res.output
    bad = save(two_outputs(1.0, 2.5, x="input", y1="first"), tmp_path / "bad.onnx")
    res = invoke("verify", a, bad, "--map", "x=input", "--map", "y1=first")
    assert res.exit_code == 1 and "output 'y2'" in res.stdout
    assert "'zz'" in err_line(invoke("verify", a, b, "--map", "x=zz"))
    with pytest.raises(InterfaceMismatchError, match="has no input or output 'q'"):
        verify_models(two_outputs(1, 2), two_outputs(1, 2), name_map={"q": "x"})


def test_options_errors_exit_2_with_json(tmp_path):
    a = save(two_outputs(1.0, 2.0), tmp_path / "a.onnx")
    out = tmp_path / "r.json"
    for args, msg in [
        (["--dim", "seq"], "--dim must be NAME=VALUE"),
        (["--dim", "L=3"], "--dim L: the inputs have no symbolic dim of that name (symbolic dims: N)"),
        (["--range", "x=3:1"], "expected LO:HI"),
        (["--batches", "0"], "batches must be a positive integer"),
        (["--tolerance", "loose"], "tolerance must be 'fixed', 'calibrated'"),
        (["--providers", "NoSuchExecutionProvider"], "provider 'NoSuchExecutionProvider' is not available"),
        (["--inputs", tmp_path / "missing.npz"], "no such inputs file"),
        (["--inputs", tmp_path / "missing.npz", "--dim", "N=1"], "do not apply with --inputs"),
    ]:
        line = err_line(invoke("verify", a, a, *args, "--json", out))
        assert msg in line, (args, line)
        d = json.loads(out.read_text())
        error = line.removeprefix("netmorph: error: ")
        assert d == {"ok": False, "exit_code": 2, "error": error, "a": a, "b": a}
    before = (tmp_path / "a.onnx").read_bytes()
    line = err_line(invoke("verify", a, a, "--json", a))  # never replaces a file it reads
    assert "is the A file" in line and "would be replaced" in line
    assert (tmp_path / "a.onnx").read_bytes() == before
    res = invoke("verify", a, a, "--providers", "CPUExecutionProvider", "--dim", "N=3", "--range", "x=-2:2")
    assert res.exit_code == 0 and "CPUExecutionProvider" in res.stdout


def test_allow_nan_and_calibrated_from_the_cli(tmp_path):
    g = helper.make_graph([helper.make_node("Sqrt", ["x"], ["y"])], "sqrt",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 5])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 5])])
    a = save(helper.make_model(g, opset_imports=OPSET), tmp_path / "sqrt.onnx")
    res = invoke("verify", a, a)
    assert res.exit_code == 1 and "NaN/Inf in both models" in res.stdout
    assert invoke("verify", a, a, "--allow-nan").exit_code == 0
    res = invoke("verify", a, a, "--allow-nan", "--tolerance", "calibrated:4")
    assert res.exit_code == 0 and "calibrated rule, K=4" in res.stdout


def test_custom_domain_op_is_one_line_exit_2_without_ort_log_noise(tmp_path):
    g = helper.make_graph([helper.make_node("Frobnicate", ["x"], ["y"], domain="com.example")], "custom",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 5])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 5])])
    m = helper.make_model(g, opset_imports=[*OPSET, helper.make_opsetid("com.example", 1)])
    custom = save(m, tmp_path / "custom.onnx")
    ok = save(helper.make_model(helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "r",
                                                  list(g.input), list(g.output)), opset_imports=OPSET),
              tmp_path / "ok.onnx")
    exe = shutil.which("netmorph")
    cmd = [exe] if exe else [sys.executable, "-m", "netmorph.cli.main"]
    out = tmp_path / "r.json"
    p = subprocess.run([*cmd, "verify", ok, custom, "--json", str(out)], capture_output=True, text=True,
                       timeout=120, env={**os.environ, "OMP_NUM_THREADS": "2"})
    assert p.returncode == 2 and p.stdout == ""
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr  # ORT's own coloured log line does not leak
    assert lines[0].startswith("netmorph: error: ") and "custom.onnx" in lines[0] and "Frobnicate" in lines[0]
    assert json.loads(out.read_text())["exit_code"] == 2


def test_grow_takes_the_same_input_options(tmp_path):
    plain = netmorph.save(netmorph.build("plain", blocks=1, channels=(4, 4, 4), bn_stats=True),
                          tmp_path / "p.onnx")
    out, rep = tmp_path / "c.onnx", tmp_path / "c.json"
    res = invoke("grow", plain, "--pass", "deepen", "-o", out, "--report", rep, "--batches", "3",
                 "--providers", "CPUExecutionProvider", "--range", "input=-1:1")
    assert res.exit_code == 0, res.output
    (p,) = json.loads(rep.read_text())["passes"]
    assert p["verification"]["batches"] == 3 and p["verification"]["tolerance"].startswith("calibrated")
    # one policy: `verify` with the same options sees the same inputs, so the same numbers and verdict
    vj = tmp_path / "v.json"
    res = invoke("verify", plain, out, "--tolerance", "calibrated", "--batches", "3", "--range", "input=-1:1",
                 "--json", vj)
    assert res.exit_code == 0, res.output
    v = json.loads(vj.read_text())
    assert v["max_abs"] == p["verification"]["max_abs"] and v["batches"] == 3
    assert max(o["noise_ratio"] for o in v["outputs"]) == p["verification"]["noise_ratio"]
    line = err_line(invoke("grow", plain, "--pass", "deepen", "-o", tmp_path / "d.onnx",
                           "--providers", "Nope"))
    assert "provider 'Nope' is not available" in line and not (tmp_path / "d.onnx").exists()


def test_ort_log_lines_are_silenced_unless_verbose(tmp_path):
    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "unused",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 5])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 5])],
                          [numpy_helper.from_array(np.ones(3, np.float32), "unused")])
    m = save(helper.make_model(g, opset_imports=OPSET), tmp_path / "unused.onnx")
    exe = shutil.which("netmorph")
    cmd = [exe] if exe else [sys.executable, "-m", "netmorph.cli.main"]
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    # the optimiser removes the unused initializer and ORT logs a coloured warning about it
    quiet = subprocess.run([*cmd, "verify", m, m, "--optimize-b"], capture_output=True, text=True, env=env)
    loud = subprocess.run([*cmd, "verify", m, m, "--optimize-b", "--verbose"], capture_output=True, text=True,
                          env=env)
    assert quiet.returncode == loud.returncode == 0
    assert quiet.stderr == "" and "Removing initializer 'unused'" in loud.stderr
