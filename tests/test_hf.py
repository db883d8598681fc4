"""Hugging Face checkpoints in and out: grow a GPT-2 folder into a GPT-2 folder of the new config."""

from __future__ import annotations

import pytest
import torch
import transformer_models as tm
import transformers  # noqa: F401  (the [test] extra installs it)
from click.testing import CliRunner
from netmorph.cli.main import cli


def _gpt2(layers: int = 2):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=tm.VOCAB, n_embd=32, n_layer=layers, n_head=4, n_positions=16, n_inner=64,
                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, attn_implementation="eager",
                     initializer_range=tm.PEAKED, bos_token_id=0, eos_token_id=0)
    m = GPT2LMHeadModel(cfg)
    with torch.no_grad():  # non-zero biases: a bias put in the wrong place would show
        for n, p in m.named_parameters():
            if n.endswith("bias"):
                p.normal_(0, 0.1)
    return m


def _train(model, opt, steps: int = 2) -> float:
    ids = torch.randint(0, tm.VOCAB, (4, 8), generator=torch.Generator().manual_seed(1))
    model.train()
    for _ in range(steps):
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    model.eval()
    return float(loss)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A trained tiny GPT-2 saved with its AdamW state; the parent model and optimizer."""
    import netmorph.hf as nmh

    m = _gpt2()
    opt = torch.optim.AdamW(m.parameters(), lr=1e-3)
    _train(m, opt)
    path = tmp_path_factory.mktemp("hf") / "gpt2"
    nmh.write_folder(path, m, None, opt)
    return path, m, opt


def _logits(model, seed: int = 7):
    ids = torch.randint(0, tm.VOCAB, (3, 8), generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return model(input_ids=ids).logits


def test_grow_hf_deepen_reloads_as_the_same_class_and_keeps_training(folder, tmp_path):
    from transformers import AutoModelForCausalLM, GPT2LMHeadModel

    import netmorph.hf as nmh

    path, parent, parent_opt = folder
    out = tmp_path / "deeper"
    r = CliRunner().invoke(cli, ["grow-hf", str(path), "--pass", "deepen", "-o", str(out)])
    assert r.exit_code == 0, r.output
    child = AutoModelForCausalLM.from_pretrained(out).eval()
    assert type(child) is GPT2LMHeadModel and child.config.n_layer == 4
    p, c = _logits(parent), _logits(child)
    assert float((c - p).abs().max()) <= 1e-4 * float(p.abs().max())
    assert (out / nmh.folder.LINEAGE).is_file()
    opt = nmh.load_optimizer(out, child)
    assert type(opt) is torch.optim.AdamW and opt.defaults["lr"] == parent_opt.defaults["lr"]
    # a kept tensor keeps its moments; the zeroed output projection of an inserted layer starts at 0
    kept = opt.state[child.transformer.h[0].attn.c_attn.weight]["exp_avg"]
    assert torch.equal(kept, parent_opt.state[parent.transformer.h[0].attn.c_attn.weight]["exp_avg"])
    assert float(kept.abs().max()) > 0
    new = opt.state[child.transformer.h[1].attn.c_proj.weight]
    assert float(new["exp_avg"].abs().max()) == 0 and float(new["exp_avg_sq"].abs().max()) == 0
    before = [q.detach().clone() for q in child.parameters()]
    loss = _train(child, opt, steps=1)
    assert loss == loss
    assert any(not torch.equal(a, q) for a, q in zip(before, child.parameters(), strict=True))


def test_grow_widen_mlp_in_python_updates_the_config(folder):
    import netmorph.hf as nmh

    _, parent, parent_opt = folder
    g = nmh.grow(parent, "widen-mlp", optimizer=parent_opt, factor=2)
    assert type(g.model) is type(parent) and g.model.config.n_inner == 128 and g.model.config.n_layer == 2
    assert g.report["config"]["n_inner"] == [64, 128]
    p, c = _logits(parent), _logits(g.model)
    assert float((c - p).abs().max()) <= 1e-4 * float(p.abs().max())
    assert g.model.transformer.h[0].mlp.c_fc.weight in g.optimizer.state


def test_grow_hf_refuses_an_existing_output_and_a_folder_without_safetensors(folder, tmp_path):
    path, _, _ = folder
    out = tmp_path / "taken"
    out.mkdir()
    (out / "mine.txt").write_text("keep")
    r = CliRunner().invoke(cli, ["grow-hf", str(path), "--pass", "deepen", "-o", str(out)])
    assert r.exit_code == 2 and "already exists" in r.output and (out / "mine.txt").read_text() == "keep"
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "config.json").write_text((path / "config.json").read_text())
    r = CliRunner().invoke(cli, ["grow-hf", str(bare), "--pass", "deepen", "-o", str(tmp_path / "o")])
    assert r.exit_code == 2 and "safetensors" in r.output and not (tmp_path / "o").exists()
