"""Llama-style decoders beyond the pass matrix: the family line of ``inspect``, the refusals that
say why, and a tiny Llama that keeps learning a copy task while ``netmorph.torch`` grows it
(2 -> 4 layers, hidden 64 -> 128) and carries its AdamW state."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from netmorph.cli.main import cli
from netmorph.passes import get_pass
from transformer_models import VOCAB, exported, llama_style, need

import netmorph.torch as nmt
from netmorph import onnx_io
from netmorph.errors import PreconditionError
from netmorph.structure.transformer import recognise_transformer

T = 7  # the copy task's length: differs from every width, head count and group size below


def _batch(rng, n=32):
    """Predict the previous token (one attention step of a causal model)."""
    x = torch.from_numpy(rng.integers(1, VOCAB, (n, T)).astype(np.int64))
    y = torch.cat([torch.zeros(n, 1, dtype=torch.int64), x[:, :-1]], 1)
    return x, y


def _loss_of(model, x, y):
    return torch.nn.functional.cross_entropy(model(x)[:, 1:].reshape(-1, VOCAB), y[:, 1:].reshape(-1))


def _eval(model):
    x, y = _batch(np.random.default_rng(99), n=64)
    was = model.training
    model.eval()
    with torch.no_grad():
        out = float(_loss_of(model, x, y))
    model.train(was)
    return out


def _train(model, opt, steps, rng):
    model.train()
    losses = []
    for _ in range(steps):
        x, y = _batch(rng)
        loss = _loss_of(model, x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


@pytest.fixture
def one_thread():
    """Train on one thread: a tiny model's steps are slower on a busy machine with more."""
    was = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(was)


def test_llama_keeps_learning_through_growth_with_its_optimizer_state(one_thread):
    need("llama")
    torch.manual_seed(0)
    model = llama_style("llama", hidden=64, heads=4, kv_heads=2, head_dim=16, mlp=96, init=0.02).train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    rng = np.random.default_rng(0)
    start = _eval(model)
    _train(model, opt, 60, rng)
    trained = _eval(model)
    assert trained < 0.7 * start  # it learns the task
    example = _batch(np.random.default_rng(1), n=2)[0]
    g = nmt.grow(model, example, ["deepen", get_pass("widen-hidden", factor=2)], optimizer=opt)
    child, copt = g.module, g.optimizer
    st = recognise_transformer(g.graph)
    assert (len(st.layers), st.hidden, st.heads, st.kv_heads) == (4, 128, 8, 4)
    assert abs(_eval(child) - trained) <= 1e-4 * max(1.0, trained)  # the loss is unchanged at the growth step
    # the optimizer state came along: every child parameter that descends from a parent one has
    # Adam moments (a fresh optimizer would have none), the zeroed projections start at zero
    state = copt.state
    carried = [p for p in child.parameters() if p in state and int(state[p]["step"]) > 0]
    assert len(carried) >= len(list(model.parameters())) - 2
    after = _train(child, copt, 40, np.random.default_rng(2))
    assert _eval(child) < trained  # the grown model keeps learning
    assert np.mean(after[-10:]) < np.mean(after[:10])


def test_family_line_and_refusals():
    need("llama")
    st = recognise_transformer(onnx_io.load(exported("llama", "dynamo")))
    assert st.style == "Llama-style"
    assert st.family_line() == "Llama-style: 2 layers, RMSNorm, SwiGLU 48→80, 6 heads / 2 KV groups, rotary"
    assert (st.kv_heads, st.gated, st.rotary, st.norm_kind) == (2, "SwiGLU", True, "rms")
    r = CliRunner().invoke(cli, ["inspect", str(exported("llama", "dynamo"))])
    assert r.exit_code == 0, r.output
    assert "structure: Llama-style: 2 layers, RMSNorm, SwiGLU 48→80" in r.output
    gemma = recognise_transformer(onnx_io.load(exported("gemma", "dynamo")))
    assert gemma.gated == "GeGLU" and gemma.style == "Llama-style"
    g = onnx_io.load(exported("llama", "dynamo"))
    with pytest.raises(PreconditionError, match="rotary"):
        get_pass("widen-hidden", factor=2, heads_mode="size").apply(g)
    with pytest.raises(PreconditionError, match="multiple of 2 heads"):
        get_pass("add-heads", heads=1).apply(g)


@pytest.fixture(scope="module")
def stream_out(tmp_path_factory):
    """Two GPT blocks whose output is the hidden stream (no head), as HF base models export."""
    from torch import nn
    from transformer_models import GPTBlock

    class Body(nn.Module):
        def __init__(self):
            super().__init__()
            self.tok = nn.Embedding(VOCAB, 32)
            self.blocks = nn.ModuleList([GPTBlock(), GPTBlock()])

        def forward(self, ids):
            h = self.tok(ids)
            for b in self.blocks:
                h = b(h)
            return h

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("stream") / "body.onnx"
    dims = {0: torch.export.Dim("N", min=2, max=16), 1: torch.export.Dim("T", min=2, max=16)}
    torch.onnx.export(Body().eval(), (torch.randint(0, VOCAB, (2, 6)),), str(path), dynamo=True,
                      input_names=["x"], output_names=["y"], dynamic_shapes={"ids": dims})
    return onnx_io.load(path)


def test_deepen_keeps_the_output_name_and_widen_hidden_refuses_a_stream_output(stream_out):
    child, rep = get_pass("deepen").apply(stream_out)
    assert [v.name for v in child.outputs] == ["y"]
    assert len(recognise_transformer(child).layers) == 4
    x = np.random.default_rng(0).integers(0, VOCAB, (3, 5)).astype(np.int64)
    import onnxruntime as ort

    runs = [ort.InferenceSession(onnx_io.to_onnx(g).SerializeToString(), providers=["CPUExecutionProvider"])
            .run(["y"], {"x": x})[0] for g in (stream_out, child)]
    np.testing.assert_allclose(runs[1], runs[0], rtol=1e-5, atol=1e-6)
    with pytest.raises(PreconditionError, match="is the hidden stream itself"):
        get_pass("widen-hidden", factor=2).apply(stream_out)
