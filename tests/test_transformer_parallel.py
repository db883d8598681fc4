"""Parallel transformer layers (``x + attn(LN(x)) + mlp(LN'(x))``): GPT-NeoX / Pythia (two norms),
Phi, Falcon (``parallel_attn``) and GPT-J (one norm), built from their ``transformers`` config
objects and exported by the TorchScript exporter (an all-ones mask given: no ``aten::diff``).

Recognition reads one residual unit with two terms (attention, MLP) per layer; each family x pass
grows with the verification's own generated inputs, and the test checks the written child itself
in ONNX Runtime at two batch sizes and two sequence lengths (1e-4 relative to the logits' scale).
Two children also lower to torch and take an AdamW step. GPT-NeoX's and Falcon's fused Q/K/V
holds each head's q, k, v together (``[H, 3, D]``): add-heads appends whole heads at its end,
widen-hidden clones it per head; both as exact as on the ``[Q | K | V]`` layout.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from click.testing import CliRunner
from netmorph.cli.main import cli
from netmorph.passes import PassManager, get_pass
from transformer_models import PARALLEL, VOCAB, exported, grown_shape, lowers_and_trains, need, rel_error

from netmorph import onnx_io
from netmorph.structure.transformer import recognise_transformer

PASSES = {"deepen": {}, "widen-mlp": {"factor": 2}, "add-heads": {"heads": 2}, "widen-hidden": {"factor": 2}}
INTERLEAVED = {"gpt-neox", "falcon"}  # fused Q/K/V laid out [q k v] per head
LOWERED = {("gpt-neox", "deepen"), ("phi", "widen-hidden")}  # two: the suite stays small
MLP = {"gpt-neox": 64, "phi": 64, "falcon": 128, "gpt-j": 64}


@pytest.fixture(scope="module")
def parents():
    need("gpt-neox")
    return {k: onnx_io.load(exported(k, "torchscript")) for k in PARALLEL}


def _session(graph):
    proto = onnx_io.to_onnx(graph).SerializeToString()
    return ort.InferenceSession(proto, providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("kind", PARALLEL)
def test_parallel_layers_are_one_residual_unit_with_two_terms(parents, kind):
    st = recognise_transformer(parents[kind])
    assert st.parallel and st.style == "GPT-NeoX-style" and st.norm == "pre"
    assert st.rotary  # partial rotary (GPT-NeoX, Phi), full (Falcon), GPT-J's interleaved rotate_every_two
    assert (len(st.layers), st.hidden, st.heads, st.head_size, st.mlp) == (2, 32, 4, 8, MLP[kind])
    for lay in st.layers:
        att, mlp = lay.attention, lay.mlp
        assert lay.parallel and att.add is mlp.add and att.entry is mlp.entry is lay.input
        assert {att.branch_output.name, mlp.branch_output.name} == {t.name for t in att.residual.terms}
        assert not {id(n) for n in att.linears[-1:]} & {id(lin.node) for lin in mlp.linears}
        assert any(n.op_type == "Softmax" for n in att.branch)
        assert not any(n.op_type == "Softmax" for n in mlp.branch)
        # GPT-NeoX normalises twice (input_layernorm, post_attention_layernorm), the others once
        assert (att.norm is mlp.norm) == (kind != "gpt-neox")
        fused = len(att.in_projs) == 1
        assert att.qkv_layout == ("heads" if kind in INTERLEAVED else "blocks" if fused else None)
    norms = "two norms" if kind == "gpt-neox" else "one norm"
    assert st.family_line().startswith("GPT-NeoX-style: 2 layers, LayerNorm, MLP 32→")
    assert st.family_line().endswith(f"parallel attention+MLP ({norms})")


def test_inspect_names_the_parallel_family():
    need("phi")
    r = CliRunner().invoke(cli, ["inspect", str(exported("phi", "torchscript"))])
    assert r.exit_code == 0, r.output
    line = ("structure: GPT-NeoX-style: 2 layers, LayerNorm, MLP 32→64, 4 heads, rotary, "
            "parallel attention+MLP (one norm)")
    assert line in r.output


@pytest.mark.parametrize("name", PASSES)
@pytest.mark.parametrize("kind", PARALLEL)
def test_parallel_family_by_pass(parents, kind, name):
    parent = parents[kind]
    # the verification makes its own inputs (ids in the table, symbolic dims at two sizes)
    child, (rep,) = PassManager(record_depth=False).run(parent, [get_pass(name, **PASSES[name])])
    assert rep.verification["ok"]
    ps, cs = _session(parent), _session(child)
    rng = np.random.default_rng(5)
    for b, t in ((3, 6), (2, 5)):
        x = rng.integers(0, VOCAB, (b, t)).astype(np.int64)
        ref, out = ps.run(None, {"x": x})[0], cs.run(None, {"x": x})[0]
        assert out.shape == ref.shape == (b, t, VOCAB)
        assert rel_error(out, ref) <= 1e-4, (kind, name, b, t, rel_error(out, ref))
    if (kind, name) in LOWERED:  # the grown child lowers to torch and trains
        lowers_and_trains(child, {"x": x}, out)
    st, before = recognise_transformer(child), recognise_transformer(parent)
    assert st.parallel and [v.name for v in child.outputs] == ["y"]
    assert (len(st.layers), st.heads, st.hidden, st.mlp) == grown_shape(before, name)
    if name == "add-heads" and kind in INTERLEAVED:  # [H, 3, D]: the old heads in place, whole new ones after
        for old, new in zip(before.layers, st.layers, strict=True):
            a, b = old.attention.linears[0], new.attention.linears[0]
            wa, wb = (np.moveaxis(x.weight.const.array, x.out_axis, 0) for x in (a, b))
            assert wb.shape[0] == wa.shape[0] + 2 * 3 * before.head_size
            np.testing.assert_array_equal(wb[:wa.shape[0]], wa)
            assert np.all(np.abs(wb[wa.shape[0]:]).sum(axis=1) > 0)  # drawn q, k, v for each new unit
    if name == "deepen":  # the copies add zero through both output projections (LLaMA Pro)
        for lay in st.layers[1::2]:
            for unit in (lay.attention, lay.mlp):
                assert not np.any(unit.out_proj.weight.const.array)
