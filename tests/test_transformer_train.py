"""Training grown transformers: a GPT learns a copy task and keeps learning after growth; the
ViT trains with ``netmorph train`` (AdamW, cosine) on CIFAR-10 images."""

from __future__ import annotations

import json

import numpy as np
import torch
from click.testing import CliRunner
from netmorph.cli.main import cli
from netmorph.passes import get_pass
from transformer_models import VOCAB, exported

import netmorph
from netmorph import onnx_io
from netmorph.lowering import write_back
from netmorph.structure.transformer import recognise_transformer


def _copy_batch(rng, n=32, t=6):
    """Predict the previous token (a copy task a causal model learns with one attention step)."""
    x = torch.from_numpy(rng.integers(1, VOCAB, (n, t)).astype(np.int64))
    y = torch.cat([torch.zeros(n, 1, dtype=torch.int64), x[:, :-1]], 1)
    return x, y


def _train(gm, steps, seed, lr=3e-3):
    rng = np.random.default_rng(seed)
    opt = torch.optim.AdamW(gm.parameters(), lr=lr)
    gm.train()
    losses = []
    for _ in range(steps):
        x, y = _copy_batch(rng)
        loss = torch.nn.functional.cross_entropy(gm(x)[:, 1:].reshape(-1, VOCAB), y[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def _loss(gm, seed=99):
    x, y = _copy_batch(np.random.default_rng(seed), n=64)
    with torch.no_grad():
        return float(torch.nn.functional.cross_entropy(gm.eval()(x)[:, 1:].reshape(-1, VOCAB),
                                                       y[:, 1:].reshape(-1)))


def test_gpt_learns_copy_then_grows_and_keeps_learning():
    torch.manual_seed(0)
    g = onnx_io.load(exported("gpt", "dynamo"))
    gm = netmorph.lower(g)
    start = _loss(gm)
    _train(gm, 80, seed=0)
    trained_loss = _loss(gm)
    assert trained_loss < 0.6 * start  # it learns the task
    trained = write_back(g, gm)
    # grow the trained model: the child computes the same function, so the same loss
    for name, opts in (("deepen", {}), ("widen-hidden", {"factor": 2})):
        trained, _ = get_pass(name, **opts).apply(trained)
    assert len(recognise_transformer(trained).layers) == 4
    child = netmorph.lower(trained)
    assert abs(_loss(child) - trained_loss) <= 1e-4 * max(1.0, trained_loss)
    _train(child, 40, seed=1, lr=1e-3)
    assert _loss(child) < trained_loss  # the grown model keeps learning


def test_vit_trains_with_the_cli(tmp_path):
    spec = "synthetic:256"  # the same data on every machine
    model = exported("vit", "torchscript")
    out = tmp_path / "vit_trained.onnx"
    r = CliRunner().invoke(cli, ["train", str(model), "--data", spec, "--epochs", "1", "--optimizer", "adamw",
                                 "--schedule", "cosine", "--lr", "1e-3", "--weight-decay", "0.05",
                                 "--batch-size", "64", "--device", "cpu", "-o", str(out), "--json", "-q"])
    assert r.exit_code == 0, r.output
    m = json.loads(r.output.strip().splitlines()[-1])
    assert np.isfinite(m["train_loss"]) and 0.0 <= m["test_err"] <= 1.0
    before, after = onnx_io.load(model), onnx_io.load(out)
    assert recognise_transformer(after).hidden == 32
    changed = [v.name for v in before.parameters
               if not np.array_equal(v.const.array, after.value(v.name).const.array)]
    assert len(changed) > 10  # conv patches, class token, positions, norms, projections all trained
