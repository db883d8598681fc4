"""`netmorph verify` and `netmorph inspect`: exit codes, output, JSON, one-line errors."""

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
from netmorph.errors import StructureError


def cnn(*, fc_delta: float = 0.0, in_name: str = "x") -> onnx.ModelProto:
    """Conv -> BatchNormalization -> Relu ('features') -> GlobalAveragePool -> Flatten -> Gemm ('logits')."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((6, 3, 3, 3)).astype(np.float32) * 0.3
    fc = rng.standard_normal((4, 6)).astype(np.float32)
    fc[2, 3] += fc_delta
    bn = [np.ones(6, np.float32), np.zeros(6, np.float32), np.zeros(6, np.float32), np.ones(6, np.float32)]
    g = helper.make_graph(
        [
            helper.make_node("Conv", [in_name, "w"], ["c"], pads=[1, 1, 1, 1]),
            helper.make_node("BatchNormalization", ["c", "g", "b", "m", "v"], ["n"]),
            helper.make_node("Relu", ["n"], ["features"]),
            helper.make_node("GlobalAveragePool", ["features"], ["p"]),
            helper.make_node("Flatten", ["p"], ["f"]),
            helper.make_node("Gemm", ["f", "fc", "fcb"], ["logits"], transB=1),
        ],
        "cnn",
        [helper.make_tensor_value_info(in_name, TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", 6, 8, 8]),
         helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 4])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(fc, "fc"),
         numpy_helper.from_array(np.zeros(4, np.float32), "fcb")]
        + [numpy_helper.from_array(t, n) for t, n in zip(bn, "gbmv", strict=True)],
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


@pytest.fixture
def models(tmp_path):
    paths = {}
    for name, m in [("a", cnn()), ("b", cnn(fc_delta=0.5)), ("renamed", cnn(in_name="img"))]:
        paths[name] = tmp_path / f"{name}.onnx"
        onnx.save(m, paths[name])
    good = paths["a"].read_bytes()
    paths["cut"] = tmp_path / "cut.onnx"
    paths["cut"].write_bytes(good[: len(good) * 2 // 3])
    return paths


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def stderr_of(res) -> str:
    return res.stderr if hasattr(res, "stderr") else res.output


# -- verify ---------------------------------------------------------------------------------
def test_verify_equivalent_exits_0_with_one_line(models, tmp_path):
    out = tmp_path / "reports" / "ok.json"
    assert invoke("verify", models["a"], models["a"], "--json", out).exit_code == 2  # no folder is made
    assert not out.parent.exists()
    out.parent.mkdir()
    res = invoke("verify", models["a"], models["a"], "--json", out)
    assert res.exit_code == 0, res.output
    lines = res.stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("equivalent: 2 output(s), 2 batch(es)")
    d = json.loads(out.read_text())
    assert d["ok"] is True and d["max_abs"] == 0.0
    assert [o["name"] for o in d["outputs"]] == ["features", "logits"]


def test_verify_not_equivalent_exits_1_naming_the_output(models, tmp_path):
    out = tmp_path / "fail.json"
    res = invoke("verify", models["a"], models["b"], "--json", out, "--seed", "3", "--batches", "3")
    assert res.exit_code == 1, res.output
    assert res.stdout.startswith("NOT equivalent")
    assert "output 'logits' max abs" in res.stdout
    table = res.stdout.splitlines()[2:]
    assert table[0].split()[:2] == ["output", "ok"] and table[1].split()[:2] == ["logits", "NO"]
    d = json.loads(out.read_text())
    assert d["ok"] is False and d["worst_output"] == "logits" and d["batches"] == 3 and d["seed"] == 3
    logits = d["outputs"][1]
    assert logits["ok"] is False and logits["worst_index"][1] == 2 and logits["n_failed"] > 0
    # a looser tolerance than the worst difference makes the same pair pass
    res = invoke("verify", models["a"], models["b"], "--seed", "3", "--batches", "3",
                 "--atol", str(logits["min_atol_to_pass"] * 1.01))
    assert res.exit_code == 0, res.output


def test_verify_with_npz_inputs(models, tmp_path):
    npz = tmp_path / "x.npz"
    np.savez(npz, x=np.zeros((2, 3, 8, 8), np.float32))  # zero input: logits 0 in both models
    res = invoke("verify", models["a"], models["b"], "--inputs", npz)
    assert res.exit_code == 0 and "(npz inputs)" in res.stdout
    np.savez(npz, wrong=np.zeros((2, 3, 8, 8), np.float32))
    res = invoke("verify", models["a"], models["b"], "--inputs", npz)
    assert res.exit_code == 2
    assert stderr_of(res).strip() == "netmorph: error: " + f"{npz}: no array for model input(s) 'x'"


def test_verify_mismatched_interfaces_exit_2(models, tmp_path):
    out = tmp_path / "exit2.json"
    res = invoke("verify", models["a"], models["renamed"], "--json", out)
    assert res.exit_code == 2
    err = stderr_of(res).strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith("netmorph: error: the models have different inputs: 'x' only in")
    d = json.loads(out.read_text())  # the JSON report is written on exit 2 too
    assert d["ok"] is False and d["exit_code"] == 2 and "netmorph: error: " + d["error"] == err[0]


def test_verify_truncated_file_subprocess_one_line_exit_2(models, tmp_path):
    exe = shutil.which("netmorph")
    cmd = [exe] if exe else [sys.executable, "-m", "netmorph.cli.main"]
    out = tmp_path / "exit2.json"
    p = subprocess.run(
        [*cmd, "verify", str(models["a"]), str(models["cut"]), "--json", str(out)],
        capture_output=True, text=True, timeout=120, env={**os.environ, "OMP_NUM_THREADS": "2"},
    )
    assert p.returncode == 2
    assert p.stdout == ""
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    assert lines[0].startswith("netmorph: error: ") and "cut.onnx" in lines[0]
    assert "truncated or corrupt" in lines[0]
    assert "Traceback" not in p.stderr
    assert json.loads(out.read_text())["exit_code"] == 2 and list(tmp_path.glob(".exit2.json*")) == []


def test_verify_missing_file_exit_2(models, tmp_path):
    res = invoke("verify", models["a"], tmp_path / "missing.onnx")
    assert res.exit_code == 2
    assert stderr_of(res).strip() == f"netmorph: error: {tmp_path / 'missing.onnx'}: no such file"


# -- inspect --------------------------------------------------------------------------------
def test_inspect_json_counts_ops_and_parameters(models):
    res = invoke("inspect", models["a"], "--json")
    assert res.exit_code == 0, res.output
    d = json.loads(res.stdout)
    assert d["ops"] == {"BatchNormalization": 1, "Conv": 1, "Flatten": 1, "Gemm": 1,
                        "GlobalAveragePool": 1, "Relu": 1}
    assert d["nodes"] == 6
    assert d["parameters"] == 6 * 3 * 3 * 3 + 4 * 6 + 4 + 4 * 6
    assert d["parameter_tensors"] == 7 and d["parameter_bytes"] == 4 * d["parameters"]
    assert d["opset"] == {"ai.onnx": 17}
    assert d["inputs"] == [{"name": "x", "type": "float[N,3,8,8]", "elem_type": "float",
                            "shape": ["N", 3, 8, 8]}]
    assert [o["name"] for o in d["outputs"]] == ["features", "logits"]
    assert d["outputs"][1]["shape"] == ["N", 4]


def test_inspect_text_and_torch_model(torch_cnn_onnx):
    res = invoke("inspect", torch_cnn_onnx)
    assert res.exit_code == 0, res.output
    text = res.stdout
    assert "inputs:\n  x  float[N,3,16,16]" in text
    g = netmorph.load(torch_cnn_onnx)
    assert f"parameters: {g.parameter_count():,} in" in text
    conv = sum(1 for n in g.nodes if n.op_type == "Conv")
    assert conv >= 2 and f"Conv {conv}" in text


def test_inspect_reports_unrecognised_structure(models, monkeypatch):
    def refuse(graph):
        raise StructureError("no stem: first node 'Conv_0' is not followed by a BatchNormalization")

    monkeypatch.setattr(netmorph, "recognise", refuse)
    res = invoke("inspect", models["a"])
    assert res.exit_code == 0
    assert res.stdout.strip().splitlines()[-1] == (
        "structure: not recognised (no stem: first node 'Conv_0' is not followed by a BatchNormalization)"
    )
    d = json.loads(invoke("inspect", models["a"], "--json").stdout)
    assert d["structure"] is None and d["structure_error"].startswith("no stem")


def test_inspect_truncated_file_exit_2(models):
    res = invoke("inspect", models["cut"], "--json")
    assert res.exit_code == 2
    err = stderr_of(res).strip().splitlines()
    assert len(err) == 1 and err[0].startswith("netmorph: error: ") and "cut.onnx" in err[0]
