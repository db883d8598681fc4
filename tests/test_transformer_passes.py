"""The transformer passes on every test model and exporter, each child checked by the test itself.

For each (model, exporter, pass): the child runs in ONNX Runtime on valid token ids at two
sequence lengths (or images at two batch sizes) and matches its parent to 1e-4 relative to the
output's scale; it is recognised with the promised shape (layers, heads, widths); every
parameter it created or changed has a lineage record; it lowers to torch, matches ONNX Runtime
there, and takes an AdamW training step that changes its weights.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
from netmorph.passes import PassManager, get_pass
from transformer_models import MODELS, exported, inputs, need, rel_error

import netmorph
from netmorph import onnx_io
from netmorph.errors import PreconditionError
from netmorph.morphs.lineage import map_state
from netmorph.structure.transformer import recognise_transformer

PASSES = [("deepen", {}), ("widen-mlp", {"factor": 2}), ("add-heads", {"heads": 2}),
          ("widen-hidden", {"factor": 2})]



def _session(graph):
    m = onnx_io.to_onnx(graph)
    return ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])


def _shape(st):
    return len(st.layers), st.heads, st.head_size, st.hidden, st.mlp


def _expected(before, name, opts):
    layers, heads, size, hidden, mlp = before
    if name == "deepen":
        return 2 * layers, heads, size, hidden, mlp
    if name == "widen-mlp":
        return layers, heads, size, hidden, 2 * mlp
    if name == "add-heads":
        return layers, heads + 2, size, hidden, mlp
    if opts.get("heads_mode") == "size":
        return layers, heads, 2 * size, 2 * hidden, 2 * mlp
    return layers, 2 * heads, size, 2 * hidden, 2 * mlp


def _grow_and_check(kind, exporter, name, opts):
    need(kind)
    parent = onnx_io.load(exported(kind, exporter))
    batches = inputs(kind, exporter, np.random.default_rng(3))
    before = _shape(recognise_transformer(parent))
    child, (rep,) = PassManager(inputs=[{"x": x} for x in batches], record_depth=False).run(
        parent, [get_pass(name, **opts)])
    assert rep.verification["ok"]
    # the test's own check: both lengths, error relative to the output's scale
    ps, cs = _session(parent), _session(child)
    for x in batches:
        ref, out = ps.run(None, {"x": x})[0], cs.run(None, {"x": x})[0]
        assert out.shape == ref.shape
        assert rel_error(out, ref) <= 1e-4, (kind, exporter, name, x.shape, rel_error(out, ref))
    st = recognise_transformer(child)
    assert _shape(st) == _expected(before, name, opts)
    # lineage: every created or changed parameter says where it came from
    old = {v.name: v.const.array for v in parent.parameters}
    for v in child.parameters:
        a = v.const.array
        if v.name in old and old[v.name].shape == a.shape and np.array_equal(old[v.name], a):
            continue
        rec = rep.lineage.origin(v.name)
        assert rec is not None, f"{name}: no lineage for {v.name}"
        if rec.kind != "new":  # the weight rule is the first-moment rule: it rebuilds the child weight
            np.testing.assert_allclose(map_state(rec, old[rec.parent], a.shape), a, rtol=1e-6, atol=1e-7)
    # the child lowers, matches ONNX Runtime there, and trains
    gm = netmorph.lower(child)
    x = torch.from_numpy(batches[0])
    with torch.no_grad():
        assert rel_error(gm(x).numpy(), cs.run(None, {"x": batches[0]})[0]) <= 1e-5
    gm.train()
    before_w = {n: p.detach().clone() for n, p in gm.named_parameters()}
    opt = torch.optim.AdamW(gm.parameters(), lr=1e-3)
    loss = gm(x).float().logsumexp(-1).mean()
    loss.backward()
    opt.step()
    assert torch.isfinite(loss)
    moved = sum(not torch.equal(p, before_w[n]) for n, p in gm.named_parameters())
    assert moved >= len(before_w) // 2
    return rep


@pytest.mark.parametrize("name,opts", PASSES, ids=[p for p, _ in PASSES])
@pytest.mark.parametrize("kind,exporter", MODELS)
def test_pass_on_model(kind, exporter, name, opts):
    rep = _grow_and_check(kind, exporter, name, opts)
    if name == "deepen":
        # deepen dispatched to the transformer construction, and says so
        assert rep.details[0] == {"morph": "deepen", "reading": "transformer",
                                  "as_pass": "transformer-deepen()"}


@pytest.mark.parametrize("kind,exporter", [("gpt", "dynamo"), ("vit", "torchscript"), ("bert", "dynamo"),
                                           ("encoder-post", "torchscript")])
def test_widen_hidden_head_size(kind, exporter):
    _grow_and_check(kind, exporter, "widen-hidden", {"factor": 2, "heads_mode": "size"})


def test_post_ln_deepen_is_gated():
    """A post-LN identity layer is h + g*(layer(h) - h) with a trainable zero gate."""
    parent = onnx_io.load(exported("encoder-post", "dynamo"))
    child, rep = get_pass("transformer-deepen").apply(parent)
    gates = [r for r in rep.lineage.records.values() if "gate" in r.note]
    assert len(gates) == 2 and all(r.kind == "new" for r in gates)
    for r in gates:
        g = child.value(r.child).const.array
        assert g.shape == (32,) and not g.any()
    st = recognise_transformer(child)
    assert sum(lay.gate is not None for lay in st.layers) == 2


def test_pre_ln_deepen_zeroes_out_projections():
    parent = onnx_io.load(exported("gpt", "torchscript"))
    child, rep = get_pass("transformer-deepen", after="1").apply(parent)
    st = recognise_transformer(child)
    assert len(st.layers) == 3
    new = st.layers[2]
    for lin in (new.attention.out_proj, new.down):
        assert not lin.weight.const.array.any()
        assert lin.bias is None or not lin.bias.const.array.any()
    assert new.up.weight.const.array.any()  # the rest is a copy of layer 1
    np.testing.assert_array_equal(new.up.weight.const.array, st.layers[1].up.weight.const.array)


def test_refusals_name_the_reason():
    g = onnx_io.load(exported("gpt", "dynamo"))
    with pytest.raises(PreconditionError, match="integer >= 2"):
        get_pass("widen-hidden", factor=1.5).apply(g)
    with pytest.raises(PreconditionError, match="option factor must be > 1"):
        get_pass("widen-mlp", factor=1.0).apply(g)
    with pytest.raises(PreconditionError, match="layer 5 does not exist"):
        get_pass("transformer-deepen", after="5").apply(g)
    with pytest.raises(PreconditionError, match="not a recognised transformer"):
        get_pass("add-heads", heads=1).apply(onnx_io.load(exported("gpt", "torchscript", 14)))


def test_chain_of_all_passes():
    """deepen, widen-hidden (head size), add-heads, widen-mlp, deepen in one PassManager run."""
    need("gpt2")
    g = onnx_io.load(exported("gpt2", "dynamo"))
    xs = inputs("gpt", "dynamo", np.random.default_rng(5))
    chain = [get_pass("deepen"), get_pass("widen-hidden", factor=2, heads_mode="size"),
             get_pass("add-heads", heads=2), get_pass("widen-mlp", factor=1.5), get_pass("deepen")]
    child, reps = PassManager(inputs=[{"x": x} for x in xs], record_depth=False).run(g, chain)
    assert all(r.verification["ok"] for r in reps)
    st = recognise_transformer(child)
    assert (len(st.layers), st.hidden, st.heads, st.head_size) == (8, 64, 6, 16)
    ps, cs = _session(g), _session(child)
    for x in xs:
        assert rel_error(cs.run(None, {"x": x})[0], ps.run(None, {"x": x})[0]) <= 1e-4


def test_add_heads_when_head_count_equals_head_size():
    """8 heads of size 8: shape constants are rewritten by position (the data flow's axis roles),
    so the equal values are no longer ambiguous and add-heads grows the model exactly."""
    g, _ = get_pass("widen-hidden", factor=2).apply(onnx_io.load(exported("gpt", "dynamo")))  # 8 heads x 8
    xs = inputs("gpt", "dynamo", np.random.default_rng(4))
    child, (rep,) = PassManager(inputs=[{"x": x} for x in xs], record_depth=False).run(
        g, [get_pass("add-heads", heads=1)])
    assert rep.verification["ok"]
    st = recognise_transformer(child)
    assert (st.heads, st.head_size) == (9, 8)
    ps, cs = _session(g), _session(child)
    for x in xs:
        assert rel_error(cs.run(None, {"x": x})[0], ps.run(None, {"x": x})[0]) <= 1e-4
