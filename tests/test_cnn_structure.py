"""Residual units, units and stages, and channel groups, found in real exports."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from cnn_models import ARCHS, export, randomised
from torch import nn

import netmorph
from netmorph.errors import PreconditionError
from netmorph.ir import Graph, TensorType
from netmorph.structure import ActivationView, anatomy, find_residual_units, match_residual
from netmorph.structure.channels import find_channel_group


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    d = tmp_path_factory.mktemp("cnn_structure")
    out = {}
    for arch in ("preact_resnet", "bottleneck_resnet", "mobilenet_v2", "mobilenet_v3", "convnext", "vgg",
                 "grouped_plain"):
        torch.manual_seed(0)
        out[arch] = netmorph.load(export(randomised(ARCHS[arch]()), d / f"{arch}.onnx", "ts"))
    return out


def test_residual_units_and_shortcut_kinds(exports):
    units = find_residual_units(exports["bottleneck_resnet"])
    assert [u.shortcut_kind for u in units] == ["projection", "identity", "projection", "identity"]
    assert all([n.op_type for n in u.branch].count("Conv") == 3 for u in units)
    assert [n.op_type for n in units[0].shortcut] == ["Conv"]  # BN folded into the conv
    pre = find_residual_units(exports["preact_resnet"])
    assert len(pre) == 4 and pre[0].branch[0].op_type == "BatchNormalization"  # BN-ReLU-conv branch
    mb = find_residual_units(exports["mobilenet_v3"])
    assert len(mb) == 2
    ops = [n.op_type for n in mb[0].branch]
    assert {"HardSwish", "HardSigmoid", "Mul", "GlobalAveragePool"} <= set(ops) or "ReduceMean" in ops
    cx = find_residual_units(exports["convnext"])
    assert len(cx) == 2 and {"LayerNormalization", "Transpose", "MatMul"} <= {n.op_type for n in cx[0].branch}


def test_match_residual_says_why_not():
    """A bias add, an x + x**3 inside a GELU, and a side input (a mask) read by a branch."""
    g = Graph("t")
    x = g.add_input("x", TensorType.float32(2, 4))
    mask = g.add_input("mask", TensorType.float32(2, 4))
    cube = g.create_node("Mul", [x, x], name="sq")
    cube2 = g.create_node("Mul", [cube.output, x], name="cube")
    gelu_add = g.create_node("Add", [x, cube2.output], name="gelu_add")
    w = g.add_parameter("w", np.eye(4, dtype=np.float32))
    mm = g.create_node("MatMul", [gelu_add.output, w], name="mm")
    masked = g.create_node("Add", [mm.output, mask], name="masked")
    res = g.create_node("Add", [gelu_add.output, masked.output], name="res")
    g.insert_before(None, cube, cube2, gelu_add, mm, masked, res)
    g.outputs.append(res.output)
    view = ActivationView(g)
    assert "holds no layer" in match_residual(gelu_add, view)
    unit = match_residual(res, view)
    assert unit.shortcut_kind == "identity" and unit.entry is gelu_add.output
    assert [n.name for n in unit.branch] == ["mm", "masked"] and unit.side_inputs == [mask]
    assert [u.name for u in find_residual_units(g)] == ["res"]


def test_anatomy_stages(exports):
    a = anatomy(exports["mobilenet_v2"])
    kinds = [[u.kind for u in s.units] for s in a.stages]
    assert ["plain", "residual"] in kinds  # the project conv and the next unit share a stage
    assert a.counts()["residual"] == 2
    v = anatomy(exports["vgg"])
    assert [(s.width, s.spatial) for s in v.stages] == [(8, (32, 32)), (16, (16, 16))]
    assert [len(s.units) for s in v.stages] == [2, 2]
    assert [n.op_type for n in v.head][:2] == ["MaxPool", "Flatten"]
    assert "stage1  8 ch 32x32" in v.summary()


def test_channel_group_through_residual_stream_and_se(exports):
    g = exports["mobilenet_v2"]
    a = anatomy(g)
    stage = next(s for s in a.stages if [u.kind for u in s.units] == ["plain", "residual"] and s.width == 16)
    grp = find_channel_group(g, stage.units[0].conv)
    # the stream: the switch's project conv and the residual branch's project conv both produce it
    assert len(grp.producers) == 2 and grp.width == 16
    assert {n.op_type for n in grp.through} >= {"Add"}
    mid = find_channel_group(g, stage.units[1].residual.branch[0])  # expand conv: through the dw conv
    assert any(n.op_type == "Conv" and int(n.attr("group", 1)) > 1 for n in mid.through)
    se = exports["mobilenet_v3"]
    unit = find_residual_units(se)[0]
    grp = find_channel_group(se, unit.branch[0])  # the expanded width, tied to the SE gate
    assert len(grp.producers) == 2  # expand conv and SE excite conv (Mul join)


def test_channel_group_refusals_name_the_node(exports):
    g = exports["grouped_plain"]
    with pytest.raises(PreconditionError, match=r"stops at '/4/Conv' \(Conv\): a grouped conv with 2 input"):
        find_channel_group(g, g.node("/0/0.0/Conv"))
    head = [n for n in g.nodes if n.op_type == "Gemm"][-1]
    with pytest.raises(PreconditionError, match="graph output"):
        find_channel_group(g, head)


def test_flatten_linear_consumer_reads_every_position(exports):
    g = exports["vgg"]
    last_conv = [n for n in g.nodes if n.op_type == "Conv"][-1]
    grp = find_channel_group(g, last_conv)
    ((gemm, axis, inner),) = grp.consumers
    assert gemm.op_type == "Gemm" and inner == 8 * 8


def test_inspect_shows_units_and_stages(exports, tmp_path):
    from click.testing import CliRunner
    from netmorph.cli.main import cli

    p = netmorph.save(exports["bottleneck_resnet"], tmp_path / "b.onnx")
    res = CliRunner().invoke(cli, ["inspect", str(p)])
    assert res.exit_code == 0, res.output
    assert "units: 3 stages, 5 units (1 plain, 4 residual)" in res.output
    assert "residual[projection] 7-node branch" in res.output or "residual[projection]" in res.output
    res = CliRunner().invoke(cli, ["inspect", str(p), "--json"])
    import json

    d = json.loads(res.output)
    assert d["units"]["counts"] == {"plain": 1, "residual": 4}


def test_plain_nn_graph_without_conv_has_no_anatomy():
    m = nn.Sequential(nn.Flatten(), nn.Linear(12, 3)).eval()
    g = Graph("lin")
    assert m is not None
    x = g.add_input("x", TensorType.float32(1, 3, 2, 2))
    f = g.create_node("Flatten", [x], name="f")
    g.insert_before(None, f)
    g.outputs.append(f.output)
    with pytest.raises(netmorph.errors.StructureError, match="no Conv"):
        anatomy(g)
