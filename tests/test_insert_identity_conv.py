"""``insert-identity-conv``: exact, verified by the PassManager, reachable from the CLI and TOML with no
registration of its own (its module is the whole of the pass)."""

from __future__ import annotations

import pytest
from hostile_util import invoke
from netmorph.passes import PASSES, PassManager, get_pass, list_passes

import netmorph
from netmorph.errors import NetmorphError
from netmorph.pipeline.spec import PipelineError, Stage


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    path = tmp_path_factory.mktemp("iic") / "p.onnx"
    netmorph.save(netmorph.build("plain", blocks=2, channels=(4, 8, 8), bn_stats=True, seed=2), path)
    return path


@pytest.mark.parametrize("kernel", [1, 3])
def test_identity_conv_is_exact_and_one_layer_deeper(plain, kernel):
    g = netmorph.load(plain)
    child, (rep,) = PassManager().run(g, [get_pass("insert-identity-conv", value="level2.block1.relu1",
                                                   kernel=kernel)])
    (added,) = rep.nodes_added
    conv = child.node(added)
    assert conv.op_type == "Conv" and conv.inputs[0].name == "level2.block1.relu1"
    assert conv.param(1).shape == (8, 8, kernel, kernel) and conv.attr("pads") == [kernel // 2] * 4
    assert rep.verification["ok"] and rep.verification["max_abs"] < 1e-5
    assert rep.params_after - rep.params_before == 8 * 8 * kernel * kernel
    assert rep.lineage.records[conv.inputs[1].name].kind == "new"
    assert netmorph.verify(g, child, batches=1).ok


def test_registered_by_discovery_with_its_declared_options():
    assert "insert-identity-conv" in PASSES
    row = next(r for r in list_passes() if r["name"] == "insert-identity-conv")
    assert [(o["name"], o["required"], o["max"]) for o in row["options"]] == [("value", True, None),
                                                                              ("kernel", False, 31)]


def test_cli_flags_come_from_the_declaration(plain, tmp_path):
    out = tmp_path / "c.onnx"
    res = invoke("grow", plain, "--pass", "insert-identity-conv", "--value", "level1.block2.relu1",
                 "--kernel", "3", "-o", out)
    assert res.exit_code == 0, res.output
    assert sum(n.op_type == "Conv" for n in netmorph.load(out).nodes) == 7
    v = ["--value", "level1.block2.relu1"]
    cases = [([*v, "--kernel", "4"], "needs an odd kernel"), ([*v, "--kernel", "33"], "kernel must be <= 31"),
             (["--value", ""], "option value is empty"), ([], "option value is required"),
             ([*v, "--factor", "2"], "option --factor does not apply to pass(es) insert-identity-conv")]
    for args, msg in cases:
        bad = tmp_path / "bad.onnx"
        res = invoke("grow", plain, "--pass", "insert-identity-conv", *args, "-o", bad)
        lines = res.output.strip().splitlines()
        assert res.exit_code == 2 and msg in res.output and len(lines) == 1, res.output
        assert not bad.exists()


def test_toml_stage_options_checked_by_the_same_declaration():
    Stage(1, grow="insert-identity-conv", options={"value": "v", "kernel": 3})
    with pytest.raises(PipelineError, match="kernel must be <= 31"):
        Stage(1, grow="insert-identity-conv", options={"value": "v", "kernel": 301})
    with pytest.raises(NetmorphError, match="no option 'width'"):
        get_pass("insert-identity-conv", value="v", width=3)


def test_refuses_an_unknown_value(plain):
    with pytest.raises(NetmorphError, match="nope"):
        get_pass("insert-identity-conv", value="nope").apply(netmorph.load(plain))
