"""``netmorph grow`` with the CNN morphs, and ``netmorph train --data synthetic`` at the model's size."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner
from cnn_models import ARCHS, export, randomised
from netmorph.cli.main import cli
from torch import nn

import netmorph


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def err_lines(res) -> list[str]:
    text = res.stderr if hasattr(res, "stderr") else res.output
    return [ln for ln in text.strip().splitlines() if ln.strip()]


@pytest.fixture(scope="module")
def mbv3(tmp_path_factory):
    torch.manual_seed(0)
    return export(randomised(ARCHS["mobilenet_v3"]()), tmp_path_factory.mktemp("cli") / "mbv3.onnx", "ts")


def test_grow_widen_then_deepen_writes_a_verified_child(mbv3, tmp_path):
    out, rep = tmp_path / "grown.onnx", tmp_path / "grown.json"
    res = invoke("grow", mbv3, "--pass", "widen", "--factor", "1.5", "--mapping", "round-robin",
                 "--pass", "deepen", "--init", "fresh", "-o", out, "--report", rep)
    assert res.exit_code == 0, res.output
    d = json.loads(rep.read_text())
    widen, deepen = d["passes"]
    assert widen["pass"] == "widen" and widen["verification"]["ok"]
    assert all(x["new"] == -(-x["old"] * 3 // 2) for x in widen["details"] if "producers" in x)
    copies = [x for x in deepen["details"] if x["morph"] == "unit-copy"]
    assert copies and all(x["init"] == "fresh" and x["zeroed"].startswith("zeroed ") for x in copies)
    assert any(v["kind"] == "gather-divide" for v in widen["lineage"].values())
    assert netmorph.load(out).parameter_count() == deepen["params_after"]


def test_grow_kernel_refusal_is_one_line_exit_2_and_no_file(mbv3, tmp_path):
    out = tmp_path / "x.onnx"
    res = invoke("grow", mbv3, "--pass", "grow-kernel", "--kernel", "4", "--level", "all", "-o", out)
    assert res.exit_code == 2
    (line,) = err_lines(res)
    assert line.startswith("netmorph: error: ")
    assert "grows to 4x4 only if 4 exceeds 3 by an even amount" in line
    assert not out.exists()


def test_widen_of_the_logits_is_refused(mbv3, tmp_path):
    g = netmorph.load(mbv3)
    head = [n for n in g.nodes if n.op_type == "Gemm"][-1]
    res = invoke("grow", mbv3, "--pass", "widen", "--node", head.name, "-o", tmp_path / "x.onnx")
    assert res.exit_code == 2
    (line,) = err_lines(res)
    assert line.startswith("netmorph: error: ") and "group reaches the graph output 'y'" in line


def test_train_synthetic_follows_the_model_input(tmp_path):
    """A 1x24x24, 4-class model trains on --data synthetic without a hand-made .npz."""
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                      nn.Linear(4, 4)).eval()
    p = tmp_path / "m.onnx"
    torch.onnx.export(m, torch.randn(2, 1, 24, 24), str(p), dynamo=False, input_names=["x"],
                      output_names=["y"], dynamic_axes={"x": {0: "N"}, "y": {0: "N"}})
    out = tmp_path / "t.onnx"
    res = invoke("train", p, "--data", "synthetic:40", "--epochs", "1", "--batch-size", "20", "-o", out,
                 "-q", "--json")
    assert res.exit_code == 0, res.output
    assert out.exists()
    from netmorph.data import parse_data_spec

    splits = parse_data_spec("synthetic:12").load(netmorph.load(p))
    assert tuple(splits[0].image_shape) == (1, 24, 24)
    assert splits[0].num_classes == 4


def test_generic_morphs_do_not_import_torch(mbv3, tmp_path):
    from test_light_install import run_without_torch

    out = tmp_path / "g.onnx"
    r = run_without_torch("grow", str(mbv3), "--pass", "widen", "--pass", "deepen", "--pass", "grow-kernel",
                          "--level", "all", "-o", str(out), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert out.is_file() and "TRIED_TORCH=False" in r.stderr
