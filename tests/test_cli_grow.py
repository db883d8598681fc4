"""``netmorph grow`` and ``netmorph passes``: outputs, reports, one-line refusals, exit codes."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner
from netmorph.cli.main import cli
from test_passes_models import conv_graph

import netmorph


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("grow")
    plain = netmorph.save(netmorph.build("plain", blocks=2, channels=(4, 8, 8), bn_stats=True), d / "p7.onnx")
    res = netmorph.save(netmorph.build("resnet", blocks=2, channels=(4, 8, 8), residual_ratio=0.5,
                                       bn_stats=True), d / "r14.onnx")
    grouped = netmorph.save(conv_graph(cin=4, cout=4, group=2), d / "grouped.onnx")
    return {"plain": plain, "resnet": res, "grouped": grouped}


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def one_line_error(res, code=2) -> str:
    assert res.exit_code == code, res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("netmorph: error: "), res.output
    return lines[0]


@pytest.mark.parametrize(
    "model,args,msg",
    [
        ("plain", ["--pass", "conv-split", "--node", "nope"], "no node named 'nope'"),
        ("grouped", ["--pass", "conv-split", "--node", "conv"], "grouped conv (group=2)"),
        ("plain", ["--pass", "deepen-level", "--level", "4"], "level 4 is out of range"),
        ("plain", ["--pass", "deepen-level", "--level", "two"], "level must be an integer or 'all'"),
        ("plain", ["--pass", "fly"], "no pass named 'fly'"),
        ("plain", ["--pass", "restore-bn", "--node", "x"], "option --node does not apply"),
        ("plain", ["--pass", "insert-identity-bn"], "option value is required (--value"),
        ("plain", ["--pass", "duplicate-block", "--block", "level1.block2"], "is the ResNet morph"),
        ("resnet", ["--pass", "duplicate-block", "--block", "level9.block1"], "no block named"),
        ("plain", ["--pass", "deepen", "--repeat", "0"], "--repeat must be at least 1"),
    ],
)
def test_bad_input_is_one_line_exit_2(models, tmp_path, model, args, msg):
    out = tmp_path / "out.onnx"
    line = one_line_error(invoke("grow", models[model], *args, "-o", out))
    assert msg in line
    assert not out.exists()


def test_missing_model_file(tmp_path):
    res = invoke("grow", tmp_path / "nope.onnx", "--pass", "deepen", "-o", tmp_path / "o.onnx")
    line = one_line_error(res)
    assert "nope.onnx" in line


def test_precondition_errors_name_the_model(models, tmp_path):
    line = one_line_error(invoke("grow", models["plain"], "--pass", "conv-split", "--node", "nope",
                                 "-o", tmp_path / "o.onnx"))
    assert line.startswith(f"netmorph: error: {models['plain']}: ")


def test_grow_writes_child_report_and_table(models, tmp_path):
    out, rep = tmp_path / "r26.onnx", tmp_path / "r26.json"
    res = invoke("grow", models["resnet"], "--pass", "deepen", "-o", out, "--report", rep)
    assert res.exit_code == 0, res.output
    head = res.output.splitlines()[0].split()
    assert head == ["step", "pass", "depth", "params", "max", "abs", "max", "rel", "residual", "time", "s"]
    assert "14->26" in res.output and f"wrote {out}" in res.output
    d = json.loads(rep.read_text())
    (p,) = d["passes"]
    assert d["verified"] and p["pass"] == "deepen" and p["params_after"] > p["params_before"]
    assert len(p["solves"]) == 6 and all(s["method"] == "identity" or s["exact"] for s in p["solves"])
    assert p["verification"]["ok"] and p["verification"]["max_abs"] < 1e-5
    assert netmorph.recognise(netmorph.load(out)).depth == 26
    assert netmorph.verify(models["resnet"], out, batches=1).ok


def test_duplicate_block_and_repeat(models, tmp_path):
    out = tmp_path / "dup.onnx"
    res = invoke("grow", models["resnet"], "--pass", "duplicate-block", "--block", "level2.block2",
                 "--repeat", "2", "-o", out)
    assert res.exit_code == 0, res.output
    s = netmorph.recognise(netmorph.load(out))
    assert s.blocks_per_level == [2, 4, 2] and s.depth == 18
    g = netmorph.load(out)
    (mul,) = [n for n in g.nodes if n.name.startswith("level2.block2.dup.") and n.op_type == "Mul"]
    assert float(mul.param(1)) == 0.5


def test_identity_passes_from_the_cli(models, tmp_path):
    out = tmp_path / "id.onnx"
    res = invoke("grow", models["plain"], "--pass", "insert-identity-prelu", "--value", "level2.block1.relu1",
                 "-o", out)
    assert res.exit_code == 0, res.output
    g = netmorph.load(out)
    assert g.node("level2.block1.relu1.prelu_id").op_type == "PRelu"
    rep = netmorph.verify(models["plain"], out, batches=1, rtol=0, atol=1e-6)
    assert rep.ok and rep.max_abs <= 1e-6


def test_no_verify_must_be_explicit_and_warns(models, tmp_path):
    out = tmp_path / "nv.onnx"
    res = invoke("grow", models["plain"], "--pass", "deepen", "--no-verify", "-o", out)
    assert res.exit_code == 0
    assert "warning: --no-verify" in res.output and out.exists()
    assert "7->10" in res.output


def test_passes_lists_contracts_and_options():
    res = invoke("passes")
    assert res.exit_code == 0
    for name in ("conv-split", "insert-identity-bn", "insert-identity-prelu", "duplicate-block", "restore-bn",
                 "deepen-level", "deepen"):
        assert f"\n{name}: " in "\n" + res.output
    assert "contract: exact" in res.output and "--solver exact|optgd|lsq: kernel solver" in res.output
    rows = json.loads(invoke("passes", "--json").output)
    assert {r["name"] for r in rows} >= {"conv-split", "deepen"}


def test_real_subprocess(models, tmp_path):
    """The installed entry point, in a real process (progress bar silent off a terminal)."""
    out = tmp_path / "p10.onnx"
    proc = subprocess.run(
        [sys.executable, "-m", "netmorph.cli.main", "grow", str(models["plain"]), "--pass", "deepen",
         "-o", str(out)], capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == "" and "7->10" in proc.stdout
    x = np.random.default_rng(0).normal(size=(2, 3, 32, 32)).astype(np.float32)
    rep = netmorph.verify(models["plain"], out, inputs={"input": x})
    assert rep.ok


def test_progress_bar_draws_on_a_terminal_only():
    import io

    from netmorph.cli.grow_cmd import _Progress

    class Tty(io.StringIO):
        def isatty(self):
            return True

    tty, pipe = Tty(), io.StringIO()
    for stream in (tty, pipe):
        bar = _Progress(2, stream)
        bar.start_step(1, 2, None)
        bar("deepen", 3, 12, "level1.block2.conv1")
        bar.close()
    drawn = tty.getvalue()
    assert "[2/2] deepen 3/12" in drawn and "item level1.block2.conv1" in drawn
    assert pipe.getvalue() == ""
