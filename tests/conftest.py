"""Shared fixtures: small real models built in code (no network, no shipped binaries)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

# Keep the suite predictable on the 2-core CI machine.
os.environ.setdefault("OMP_NUM_THREADS", "2")

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture(scope="session")
def torch_cnn_onnx(tmp_path_factory) -> Path:
    """A small torch CNN (conv/BN/ReLU/pool/residual add/linear) exported by the TorchScript exporter."""
    import torch
    from torch import nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
            self.bn1 = nn.BatchNorm2d(8)
            self.conv2 = nn.Conv2d(8, 8, 3, padding=1, bias=False)
            self.bn2 = nn.BatchNorm2d(8)
            self.pool = nn.MaxPool2d(2)
            self.fc = nn.Linear(8, 10)

        def forward(self, x):
            y = torch.relu(self.bn1(self.conv1(x)))
            y = torch.relu(y + self.bn2(self.conv2(y)))
            y = self.pool(y)
            return self.fc(torch.flatten(torch.mean(y, dim=(2, 3), keepdim=True), 1))

    torch.manual_seed(0)
    m = Net().eval()
    path = tmp_path_factory.mktemp("torchcnn") / "cnn.onnx"
    torch.onnx.export(
        m, torch.randn(2, 3, 16, 16), str(path), dynamo=False, input_names=["x"],
        output_names=["logits"], dynamic_axes={"x": {0: "N"}, "logits": {0: "N"}},
    )
    return path
