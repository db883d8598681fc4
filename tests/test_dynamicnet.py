"""DynamicNet builder and ``netmorph new``: paper depths, parameter counts, validity, determinism."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from click.testing import CliRunner
from netmorph.cli.main import cli

import netmorph
from netmorph.dynamicnet import ConfigError

PLAIN_DEPTHS = {2: 7, 3: 10, 5: 16, 9: 28, 17: 52, 33: 100}  # paper Table 1(a): 3n + 1
RESNET_DEPTHS = {1: 8, 2: 14, 4: 26, 8: 50, 16: 98}  # paper Table 1(b): 6n + 2
IMAGENET_PLAIN_DEPTHS = {2: 10, 3: 14, 5: 22, 9: 38, 17: 70}  # paper §6: 4n + 2


def weighted_layers(model: onnx.ModelProto) -> int:
    """Convs that are not 1x1 (shortcut projections) plus fully connected layers, read from the proto."""
    n = 0
    for node in model.graph.node:
        if node.op_type == "Gemm":
            n += 1
        elif node.op_type == "Conv":
            k = next(a.ints for a in node.attribute if a.name == "kernel_shape")
            n += list(k) != [1, 1]
    return n


def expected_params(family: str, n: int, widths=(16, 32, 64), classes=10, cin=3, r=1.0) -> int:
    """Parameter count from first principles (BN: scale, bias, mean, var per channel)."""
    def conv_bn(i, o, k):
        return i * o * k * k + 4 * o

    total = 0
    if family == "resnet":
        total += conv_bn(cin, widths[0], 3)  # stem
        cin = widths[0]
    for c in widths:
        if family == "plain":
            total += conv_bn(cin, c, 3) + (n - 1) * conv_bn(c, c, 3)
        else:
            total += conv_bn(cin, c, 3) + conv_bn(c, c, 3) + conv_bn(cin, c, 1)  # switch block
            total += (n - 1) * (2 * conv_bn(c, c, 3) + (1 if r != 1.0 else 0))
        cin = c
    return total + widths[-1] * classes + classes


def run_ort(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"input": x})[0]


@pytest.mark.parametrize("n,depth", sorted(PLAIN_DEPTHS.items()))
def test_plain_depth_and_params(n, depth):
    g = netmorph.build("plain", blocks=n)
    m = netmorph.to_onnx(g)
    assert weighted_layers(m) == depth
    assert g.parameter_count() == expected_params("plain", n)
    assert sum(1 for nd in m.graph.node if nd.op_type == "Conv") == 3 * n


@pytest.mark.parametrize("n,depth", sorted(RESNET_DEPTHS.items()))
@pytest.mark.parametrize("r", [0.5, 1.0])
def test_resnet_depth_and_params(n, depth, r):
    g = netmorph.build("resnet", blocks=n, residual_ratio=r)
    m = netmorph.to_onnx(g)
    assert weighted_layers(m) == depth
    assert g.parameter_count() == expected_params("resnet", n, r=r)
    muls = [nd for nd in m.graph.node if nd.op_type == "Mul"]
    assert len(muls) == (0 if r == 1.0 else 3 * (n - 1))
    assert len([nd for nd in m.graph.node if nd.op_type == "Add"]) == 3 * n


@pytest.mark.parametrize("n,depth", [(2, 10), (3, 14)])
def test_imagenet_plainnet(n, depth):
    g = netmorph.build("plain", levels=4, blocks=n, channels=(64, 128, 256, 512), input_shape=(3, 224, 224),
                       classes=1000)
    m = netmorph.to_onnx(g)
    assert weighted_layers(m) == depth == IMAGENET_PLAIN_DEPTHS[n]
    stem = g.node("stem.conv1")
    assert stem.attr("kernel_shape") == [7, 7] and stem.attr("strides") == [2, 2]
    assert g.node("stem.pool").op_type == "MaxPool"
    assert g.outputs[0].type.shape == ("N", 1000)
    assert g.value("level4.block1.relu1").type.shape == ("N", 512, 7, 7)


@pytest.mark.parametrize("family,kw", [
    ("plain", {"blocks": 2}), ("plain", {"blocks": 33}), ("resnet", {"blocks": 2, "residual_ratio": 0.5}),
    ("resnet", {"blocks": 1}), ("plain", {"blocks": 3, "stem": True, "softmax": True}),
])
def test_models_are_valid_and_run(family, kw):
    g = netmorph.build(family, bn_stats=True, **kw)
    m = netmorph.to_onnx(g)
    onnx.checker.check_model(m, full_check=True)
    assert [o.version for o in m.opset_import if o.domain in ("", "ai.onnx")] == [17]
    assert m.graph.input[0].name == "input"
    assert m.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "N"
    x = np.random.default_rng(1).standard_normal((3, 3, 32, 32)).astype(np.float32)
    y = run_ort(m, x)
    assert y.shape == (3, 10) and np.isfinite(y).all()
    if kw.get("softmax"):
        assert m.graph.output[0].name == "probs"
        np.testing.assert_allclose(y.sum(axis=1), 1.0, rtol=1e-5)
    else:
        assert m.graph.output[0].name == "logits"
        assert np.abs(y[0] - y[1]).max() > 1e-4  # depends on the input


def test_names_init_and_metadata():
    g = netmorph.build("resnet", blocks=3, residual_ratio=0.5, seed=3, bn_stats=True)
    for name in ("stem.conv1", "level2.block3.conv1", "level2.block3.bn1", "level2.block3.relu1",
                 "level2.block3.conv2", "level2.block3.bn2", "level2.block3.scale", "level2.block3.add",
                 "level2.block1.shortcut", "level2.block1.shortcut_bn", "tail.fc"):
        g.node(name)
    assert g.node("level2.block1.conv1").attr("strides") == [2, 2]
    assert g.node("level2.block1.shortcut").attr("strides") == [2, 2]
    assert g.node("level1.block1.conv1").attr("strides") == [1, 1]
    assert float(g.value("level2.block3.scale.r").const.array) == 0.5
    for p in ("scale", "bias", "mean", "var"):
        arr = g.value(f"level2.block3.bn1.{p}").const.array
        assert arr.shape == (32,) and np.ptp(arr) > 0  # non-trivial statistics
    assert len(g.node("level2.block3.conv1").inputs) == 2  # no conv bias
    w = g.value("level3.block2.conv1.weight").const.array
    assert abs(w.std() - np.sqrt(2 / (64 * 9))) < 0.05 * np.sqrt(2 / (64 * 9))  # He normal, fan_out
    meta = dict(g.metadata_props)
    assert meta["netmorph.family"] == "resnet" and meta["netmorph.blocks"] == "3"
    assert meta["netmorph.levels"] == "3" and float(meta["netmorph.residual_ratio"]) == 0.5
    plain = netmorph.build("plain", blocks=2)
    assert plain.node("level1.block1.conv1").param(1).shape == (16, 3, 3, 3)
    bn = plain.value("level1.block1.bn1.var").const.array
    assert np.all(bn == 1)  # default: identity statistics


def test_byte_identical_and_seeded(tmp_path):
    a, b, c = tmp_path / "a.onnx", tmp_path / "b.onnx", tmp_path / "c.onnx"
    netmorph.save(netmorph.build("resnet", blocks=2, residual_ratio=0.5, bn_stats=True), a)
    netmorph.save(netmorph.build("resnet", blocks=2, residual_ratio=0.5, bn_stats=True), b)
    netmorph.save(netmorph.build("resnet", blocks=2, residual_ratio=0.5, bn_stats=True, seed=1), c)
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()


@pytest.mark.parametrize("kw,msg", [
    ({"family": "dense"}, "unknown family"),
    ({"family": "plain", "residual_ratio": 0.5}, "resnet family only"),
    ({"family": "resnet", "residual_ratio": 1.5}, "residual_ratio must be in (0, 1]"),
    ({"family": "resnet", "blocks": 0}, "blocks must be >= 1"),
    ({"family": "plain", "channels": (16, 32)}, "channels has 2 entries but levels is 3"),
    ({"family": "plain", "input_shape": (3, 2, 2)}, "too small for 3 levels"),
    ({"family": "plain", "stem": "huge"}, "unknown stem"),
])
def test_bad_configs(kw, msg):
    family = kw.pop("family")
    with pytest.raises(ConfigError) as e:
        netmorph.build(family, **kw)
    assert msg in str(e.value)


def test_cli_new(tmp_path):
    out = tmp_path / "r.onnx"
    res = CliRunner().invoke(cli, ["new", "resnet", "--blocks", "2", "--residual-ratio", "0.5",
                                   "--channels", "8,16,32", "--input", "3x16x16", "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert "depth 14" in res.output
    g = netmorph.load(out)
    assert g.value("level3.block2.conv2.weight").const.shape == (32, 32, 3, 3)
    assert g.inputs[0].type.shape == ("N", 3, 16, 16)
    # same command, same bytes (the examples are reproducible)
    out2 = tmp_path / "r2.onnx"
    CliRunner().invoke(cli, ["new", "resnet", "--blocks", "2", "--residual-ratio", "0.5", "--channels",
                             "8,16,32", "--input", "3x16x16", "-o", str(out2)])
    assert out.read_bytes() == out2.read_bytes()


@pytest.mark.parametrize("args,msg", [
    (["plain", "--blocks", "0"], "blocks must be >= 1"),
    (["plain", "--blocks", "2", "--residual-ratio", "0.5"], "resnet family only"),
    (["plain", "--blocks", "2", "--channels", "16,x,64"], "--channels must be integers"),
    (["resnet", "--blocks", "2", "--input", "3x32"], "--input must be CxHxW"),
])
def test_cli_new_refuses_bad_values(tmp_path, args, msg):
    out = tmp_path / "bad.onnx"
    res = CliRunner().invoke(cli, ["new", *args, "-o", str(out)])
    assert res.exit_code == 2
    assert msg in res.output and res.output.count("\n") == 1
    assert not out.exists()


def test_shipped_examples_match_the_builder():
    """The shipped examples hold what ``netmorph new`` builds today (same nodes, same weights)."""
    from pathlib import Path

    ex = Path(__file__).resolve().parents[1] / "examples"
    for name, family, kw in [("plainnet7.onnx", "plain", {"blocks": 2}),
                             ("resnet8_r05.onnx", "resnet", {"blocks": 1, "residual_ratio": 0.5})]:
        shipped, built = netmorph.load(ex / name), netmorph.build(family, **kw)
        assert [repr(n) for n in shipped.nodes] == [repr(n) for n in built.nodes], f"examples/{name} is stale"
        assert shipped.metadata_props == built.metadata_props
        for a, b in zip(shipped.parameters, built.parameters, strict=True):
            assert a.name == b.name and np.array_equal(a.const.array, b.const.array)
