"""Calibrated tolerance: differences judged against the reference model's own rounding noise."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import netmorph
from netmorph.verification import verify_models
from netmorph.verification.calibrate import ulp_perturbed
from netmorph.verification.options import DEFAULT_K, parse_tolerance_mode


def bn_cnn(*, delta: float = 0.0, fold: bool = False, seed: int = 0) -> onnx.ModelProto:
    """Three conv-BN-ReLU layers (16 ch), GAP, FC; ``delta`` is added to one weight of conv 1;
    ``fold`` writes the same function with each BN folded into its conv (weight and bias)."""
    rng = np.random.default_rng(seed)
    nodes, inits, cur, cin = [], [], "x", 3
    for k in range(3):
        w = (rng.standard_normal((16, cin, 3, 3)) * np.sqrt(2 / (9 * cin))).astype(np.float32)
        if k == 1:
            w[3, 2, 1, 1] += delta
        g, b = rng.uniform(0.5, 1.5, 16), rng.normal(0, 0.1, 16)
        m, v = rng.normal(0, 0.2, 16), rng.uniform(0.5, 1.5, 16)
        if fold:
            s = g / np.sqrt(v + 1e-5)
            inits += [numpy_helper.from_array((w * s[:, None, None, None]).astype(np.float32), f"w{k}"),
                      numpy_helper.from_array((b - m * s).astype(np.float32), f"cb{k}")]
            nodes.append(helper.make_node("Conv", [cur, f"w{k}", f"cb{k}"], [f"n{k}"], pads=[1] * 4))
        else:
            inits.append(numpy_helper.from_array(w, f"w{k}"))
            inits += [numpy_helper.from_array(t.astype(np.float32), f"{n}{k}")
                      for n, t in zip("gbmv", (g, b, m, v), strict=True)]
            nodes += [helper.make_node("Conv", [cur, f"w{k}"], [f"c{k}"], pads=[1] * 4),
                      helper.make_node("BatchNormalization", [f"c{k}", f"g{k}", f"b{k}", f"m{k}", f"v{k}"],
                                       [f"n{k}"], epsilon=1e-5)]
        nodes.append(helper.make_node("Relu", [f"n{k}"], [f"r{k}"]))
        cur, cin = f"r{k}", 16
    inits.append(numpy_helper.from_array((rng.standard_normal((10, 16)) * 0.3).astype(np.float32), "fc"))
    nodes += [helper.make_node("GlobalAveragePool", [cur], ["p"]), helper.make_node("Flatten", ["p"], ["f"]),
              helper.make_node("Gemm", ["f", "fc"], ["logits"], transB=1)]
    graph = helper.make_graph(nodes, "bncnn",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 16, 16])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_tolerance_mode_parsing():
    assert parse_tolerance_mode("fixed") is None and parse_tolerance_mode("calibrated") == DEFAULT_K
    assert parse_tolerance_mode("calibrated:4") == 4.0
    for bad in ("calibrated:0", "calibrated:x", "loose"):
        with pytest.raises(netmorph.errors.NetmorphError, match="tolerance must be"):
            parse_tolerance_mode(bad)


def test_ulp_perturbation_moves_every_finite_weight_by_one_ulp():
    m = bn_cnn()
    p = ulp_perturbed(m, seed=0)
    for t0, t1 in zip(m.graph.initializer, p.graph.initializer, strict=True):
        a, b = numpy_helper.to_array(t0), numpy_helper.to_array(t1)
        ulps = np.abs(a.view(np.int32).astype(np.int64) - b.view(np.int32).astype(np.int64))
        assert np.all((ulps == 1) | ((a == 0) & (b != a)) | ((a != 0) & (ulps == 1)))


def test_weight_change_fails_calibrated_but_bn_fold_passes():
    a = bn_cnn()
    changed = verify_models(a, bn_cnn(delta=1e-3), tolerance="calibrated")
    folded = verify_models(a, bn_cnn(fold=True), tolerance="calibrated")
    (o,) = changed.outputs
    assert not changed.ok and o.rule == "calibrated" and o.noise > 0 and o.noise_ratio > DEFAULT_K
    assert o.atol == pytest.approx(DEFAULT_K * o.noise)
    line = changed.failure_line()
    assert "x noise" in line and "ratio" in line and changed.tolerance == f"calibrated:{DEFAULT_K:g}"
    assert set(changed.calibration["probes"]) == {"optimised", "ulp-weights"}
    assert verify_models(a, bn_cnn(fold=True)).ok  # BN folded vs kept also passes the fixed default
    (f,) = folded.outputs
    assert folded.ok and f.max_abs > 0 and f.noise_ratio <= DEFAULT_K
    # the fold's difference is rounding; the weight change's is far above it
    assert o.noise_ratio > 4 * f.noise_ratio
    d = changed.to_dict()
    assert d["outputs"][0]["noise_ratio"] == pytest.approx(o.noise_ratio)
    assert d["tolerance"] == f"calibrated:{DEFAULT_K:g}"


def _resnet50(path) -> None:
    """ResNet-50 as torchvision lays it out (bottlenecks [3, 4, 6, 3], 64..2048 channels, 23.5M
    parameters), built here so no weights are downloaded; BN statistics randomised; 64x64 input."""
    import torch
    from torch import nn

    class Bottleneck(nn.Module):
        def __init__(self, cin: int, width: int, stride: int):
            super().__init__()
            cout = width * 4
            self.conv1, self.bn1 = nn.Conv2d(cin, width, 1, bias=False), nn.BatchNorm2d(width)
            self.conv2, self.bn2 = nn.Conv2d(width, width, 3, stride, 1, bias=False), nn.BatchNorm2d(width)
            self.conv3, self.bn3 = nn.Conv2d(width, cout, 1, bias=False), nn.BatchNorm2d(cout)
            self.down = None
            if stride != 1 or cin != cout:
                self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

        def forward(self, x):
            y = torch.relu(self.bn1(self.conv1(x)))
            y = torch.relu(self.bn2(self.conv2(y)))
            y = self.bn3(self.conv3(y))
            return torch.relu(y + (x if self.down is None else self.down(x)))

    layers, cin = [], 64
    for i, (n, w) in enumerate(zip((3, 4, 6, 3), (64, 128, 256, 512), strict=True)):
        for j in range(n):
            layers.append(Bottleneck(cin, w, 2 if (i and not j) else 1))
            cin = w * 4

    class ResNet50(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
                                      nn.MaxPool2d(3, 2, 1))
            self.layers = nn.Sequential(*layers)
            self.fc = nn.Linear(cin, 10)

        def forward(self, x):
            return self.fc(torch.flatten(torch.mean(self.layers(self.stem(x)), dim=(2, 3)), 1))

    torch.manual_seed(0)
    m = ResNet50().eval()
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, nn.BatchNorm2d):
                mod.running_mean.normal_(0, 0.1)
                mod.running_var.uniform_(0.5, 1.5)
                mod.weight.uniform_(0.5, 1.0)
                mod.bias.normal_(0, 0.1)
    torch.onnx.export(m, torch.randn(1, 3, 64, 64), str(path), dynamo=False, input_names=["x"],
                      output_names=["logits"], dynamic_axes={"x": {0: "N"}, "logits": {0: "N"}})


@pytest.mark.slow
def test_exact_split_deep_in_resnet50_passes_calibrated_the_grow_default(tmp_path):
    from netmorph.passes import PassManager, get_pass

    path = tmp_path / "r50.onnx"
    _resnet50(path)
    parent = netmorph.load(path)
    assert sum(int(np.prod(v.const.shape)) for v in parent.parameters) > 23_000_000
    node = "/layers/layers.4/conv2/Conv"  # bottleneck 5 of 16: 12 blocks (37 convs) follow it
    assert PassManager.EXACT_TOLERANCE.startswith("calibrated")
    child, (rep,) = PassManager().run(parent, [get_pass("conv-split", node=node)])
    v = rep.verification
    assert v["ok"] and v["tolerance"] == f"calibrated:{DEFAULT_K:g}" and 0 <= v["noise_ratio"] <= DEFAULT_K
    assert v["batches"] == 2  # the same default policy as `netmorph verify`
    # that conv's weights scaled by 1 + 1e-2 are caught by the same rule (1 + 1e-3 measured 8.2x: borderline)
    bad = child.clone()
    conv_b = bad.node(node + ".b")
    bad.set_parameter(conv_b.inputs[1], conv_b.param(1) * np.float32(1 + 1e-2))
    r = verify_models(parent, bad, tolerance="calibrated")
    assert not r.ok and r.outputs[0].noise_ratio > 4 * DEFAULT_K


def mlp(*, delta: float = 0.0) -> onnx.ModelProto:
    """x[N, 8] -> MatMul -> Add -> Tanh -> MatMul -> Softmax: every op has a float64 CPU kernel."""
    rng = np.random.default_rng(3)
    w1, w2 = rng.standard_normal((8, 16)).astype(np.float32), rng.standard_normal((16, 4)).astype(np.float32)
    w2[2, 1] += delta
    g = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w1"], ["h0"]), helper.make_node("Add", ["h0", "b1"], ["h1"]),
         helper.make_node("Tanh", ["h1"], ["h"]), helper.make_node("MatMul", ["h", "w2"], ["z"]),
         helper.make_node("Softmax", ["z"], ["p"], axis=-1)],
        "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8])],
        [helper.make_tensor_value_info("p", TensorProto.FLOAT, ["N", 4])],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(np.full(16, 0.1, np.float32), "b1"),
         numpy_helper.from_array(w2, "w2")],
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def test_float64_probe_runs_where_ort_has_double_kernels_and_is_skipped_for_conv():
    r = verify_models(mlp(), mlp(), tolerance="calibrated")
    assert r.ok and set(r.calibration["probes"]) == {"optimised", "ulp-weights", "float64"}
    assert 0 < r.calibration["probes"]["float64"]["p"] < 1e-6  # float32 rounding of a softmax in [0, 1]
    assert r.calibration["skipped"] == {}
    assert not verify_models(mlp(), mlp(delta=1e-3), tolerance="calibrated").ok
    cnn = verify_models(bn_cnn(), bn_cnn(), tolerance="calibrated")
    assert "float64" not in cnn.calibration["probes"]
    assert cnn.calibration["skipped"]["float64"] == "ONNX Runtime's CPU provider has no float64 Conv"


def scalar_loss(*, delta: float = 0.0) -> onnx.ModelProto:
    """x[N, 4] -> MatMul -> ReduceMean to a 0-d output (a loss), ``delta`` added to one weight."""
    w = np.random.default_rng(4).standard_normal((4, 4)).astype(np.float32)
    w[1, 2] += delta
    g = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"]),
         helper.make_node("ReduceMean", ["y"], ["loss"], keepdims=0)],
        "loss", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("loss", TensorProto.FLOAT, [])], [numpy_helper.from_array(w, "w")])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def test_a_scalar_output_is_calibrated_and_judged():
    """A 0-d float output (a loss) has per-element noise like any other (the noise of a scalar was
    an IndexError in the calibration before): the same model passes, a moved weight fails."""
    same = verify_models(scalar_loss(), scalar_loss(), tolerance="calibrated")
    assert same.ok and same.outputs[0].shape == () and same.outputs[0].noise > 0
    moved = verify_models(scalar_loss(), scalar_loss(delta=1e-2), tolerance="calibrated")
    assert not moved.ok and moved.outputs[0].n_failed == 2  # one element per batch


@pytest.mark.parametrize("chunk", [1, 5, 64])
def test_blockwise_comparison_and_noise_equal_the_whole_array_ones(chunk, monkeypatch):
    """The comparison and the noise are computed in blocks of ``CHUNK`` elements; a verification
    with blocks of 1, 5 or 64 elements gives the report of one block per output (the default size
    holds these outputs whole), NaN positions, worst element and statistics included."""
    from netmorph.verification import cache, compare

    def reports():
        out = []
        for a, b in ((mlp(), mlp()), (mlp(), mlp(delta=1e-3)), (bn_cnn(), bn_cnn(fold=True)),
                     (scalar_loss(), scalar_loss(delta=1e-2))):
            cache.clear()  # the noise is measured again, in blocks of this size
            r = verify_models(a, b, tolerance="calibrated", batch_size=3).to_dict()
            r.pop("seconds")
            r["calibration"].pop("seconds")
            out.append(r)
        return out

    whole = reports()
    monkeypatch.setattr(compare, "CHUNK", chunk)
    assert reports() == whole
    assert [r["ok"] for r in whole] == [True, False, True, False]
