"""Round trip of models exported by ``torch.onnx.export`` (TorchScript and dynamo exporters).

ONNX → IR → ONNX must pass the full ONNX checker, keep every proto field (normalised
comparison) and give bit-identical ONNX Runtime outputs, through files (``netmorph.load`` +
``netmorph.save``) and in memory (``to_onnx(from_onnx(m))``).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

import netmorph
from netmorph.onnx_io import from_onnx, to_onnx
from netmorph.onnx_io.compare import proto_differences


class PlainCNN(nn.Module):
    """conv/BN/ReLU, max and average pooling, global pooling, flatten, linear head."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
            nn.AvgPool2d(2),
        )
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))

    def forward(self, x):
        return self.head(self.features(x))


class ResidualCNN(nn.Module):
    """Residual adds (identity and 1x1 projection), depthwise conv, concat, mean head, softmax."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False)
        self.dw_bn = nn.BatchNorm2d(8)
        self.pw = nn.Conv2d(8, 8, 1)
        self.proj = nn.Conv2d(8, 12, 1, stride=2, bias=False)
        self.down = nn.Conv2d(8, 12, 3, stride=2, padding=1)
        self.mix = nn.Conv2d(24, 12, 1)
        self.fc = nn.Linear(12, 5)

    def forward(self, x):
        y = self.stem(x)
        y = torch.relu(y + self.pw(torch.relu(self.dw_bn(self.dw(y)))))
        z = torch.relu(self.down(y)) + self.proj(y)
        z = self.mix(torch.cat([z, torch.relu(z)], dim=1))
        return torch.softmax(self.fc(z.mean(dim=(2, 3))), dim=-1)


def _randomised(model: nn.Module) -> nn.Module:
    """Eval mode with non-trivial BatchNorm statistics (so BN is not a no-op)."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.rand(m.num_features, generator=g) - 0.5)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(m.num_features, generator=g) - 0.5)
    return model.eval()


MODELS = {"plain": PlainCNN, "residual": ResidualCNN}
EXPORTERS = ["torchscript", "dynamo"]


@pytest.fixture(scope="module", params=[(m, e) for m in MODELS for e in EXPORTERS], ids=lambda p: "-".join(p))
def exported(request, tmp_path_factory) -> tuple[Path, nn.Module, str]:
    name, exporter = request.param
    torch.manual_seed(0)
    model = _randomised(MODELS[name]())
    path = tmp_path_factory.mktemp(f"{name}-{exporter}") / "model.onnx"
    x = torch.randn(2, 3, 16, 16)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if exporter == "dynamo":
            torch.onnx.export(
                model, (x,), str(path), dynamo=True, input_names=["x"], output_names=["y"],
                external_data=True, verbose=False,
            )
        else:
            torch.onnx.export(
                model, (x,), str(path), dynamo=False, input_names=["x"], output_names=["y"],
                dynamic_axes={"x": {0: "N"}, "y": {0: "N"}},
            )
    return path, model, exporter


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def test_file_roundtrip(exported, tmp_path):
    path, module, exporter = exported
    original = onnx.load(path)  # reads the dynamo exporter's external data, if any
    out = tmp_path / "rt.onnx"
    netmorph.save(netmorph.load(path), out)
    back = onnx.load(out)
    onnx.checker.check_model(back, full_check=True)
    assert proto_differences(original, back) == []
    x = np.random.default_rng(0).standard_normal((2, 3, 16, 16)).astype(np.float32)
    ref = _run(original, x)
    np.testing.assert_array_equal(_run(back, x), ref)
    with torch.no_grad():
        np.testing.assert_allclose(ref, module(torch.from_numpy(x)).numpy(), rtol=1e-4, atol=1e-5)


def test_in_memory_roundtrip(exported):
    path, _, _ = exported
    original = onnx.load(path)
    back = to_onnx(from_onnx(original))
    onnx.checker.check_model(back, full_check=True)
    assert proto_differences(original, back) == []
    x = np.random.default_rng(1).standard_normal((2, 3, 16, 16)).astype(np.float32)
    np.testing.assert_array_equal(_run(back, x), _run(original, x))


def test_external_data_save_roundtrip(exported, tmp_path):
    path, _, _ = exported
    out = tmp_path / "ext.onnx"
    netmorph.save(netmorph.load(path), out, external_data=True)
    assert (tmp_path / "ext.onnx.data").stat().st_size > 0
    reloaded = netmorph.load(out)
    original = onnx.load(path)
    back = to_onnx(reloaded)
    assert proto_differences(original, back) == []
    x = np.random.default_rng(2).standard_normal((2, 3, 16, 16)).astype(np.float32)
    np.testing.assert_array_equal(_run(back, x), _run(original, x))


def test_ir_view_of_export_is_consistent(exported):
    """The imported graph satisfies the IR invariants and knows its convolutions' weights."""
    path, module, _ = exported
    g = netmorph.load(path)
    g.check()
    convs = g.find_nodes("Conv")
    n_convs = sum(isinstance(m, nn.Conv2d) for m in module.modules())
    assert len(convs) == n_convs
    assert all(c.param(1) is not None and c.param(1).ndim == 4 for c in convs)
    n_params = sum(p.numel() for p in module.parameters()) + sum(
        b.numel() for n, b in module.named_buffers() if "running" in n
    )
    # Exporters fold BN into conv or keep it; either way no weights are invented or lost beyond that.
    assert 0 < g.parameter_count() <= n_params + 64
