"""Tied embeddings: GPT-2 (``lm_head`` is ``wte``) and Llama with ``tie_word_embeddings=True``.

Exporters write the tie as two arrays (the ``Gather`` reads the table, the head a folded transposed
copy). ``widen-hidden`` keeps them tied: HyperCloning would divide the head's repeated rows by
``n`` (``[e, e]ᵀ / n``) and so untie it from the table's ``[e, e]``; instead the ``1/n`` moves into
the final norm's scale (and bias), and the head stays the table's clone (the report says so, and
says why where it must untie). ``deepen`` / ``widen-mlp`` / ``add-heads`` leave both untouched.
Every child is checked here in ONNX Runtime
at two batch sizes and two lengths (1e-4 of the logits' scale), lowered, and trained one AdamW step.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
import transformer_models as tm
import vit_models
from netmorph.passes import PassManager, get_pass
from transformer_models import rel_error

import netmorph
from netmorph import onnx_io
from netmorph.structure.transformer import as_linear, recognise_transformer

PASSES = {"deepen": {}, "widen-mlp": {"factor": 2}, "add-heads": {"heads": 2}, "widen-hidden": {"factor": 2}}


def _exported(kind):
    """GPT-2 is the suite's own (tied by default: ``GPT2Config.tie_word_embeddings``; its export is
    shared with the other transformer tests); Llama is built with ``tie_word_embeddings=True``."""
    return tm.exported("gpt2", "dynamo") if kind == "gpt2" else vit_models.exported(kind, "dynamo")


def inputs(kind, rng):
    return vit_models.inputs("gpt2-tied" if kind == "gpt2" else kind, rng)


def _session(graph):
    model = onnx_io.to_onnx(graph).SerializeToString()
    return ort.InferenceSession(model, providers=["CPUExecutionProvider"])


def _tie(graph):
    """``(table, head weight as (d, vocab))`` of the token embedding and the unembedding."""
    st = recognise_transformer(graph)
    tok = next(e for e in st.embeddings if e["kind"] == "token")
    table = graph.value(tok["table"]).const.array
    head = next(as_linear(st.flow, n) for n in st.flow.data_nodes if n.name == st.head["name"])
    w = head.weight.const.array
    return table, (w if head.in_axis == 0 else w.T)


@pytest.mark.parametrize("kind,name", [*(("gpt2", p) for p in PASSES), ("llama-tied", "widen-hidden"),
                                       ("llama-tied", "add-heads")])
def test_tie_kept(kind, name):
    tm.need("gpt2")
    parent = onnx_io.load(_exported(kind))
    table, head = _tie(parent)
    assert np.array_equal(table.T, head)  # the export's two arrays hold one tensor
    xs = inputs(kind, np.random.default_rng(2))
    child, (rep,) = PassManager(inputs=[{"x": x} for x in xs], record_depth=False).run(
        parent, [get_pass(name, **PASSES[name])])
    assert rep.verification["ok"]
    ps, cs = _session(parent), _session(child)
    for x in xs:
        assert rel_error(cs.run(None, {"x": x})[0], ps.run(None, {"x": x})[0]) <= 1e-4
    table2, head2 = _tie(child)
    assert np.array_equal(table2.T, head2), "the head is no longer the table"
    if name == "widen-hidden":
        assert table2.shape == (table.shape[0], 2 * table.shape[1])
        note = next(d for d in rep.details if "tied_embeddings" in d)
        assert note["tied_embeddings"] == "kept" and "1/2" in note["how"]
    else:
        np.testing.assert_array_equal(table2, table)
        assert not any("tied_embeddings" in d for d in rep.details)
    gm = netmorph.lower(child)
    x = torch.from_numpy(xs[0])
    with torch.no_grad():
        assert rel_error(gm(x).numpy(), cs.run(None, {"x": xs[0]})[0]) <= 1e-5
    gm.train()
    opt = torch.optim.AdamW(gm.parameters(), lr=1e-3)
    loss = gm(x).logsumexp(-1).mean()
    loss.backward()
    opt.step()
    assert torch.isfinite(loss)


def test_untied_says_why():
    """Where the head does not read a norm with its own scale (here a scalar ``Mul`` stands between),
    the 1/n cannot move: widen-hidden unties the two arrays, exactly, and the report says why."""
    g = onnx_io.load(_exported("gpt2"))
    st = recognise_transformer(g)
    head = next(n for n in st.flow.data_nodes if n.name == st.head["name"])
    one = g.add_parameter("one", np.ones((), np.float32))
    mul = g.create_node("Mul", [head.inputs[0], one], {}, name="scale_before_head")
    g.insert_before(head, mul)
    head.set_input(0, mul.outputs[0])
    xs = inputs("gpt2", np.random.default_rng(3))
    child, (rep,) = PassManager(inputs=[{"x": x} for x in xs], record_depth=False).run(
        g, [get_pass("widen-hidden", factor=2)])
    assert rep.verification["ok"]
    note = next(d for d in rep.details if "tied_embeddings" in d)
    assert note["tied_embeddings"] == "untied" and "scale_before_head" in note["why"]
    table, head_w = _tie(child)
    np.testing.assert_allclose(table.T / 2, head_w, rtol=1e-6)  # [e, e]^T / 2: untied, by the rule


def test_head_reading_the_table_through_a_transpose():
    """A large tied GPT-2 (vocab 50257) is exported with the head reading the table itself through a
    ``Transpose`` (too large for the exporter to fold): the head is read as a linear layer, and
    widen-hidden grows it exactly with the tie kept (at GPT-2-small size it exited 2: "the model's
    output is the hidden stream itself"). Built here from the small export by the same rewrite."""
    g = onnx_io.load(_exported("gpt2"))
    st = recognise_transformer(g)
    tok = next(e for e in st.embeddings if e["kind"] == "token")
    head = next(n for n in st.flow.data_nodes if n.name == st.head["name"])
    tp = g.create_node("Transpose", [g.value(tok["table"])], {"perm": [1, 0]}, name="head_transpose")
    g.insert_before(head, tp)
    head.set_input(1, tp.outputs[0])
    g.remove_unused_parameters()  # the folded copy the head read before
    lin = as_linear(recognise_transformer(g).flow, head)
    assert lin is not None and lin.weight_site == (tp, 0) and (lin.in_axis, lin.out_axis) == (1, 0)
    xs = inputs("gpt2", np.random.default_rng(4))
    child, (rep,) = PassManager(inputs=[{"x": x} for x in xs], record_depth=False).run(
        g, [get_pass("widen-hidden", factor=2)])
    assert rep.verification["ok"]
    note = next(d for d in rep.details if "tied_embeddings" in d)
    assert note["tied_embeddings"] == "kept"
    ps, cs = _session(g), _session(child)
    for x in xs:
        assert rel_error(cs.run(None, {"x": x})[0], ps.run(None, {"x": x})[0]) <= 1e-4
    table2, head2 = _tie(child)
    assert table2.shape[1] == 2 * st.layers[0].attention.out_proj.in_features
    assert np.array_equal(table2.T, head2)
