"""Transformer recognition (``netmorph.structure.transformer``) and ``netmorph inspect`` on it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from netmorph.cli.main import cli
from transformer_models import MODELS, exported, need

from netmorph import onnx_io
from netmorph.errors import StructureError
from netmorph.structure.transformer import recognise_transformer

# model -> (norm, layers, heads, head size, hidden, MLP, inputs, embedding tables)
EXPECTED = {
    "encoder-post": ("post", 2, 4, 8, 32, 64, "tokens", 1),
    "encoder-pre": ("pre", 2, 4, 8, 32, 64, "tokens", 1),
    "gpt": ("pre", 2, 4, 8, 32, 128, "tokens", 2),
    "vit": ("pre", 2, 4, 8, 32, 64, "images", 0),
    "bert": ("post", 2, 4, 8, 32, 64, "tokens", 3),
    "gpt2": ("pre", 2, 4, 8, 32, 64, "tokens", 2),
    **{k: ("pre", 2, 6, 8, 48, 80, "tokens", 1) for k in ("llama", "qwen2", "mistral", "gemma")},
}



@pytest.mark.parametrize("kind,exporter", MODELS)
def test_recognise(kind, exporter):
    need(kind)
    st = recognise_transformer(onnx_io.load(exported(kind, exporter)))
    norm, layers, heads, size, hidden, mlp, inputs, tables = EXPECTED[kind]
    assert (st.norm, len(st.layers), st.heads, st.head_size, st.hidden, st.mlp, st.inputs) == (
        norm, layers, heads, size, hidden, mlp, inputs)
    assert len(st.embeddings) == tables
    assert st.head is not None and st.head["in"] == hidden
    for lay in st.layers:
        assert lay.attention.kind == "attention" and lay.mlp.kind == "mlp"
        assert lay.up.in_features == hidden and lay.down.out_features == hidden
        assert lay.attention.out_proj.out_features == hidden


def test_inspect_shows_transformer():
    path = exported("gpt", "dynamo")
    r = CliRunner().invoke(cli, ["inspect", str(path)])
    assert r.exit_code == 0, r.output
    assert "transformer, 2 pre-LN layers, hidden 32, 4 heads x 8, MLP 128" in r.output
    r = CliRunner().invoke(cli, ["inspect", "--json", str(path)])
    d = json.loads(r.output)["structure"]
    assert d["family"] == "transformer" and d["layers"] == 2 and d["heads"] == 4
    assert [e["kind"] for e in d["embeddings"]] == ["token", "position"]
    assert len(d["layer_list"]) == 2 and d["layer_list"][0]["mlp"]["width"] == 128


def test_decomposed_layer_norm_is_refused_with_reason():
    g = onnx_io.load(exported("gpt", "torchscript", 14))
    with pytest.raises(StructureError, match="opset >= 17"):
        recognise_transformer(g)


def test_cnn_is_not_a_transformer(torch_cnn_onnx):
    with pytest.raises(StructureError, match="no attention unit"):
        recognise_transformer(onnx_io.load(torch_cnn_onnx))


def test_grow_cli_on_a_transformer(tmp_path):
    model = exported("gpt", "dynamo")
    ids = tmp_path / "ids.npz"
    np.savez(ids, x=np.random.default_rng(0).integers(0, 50, (2, 6)).astype(np.int64))
    out = tmp_path / "grown.onnx"
    args = ["--pass", "deepen", "--pass", "widen-mlp", "--factor", "2", "--pass", "add-heads", "--heads", "2"]
    r = CliRunner().invoke(cli, ["grow", str(model), *args, "--inputs", str(ids), "-o", str(out)])
    assert r.exit_code == 0, r.output
    rows = [ln.split()[1] for ln in r.output.splitlines() if ln[:1].isdigit()]
    assert rows == ["deepen", "widen-mlp", "add-heads"] and out.is_file(), r.output
    st = recognise_transformer(onnx_io.load(out))
    assert (len(st.layers), st.heads, st.mlp) == (4, 6, 256)
    # a transformer pass on a CNN, a fractional hidden factor: one line, exit 2, nothing written
    bad = tmp_path / "bad.onnx"
    cnn = Path(__file__).parents[1] / "examples" / "plainnet7.onnx"
    r = CliRunner().invoke(cli, ["grow", str(cnn), "--pass", "widen-mlp", "-o", str(bad)])
    assert r.exit_code == 2 and "not a recognised transformer" in r.output and not bad.exists()
    r = CliRunner().invoke(cli, ["grow", str(model), "--pass", "widen-hidden", "--factor", "1.5",
                                 "--inputs", str(ids), "-o", str(bad)])
    assert r.exit_code == 2 and "integer >= 2" in r.output and len(r.output.strip().splitlines()) == 1
    assert not bad.exists()
