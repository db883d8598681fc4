"""timm ViT and DeiT grown by every transformer pass; Swin by widen-mlp and deepen; Swin's refusals.

The ViTs are timm's own modules (random weights, 2 layers, hidden 48, 3 heads of 16, 4x4 patch
grid): their fused Q/K/V is split as ``[B, T, 3, H, D]``, so the head count 3 equals the Q/K/V
count 3, and the head size 16 equals the token-grid length 16; ``vit-square`` has an MLP as wide
as the stream (48). Shape constants are rewritten by position (the axis roles of the data flow),
so each pass is exact. Each child is checked here in ONNX Runtime at two batch sizes (1e-4 of the
output's scale), lowered (1e-5 of ONNX Runtime) and trained one AdamW step.
"""

from __future__ import annotations

import re

import numpy as np
import onnxruntime as ort
import pytest
import torch
from click.testing import CliRunner
from netmorph.cli.main import cli
from netmorph.passes import PassManager, get_pass
from transformer_models import rel_error
from vit_models import exported, inputs

import netmorph
from netmorph import onnx_io
from netmorph.errors import PreconditionError
from netmorph.structure.transformer import recognise_transformer

PASSES = {"deepen": {}, "widen-mlp": {"factor": 2}, "add-heads": {"heads": 2}, "widen-hidden": {"factor": 2},
          "widen-hidden-size": {"factor": 2, "heads_mode": "size"}}
# every pass on the TorchScript ViT and DeiT (distillation token); the traps on the others: the
# dynamo ViT's constant 5-D split, an MLP as wide as the stream
CASES = [*(("vit", "torchscript", p) for p in PASSES),
         *(("deit", "torchscript", p) for p in list(PASSES)[:4]),
         ("vit", "dynamo", "add-heads"), ("vit", "dynamo", "widen-hidden"),
         ("vit-square", "torchscript", "widen-mlp"), ("vit-square", "torchscript", "widen-hidden")]


def _session(graph):
    model = onnx_io.to_onnx(graph).SerializeToString()
    return ort.InferenceSession(model, providers=["CPUExecutionProvider"])


def _shape(st):
    return len(st.layers), st.heads, st.head_size, st.hidden, st.mlp


def _lowers_and_trains(child, cs, x_np) -> None:
    """``child`` lowers within 1e-5 of its ONNX Runtime session ``cs`` and one AdamW step on the
    lowered module moves at least half of its parameters."""
    gm = netmorph.lower(child)
    x = torch.from_numpy(x_np)
    with torch.no_grad():
        assert rel_error(gm(x).numpy(), cs.run(None, {"x": x_np})[0]) <= 1e-5
    gm.train()
    w0 = {n: p.detach().clone() for n, p in gm.named_parameters()}
    opt = torch.optim.AdamW(gm.parameters(), lr=1e-3)
    loss = gm(x).logsumexp(-1).mean()
    loss.backward()
    opt.step()
    assert torch.isfinite(loss)
    assert sum(not torch.equal(p, w0[n]) for n, p in gm.named_parameters()) >= len(w0) // 2


EXPECT = {"deepen": lambda s: (4, 3, 16, 48, s[4]), "widen-mlp": lambda s: (2, 3, 16, 48, 2 * s[4]),
          "add-heads": lambda s: (2, 5, 16, 48, s[4]), "widen-hidden": lambda s: (2, 6, 16, 96, 2 * s[4]),
          "widen-hidden-size": lambda s: (2, 3, 32, 96, 2 * s[4])}


@pytest.mark.parametrize("kind,exporter,name", CASES)
def test_vit_grows_exactly(kind, exporter, name):
    parent = onnx_io.load(exported(kind, exporter))
    st = recognise_transformer(parent)
    before = _shape(st)
    assert before[:4] == (2, 3, 16, 48) and before[4] == (48 if kind == "vit-square" else 96)
    xs = inputs(kind, np.random.default_rng(3))
    child, (rep,) = PassManager(inputs=[{"x": x} for x in xs], record_depth=False).run(
        parent, [get_pass(name.removesuffix("-size"), **PASSES[name])])
    assert rep.verification["ok"]
    ps, cs = _session(parent), _session(child)
    for x in xs:
        ref, out = ps.run(None, {"x": x})[0], cs.run(None, {"x": x})[0]
        assert out.shape == ref.shape
        assert rel_error(out, ref) <= 1e-4, (kind, name, x.shape, rel_error(out, ref))
    assert _shape(recognise_transformer(child)) == EXPECT[name](before)
    _lowers_and_trains(child, cs, xs[0])


def test_head_split_is_rewritten_by_position():
    """The fused split [-1, 17, 3, 3, 16] becomes [-1, 17, 3, 5, 16] (add-heads 2): the Q/K/V 3 stays."""
    parent = onnx_io.load(exported("vit", "dynamo"))
    child, _ = get_pass("add-heads", heads=2).apply(parent)
    targets = []
    for n in child.nodes:
        if n.op_type == "Reshape" and n.inputs[1].const is not None:
            targets.append(n.inputs[1].const.array.tolist())
    assert [-1, 17, 3, 5, 16] in targets and [-1, 17, 3, 3, 16] not in targets, targets


SWIN_WHY = "Swin-style windows (the MLP reads the attention through a Reshape)"


@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
def test_swin_widen_mlp_grows_exactly(exporter):
    """Swin's MLP reads the attention through the window merge ``[B, H, W, C] -> [B, H*W, C]``: the
    layer is still read (its two stages of widths 16 and 32), and widen-mlp doubles every MLP."""
    parent = onnx_io.load(exported("swin", exporter))
    xs = inputs("swin", np.random.default_rng(3))
    assert len({x.shape[0] for x in xs}) == 2  # two batch sizes
    child, (rep,) = PassManager(inputs=[{"x": x} for x in xs], record_depth=False).run(
        parent, [get_pass("widen-mlp", factor=2)])
    assert rep.verification["ok"]
    from netmorph.ir.infer import infer_types

    for g in (parent, child):
        infer_types(g)
    before, after = recognise_transformer(parent), recognise_transformer(child)
    assert before.style == after.style == "Swin-style" and all(lay.relaid for lay in after.layers)
    assert [lay.up.in_features for lay in before.layers] == [16, 32]
    assert [lay.up.out_features for lay in after.layers] == [2 * lay.up.out_features for lay in before.layers]
    ps, cs = _session(parent), _session(child)
    for x in xs:
        ref, out = ps.run(None, {"x": x})[0], cs.run(None, {"x": x})[0]
        assert out.shape == ref.shape and rel_error(out, ref) <= 1e-4, (x.shape, rel_error(out, ref))
    _lowers_and_trains(child, cs, xs[0])


@pytest.mark.parametrize("name", ["add-heads", "widen-hidden", "transformer-deepen"])
def test_swin_refuses_with_one_line(name, tmp_path):
    """add-heads / widen-hidden would have to rewrite Swin's window partitions, per-head relative
    position tables and patch merges, and a copied layer would read the merged layout: each refuses
    in one bounded line naming the layer and why, exit 2, nothing written."""
    path = exported("swin", "torchscript")
    opts = PASSES.get(name, {})
    with pytest.raises(PreconditionError, match=re.escape(SWIN_WHY)):
        get_pass(name, **opts).apply(onnx_io.load(path))
    out = tmp_path / "grown.onnx"
    args = [f"--{k.replace('_', '-')}={v}" for k, v in opts.items()]
    r = CliRunner().invoke(cli, ["grow", str(path), "--pass", name, *args, "-o", str(out)])
    lines = r.output.strip().splitlines()
    assert r.exit_code == 2 and len(lines) == 1 and len(lines[0]) <= 300 and SWIN_WHY in lines[0], r.output
    assert "layer 0" in lines[0] and not out.exists()


def test_swin_deepen_copies_a_residual_unit():
    """deepen on Swin (whose layers the transformer deepen cannot copy) copies a residual unit
    through the shared residual matcher, its last linear zeroed: exact, lowered, trainable."""
    path = exported("swin", "torchscript")
    parent = onnx_io.load(path)
    xs = inputs("swin", np.random.default_rng(5))
    child, (rep,) = PassManager(inputs=[{"x": x} for x in xs], record_depth=False).run(
        parent, [get_pass("deepen")])
    assert rep.verification["ok"] and rep.details[0]["morph"] == "unit-copy"
    assert "zeroed" in rep.details[0]["zeroed"]
    ps, cs = _session(parent), _session(child)
    for x in xs:
        assert rel_error(cs.run(None, {"x": x})[0], ps.run(None, {"x": x})[0]) <= 1e-4
    gm = netmorph.lower(child)
    with torch.no_grad():
        assert rel_error(gm(torch.from_numpy(xs[0])).numpy(), cs.run(None, {"x": xs[0]})[0]) <= 1e-5
