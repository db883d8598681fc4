"""Hugging Face checkpoints in and out: grow a GPT-2 folder into a GPT-2 folder of the new config.

The parent keeps GPT-2's default dropout (0.1: a check that ran it in train mode would fail) and
fresh all-ones LayerNorm weights (the exporter stores equal initializers once: the tensors must be
placed by the data flow, not by value); its biases are random so a misplaced bias shows."""

from __future__ import annotations

import copy

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
                     attn_implementation="eager", initializer_range=tm.PEAKED, bos_token_id=0, eos_token_id=0)
    m = GPT2LMHeadModel(cfg)
    with torch.no_grad():  # non-zero biases: a bias put in the wrong place would show
        for n, p in m.named_parameters():
            if n.endswith("bias"):
                p.normal_(0, 0.1)
    return m


def _ids(seed: int = 1, n: int = 4):
    return torch.randint(0, tm.VOCAB, (n, 8), generator=torch.Generator().manual_seed(seed))


def _train(model, opt, steps: int = 2, dropout: bool = True) -> float:
    ids = _ids()
    model.train(dropout)
    for _ in range(steps):
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    model.eval()
    return loss.item()


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A trained tiny GPT-2 saved (in safetensors shards) with its AdamW state; the parent model and
    optimizer."""
    import netmorph.hf as nmh

    m = _gpt2()
    opt = torch.optim.AdamW(m.parameters(), lr=1e-3)
    _train(m, opt)
    path = tmp_path_factory.mktemp("hf") / "gpt2"
    nmh.write_folder(path, m, None, opt, max_shard_size="40KB")
    assert len(list(path.glob("model-*.safetensors"))) > 1
    assert (path / "model.safetensors.index.json").is_file()
    return path, m, opt


def _logits(model, seed: int = 7, length: int = 8):
    ids = torch.randint(0, tm.VOCAB, (3, length), generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return model(input_ids=ids).logits


def _close(child, parent):
    for length in (8, 13):  # the export's length and another one
        p, c = _logits(parent, length=length), _logits(child, length=length)
        assert float((c - p).abs().max()) <= 1e-4 * float(p.abs().max())


def test_grow_hf_deepen_reloads_as_the_same_class_and_steps_as_the_parent(folder, tmp_path):
    from transformers import AutoModelForCausalLM, GPT2LMHeadModel

    import netmorph.hf as nmh

    path, parent, parent_opt = folder
    out = tmp_path / "deeper"
    r = CliRunner().invoke(cli, ["grow-hf", str(path), "--pass", "deepen", "-o", str(out)])
    assert r.exit_code == 0, r.output
    child = AutoModelForCausalLM.from_pretrained(out).eval()
    assert type(child) is GPT2LMHeadModel and child.config.n_layer == 4 and child.config.n_inner == 64
    _close(child, parent.eval())
    assert (out / nmh.folder.LINEAGE).is_file()
    opt = nmh.load_optimizer(out, child)
    assert type(opt) is torch.optim.AdamW and opt.defaults["lr"] == parent_opt.defaults["lr"]
    # a kept tensor keeps its moments; the zeroed output projection of an inserted layer starts at 0
    kept = opt.state[child.transformer.h[0].attn.c_attn.weight]["exp_avg"]
    assert torch.equal(kept, parent_opt.state[parent.transformer.h[0].attn.c_attn.weight]["exp_avg"])
    assert float(kept.abs().max()) > 0
    new = opt.state[child.transformer.h[1].attn.c_proj.weight]
    assert float(new["exp_avg"].abs().max()) == 0 and float(new["exp_avg_sq"].abs().max()) == 0
    # one more AdamW step (no dropout) on the same batch: an inserted layer is an identity with a
    # zero output projection, so every kept tensor gets the parent's gradient and moves as it does
    twin = copy.deepcopy(parent)
    twin_opt = torch.optim.AdamW(twin.parameters(), lr=1e-3)
    twin_opt.load_state_dict(parent_opt.state_dict())
    _train(twin, twin_opt, steps=1, dropout=False)
    before = child.transformer.h[2].mlp.c_fc.weight.detach().clone()
    _train(child, opt, steps=1, dropout=False)
    for cl, pl in ((0, 0), (2, 1)):
        for name in ("attn.c_attn.weight", "mlp.c_fc.weight", "ln_1.weight"):
            a = child.transformer.h[cl].get_parameter(name)
            b = twin.transformer.h[pl].get_parameter(name)
            assert torch.allclose(a, b, rtol=0, atol=2e-6), name
    assert not torch.equal(before, child.transformer.h[2].mlp.c_fc.weight)
    assert float(child.transformer.h[1].attn.c_proj.weight.detach().abs().max()) > 0  # the new layer trains


def test_widen_mlp_and_widen_hidden_keep_the_head_tied_and_keep_training(folder):
    import netmorph.hf as nmh
    from netmorph.errors import VerificationError
    from netmorph.hf.grow import family_of

    _, parent, parent_opt = folder
    g = nmh.grow(parent, ["widen-mlp", "widen-hidden"], optimizer=parent_opt, factor=2)
    cfg = g.model.config
    assert type(g.model) is type(parent)
    assert (cfg.n_layer, cfg.n_inner, cfg.n_embd, cfg.n_head) == (2, 256, 64, 8)
    assert g.report["config"]["n_embd"] == [32, 64]
    # HyperCloning's 1/n of the head's repeated inputs moves into the final LayerNorm's scale, so the
    # head stays the table's clone: the grown folder keeps one tied tensor
    assert cfg.tie_word_embeddings is True and g.report["untied"] is None
    assert g.model.lm_head.weight.data_ptr() == g.model.transformer.wte.weight.data_ptr()
    _close(g.model, parent.eval())
    # the rebuilt model's own forward check takes the tolerances too: its logits are the parent's at
    # rounding level, within the default bound (1e-4 relative), not bit-identical
    family = family_of(parent)
    assert 0 < nmh.check_forward(parent, g.model, family, 0, "GPT2LMHeadModel") <= 1e-4
    with pytest.raises(VerificationError, match=r"logits differ .*> atol 0 \+ rtol 0 \*"):
        nmh.check_forward(parent, g.model, family, 0, "GPT2LMHeadModel", rtol=0, atol=0)
    opt = g.optimizer
    m = g.model
    for p in (m.lm_head.weight, m.transformer.wte.weight, m.transformer.h[0].mlp.c_fc.weight):
        assert any(p is q for grp in opt.param_groups for q in grp["params"])
        assert float(opt.state[p]["exp_avg_sq"].abs().max()) > 0  # carried, not fresh
    loss = _train(g.model, opt, steps=1)
    assert loss == loss


def test_grow_hf_exact_tolerances_fail_a_rounding_level_child_and_write_nothing(folder, tmp_path,
                                                                               monkeypatch):
    """``--rtol 0 --atol 0`` ask ONNX Runtime for a bit-identical child; ``widen-hidden``'s differs
    at float rounding level (max abs 4.5e-6 here), so the run is exit 1, one error line naming the
    failed verification, nothing written. The same command without the options (the contract's
    calibrated bound) writes the folder: the tolerance alone fails it."""
    from transformers import AutoModelForCausalLM

    path, parent, _ = folder
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)  # a relative -o: the whole verdict fits the error line's bound
    command = ["grow-hf", str(path), "--pass", "widen-hidden", "-o", "wider"]
    r = CliRunner().invoke(cli, [*command, "--rtol", "0", "--atol", "0"])
    assert r.exit_code == 1, r.output
    assert isinstance(r.exception, SystemExit) and "Traceback" not in r.output
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("netmorph:")]
    assert errors == [r.stderr.strip().splitlines()[-1]], r.stderr  # one line, the last one
    line = errors[0]
    assert line.startswith("netmorph: error: wider not written: pass 1 (widen-hidden()): child differs from "
                           "its parent: output 'linear' max abs "), line
    assert "> atol 0 and > rtol 0 x |a|" in line and "min atol to pass" in line, line
    assert "--debug" not in line, line  # the whole verdict, not cut to the line's bound
    assert list(work.iterdir()) == []  # no OUT_DIR, no temporary folder beside it
    r = CliRunner().invoke(cli, command)
    assert r.exit_code == 0, r.output
    assert "n_embd 32 -> 64" in r.stdout and [p.name for p in work.iterdir()] == ["wider"]
    _close(AutoModelForCausalLM.from_pretrained(work / "wider").eval(), parent.eval())


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
    assert len(r.output.strip().splitlines()) == 1
    r = CliRunner().invoke(cli, ["grow-hf", str(path), "--pass", "deepen", "--rtol", "-1",
                                 "-o", str(tmp_path / "o")])
    assert r.exit_code == 2 and r.output.strip() == "netmorph: error: --rtol must be >= 0, got -1"
    assert not (tmp_path / "o").exists()
