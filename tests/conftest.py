"""Shared fixtures: small real models built in code (no network, no shipped binaries)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

# Keep the suite predictable on the 2-core CI machine.
os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> str:
    """A 16x16 synthetic task stored as .npz (small enough to train 8 tiny stages in seconds)."""
    from netmorph.data import make_synthetic

    train, test = make_synthetic(96, 40, size=16, seed=3)
    path = tmp_path_factory.mktemp("data") / "tiny.npz"
    np.savez(path, x_train=train.images, y_train=train.labels, x_test=test.images, y_test=test.labels)
    return f"npz:{path}"


@pytest.fixture(scope="session")
def small(tmp_path_factory) -> Path:
    """A real PlainNet (depth 7, 4 channels, 16x16 inputs, 3 classes) written by netmorph."""
    import netmorph

    path = tmp_path_factory.mktemp("small") / "small.onnx"
    netmorph.save(netmorph.build("plain", levels=3, blocks=2, channels=(4, 4, 4), classes=3,
                                 input_shape=(3, 16, 16)), path)
    return path


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
