"""Llama checkpoints in and out (GQA, RMSNorm with non-unit weights, SwiGLU, rotary), and issue
19's done-when: a tiny Llama grown 2 -> 4 layers and 64 -> 128 hidden inside its training loop
keeps learning a copy task, its AdamW state carried, the loss unchanged at the growth step."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
import transformer_models as tm
from click.testing import CliRunner
from netmorph.cli.main import cli


def _llama():
    """LlamaForCausalLM: hidden 64, 4 heads in 2 KV groups of size 16, SwiGLU 96, random norms."""
    tm.need("llama")
    return tm.llama_style("llama", hidden=64, heads=4, kv_heads=2, head_dim=16, mlp=96).model.eval()


def _ids(seed: int, length: int = 8, n: int = 3):
    return torch.randint(0, tm.VOCAB, (n, length), generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    import netmorph.hf as nmh

    torch.manual_seed(0)
    m = _llama()
    opt = torch.optim.AdamW(m.parameters(), lr=1e-3)
    ids = _ids(1, n=4)
    for _ in range(2):
        m(input_ids=ids, labels=ids).loss.backward()
        opt.step()
        opt.zero_grad()
    path = tmp_path_factory.mktemp("hf") / "llama"
    nmh.write_folder(path, m, None, opt)
    return path, m.eval(), opt


def test_grow_hf_llama_deepen_widen_mlp_add_heads(folder, tmp_path):
    from transformers import AutoModelForCausalLM, LlamaForCausalLM

    import netmorph.hf as nmh

    path, parent, parent_opt = folder
    out = tmp_path / "grown"
    r = CliRunner().invoke(cli, ["grow-hf", str(path), "--pass", "deepen", "--pass", "widen-mlp",
                                 "--factor", "2", "--pass", "add-heads", "--heads", "4", "-o", str(out)])
    assert r.exit_code == 0, r.output
    assert "num_hidden_layers 2 -> 4" in r.output and "num_attention_heads 4 -> 8" in r.output
    child = AutoModelForCausalLM.from_pretrained(out).eval()
    cfg = child.config
    assert type(child) is LlamaForCausalLM
    assert (cfg.num_hidden_layers, cfg.intermediate_size, cfg.hidden_size) == (4, 192, 64)
    assert (cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim) == (8, 2, 16)
    with torch.no_grad():
        for length in (8, 11):  # the export's length and another: the class computes its own rotary
            ids = _ids(5, length)
            p, c = parent(input_ids=ids).logits, child(input_ids=ids).logits
            assert float((c - p).abs().max()) <= 1e-4 * float(p.abs().max())
    opt = nmh.load_optimizer(out, child)
    kept = opt.state[child.model.layers[0].input_layernorm.weight]["exp_avg"]
    assert torch.equal(kept, parent_opt.state[parent.model.layers[0].input_layernorm.weight]["exp_avg"])
    assert float(opt.state[child.model.layers[1].mlp.down_proj.weight]["exp_avg"].abs().max()) == 0
    ids = _ids(1, n=4)
    child.train()
    loss = child(input_ids=ids, labels=ids).loss
    loss.backward()
    opt.step()
    assert np.isfinite(loss.item())


def _example():
    spec = importlib.util.spec_from_file_location(
        "grow_llama_copy_task", Path(__file__).parents[1] / "examples" / "grow_llama_copy_task.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_tiny_llama_keeps_learning_the_copy_task_through_growth():
    """examples/grow_llama_copy_task.py: netmorph.torch.grow returns a LlamaForCausalLM."""
    tm.need("llama")
    was = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        r = _example().run(before=40, after=30)
    finally:
        torch.set_num_threads(was)
    assert r["model"] == "LlamaForCausalLM" and r["same_class"]
    assert r["config"] == {"num_hidden_layers": [2, 4], "hidden_size": [64, 128],
                           "intermediate_size": [96, 192], "num_attention_heads": [4, 8],
                           "num_key_value_heads": [2, 4]}
    h = r["held_out_loss"]
    assert h["before_growth"] < 0.5 * h["start"]  # it learned before the growth
    assert abs(h["after_growth"] - h["before_growth"]) <= 1e-4 * h["before_growth"]  # unchanged at growth
    assert h["end"] < h["before_growth"]  # and keeps learning after it
    after = r["train_loss_after"]
    assert np.mean(after[-10:]) < np.mean(after[:10])
    assert r["carried_state"] >= 2 * 9 - 2  # the kept tensors (and their clones) carry AdamW moments
