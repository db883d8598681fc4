"""Encoders exported with their mask inputs: BERT (``ids``, ``mask``, ``types``), DistilBERT,
RoBERTa and ALBERT (``ids``, ``mask``), built from their ``transformers`` config objects and
exported by the TorchScript exporter with batch and length dynamic.

The residual stream is read over the token ids; the attention mask and token types are side
inputs. Each family x pass grows with the verification's own generated inputs (the mask 0/1, the
token types inside their table), and the test checks the written child itself in ONNX Runtime on
padded masks at two batch sizes and two lengths (1e-4 relative to the output's scale); two
children also lower to torch and take an AdamW step.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from netmorph.passes import PassManager, get_pass
from transformer_models import exported_masked, grown_shape, lowers_and_trains, masked_inputs, need, rel_error

from netmorph import onnx_io
from netmorph.errors import VerificationError
from netmorph.structure.transformer import recognise_transformer
from netmorph.verification.inputs import make_inputs

LOWERED = {("bert-mask", "widen-hidden"), ("distilbert-mask", "deepen")}  # two: the suite stays small
PASSES = {"deepen": {}, "widen-mlp": {"factor": 2}, "add-heads": {"heads": 2}, "widen-hidden": {"factor": 2}}
CASES = [*((k, p) for k in ("bert-mask", "distilbert-mask") for p in PASSES), ("roberta-mask", "deepen"),
         ("roberta-mask", "add-heads"), ("roberta-mask", "widen-hidden"),
         ("albert-mask", "deepen"), ("albert-mask", "widen-mlp")]
"""BERT and DistilBERT x every pass; RoBERTa by the three that read its position ids' CumSum /
GatherElements chain or copy a layer, ALBERT by two (all four in ``benchmarks/transformer_families.py``;
the suite's time is kept small)."""


@pytest.fixture(scope="module")
def parents():
    need("bert-mask")
    return {}


def _parent(parents, kind):
    if kind not in parents:
        parents[kind] = onnx_io.load(exported_masked(kind))
    return parents[kind]


def _session(graph):
    proto = onnx_io.to_onnx(graph).SerializeToString()
    return ort.InferenceSession(proto, providers=["CPUExecutionProvider"])


def _grow_and_check(parent, kind, name):
    child, (rep,) = PassManager(record_depth=False).run(parent, [get_pass(name, **PASSES[name])])
    assert rep.verification["ok"]
    ps, cs = _session(parent), _session(child)
    rng = np.random.default_rng(5)
    outs = []
    for b, t in ((3, 6), (2, 5)):
        feeds = masked_inputs(kind, rng, b, t)
        ref, out = ps.run(None, feeds)[0], cs.run(None, feeds)[0]
        assert out.shape == ref.shape and out.shape[0] == b
        assert rel_error(out, ref) <= 1e-4, (kind, name, b, t, rel_error(out, ref))
        outs.append((feeds, out))
    # the mask is live in the child: unmasking the padded tail changes the output
    feeds, out = outs[0]
    if (kind, name) in LOWERED:  # the grown child lowers to torch and trains
        lowers_and_trains(child, feeds, out)
    unmasked = cs.run(None, {**feeds, "mask": np.ones_like(feeds["mask"])})[0]
    assert rel_error(unmasked, out) > 1e-3
    return child


@pytest.mark.parametrize(("kind", "name"), CASES)
def test_encoder_with_mask_by_pass(parents, kind, name):
    parent = _parent(parents, kind)
    before = recognise_transformer(parent)
    assert before.flow.image.name == "ids" and before.norm == "post"
    assert before.side_inputs == (["mask", "types"] if kind == "bert-mask" else ["mask"])
    if kind == "bert-mask":  # the token-type table is indexed by a side input
        assert [e["kind"] for e in before.embeddings] == ["token", "type", "position"]
    child = _grow_and_check(parent, kind, name)
    assert [v.name for v in child.inputs if not v.is_parameter] == [v.name for v in parent.inputs
                                                                    if not v.is_parameter]
    st = recognise_transformer(child)
    assert (len(st.layers), st.heads, st.hidden, st.mlp) == grown_shape(before, name)
    if kind == "albert-mask" and name == "widen-mlp":  # each layer's MLP grows into its own arrays;
        ups = [lay.up.weight for lay in st.layers]      # the attention weights stay shared
        assert ups[0] is not ups[1] and st.shared_layers == [[0, 1]]


def test_generated_verification_inputs_are_valid_masks_and_types(parents):
    batches = make_inputs(_parent(parents, "bert-mask"))
    assert len(batches) >= 2 and {a.shape[1] for b in batches for a in b.values()} == {8, 1}
    mask = np.concatenate([b["mask"].reshape(-1) for b in batches])
    types = np.concatenate([b["types"].reshape(-1) for b in batches])
    assert set(np.unique(mask)) == {0, 1} and set(np.unique(types)) == {0, 1}


def test_deepen_keeps_the_output_name_when_the_last_layer_is_the_output(parents):
    parent = _parent(parents, "distilbert-body")  # DistilBertModel: the output is the last hidden state
    assert recognise_transformer(parent).head is None
    child = _grow_and_check(parent, "distilbert-body", "deepen")
    assert [v.name for v in child.outputs] == ["y"]
    assert len(recognise_transformer(child).layers) == 4


def test_albert_shared_layers(parents):
    parent = _parent(parents, "albert-mask")
    st = recognise_transformer(parent)
    assert st.shared_layers == [[0, 1]] and "shared layer weights (0,1)" in st.family_line()
    # deepen keeps the two original layers sharing their weights; each copy gets its own
    child, _ = get_pass("deepen").apply(parent)
    assert recognise_transformer(child).shared_layers == [[0, 2]]
    # widen-hidden: ALBERT's factorised embedding (16 wide, mapped to the hidden 32) is not widened:
    # the child is malformed and the verification refuses it (nothing is written)
    with pytest.raises(VerificationError, match="malformed"):
        PassManager(record_depth=False).run(parent, [get_pass("widen-hidden", factor=2)])
