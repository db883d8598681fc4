"""``insert-identity-linear``: a pass added in three files (this test, the pass module, its row in
docs/passes.md): exact on a CNN head and on a transformer's residual stream, its CLI flags and TOML
checks generated from its declaration."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from hostile_util import invoke
from netmorph.passes import PassManager, get_pass, list_passes
from transformer_models import VOCAB, exported

import netmorph
from netmorph.pipeline.spec import PipelineError, Stage
from netmorph.structure.transformer import recognise_transformer


@pytest.fixture(scope="module")
def gpt():
    return exported("gpt", "dynamo")


def _stream_value(graph):
    st = recognise_transformer(graph)
    return st.layers[0].output.name


def test_exact_on_the_residual_stream_and_trainable_weights(gpt, tmp_path):
    g = netmorph.load(gpt)
    at = _stream_value(g)
    child, (rep,) = PassManager().run(g, [get_pass("insert-identity-linear", value=at)])
    mm = [child.node(n) for n in rep.nodes_added if child.node(n).op_type == "MatMul"]
    assert len(mm) == 1 and mm[0].inputs[0].name == at
    d = mm[0].param(1).shape[0]
    assert np.array_equal(mm[0].param(1), np.eye(d, dtype=np.float32))
    assert rep.params_after - rep.params_before == d * d + d
    assert rep.verification["ok"]
    # the written child runs in ONNX Runtime with the parent's outputs at another batch and length
    out = tmp_path / "c.onnx"
    netmorph.save(child, out)
    ids = np.random.default_rng(0).integers(0, VOCAB, (3, 7)).astype(np.int64)
    a = ort.InferenceSession(str(gpt)).run(None, {"x": ids})[0]
    b = ort.InferenceSession(str(out)).run(None, {"x": ids})[0]
    assert np.abs(a - b).max() <= 1e-4 * np.abs(a).max()
    # the new layer is a layer of the stream: the child still reads as a transformer
    assert recognise_transformer(child).layers


def test_cli_and_toml_from_the_declaration(gpt, tmp_path):
    at = _stream_value(netmorph.load(gpt))
    out = tmp_path / "c.onnx"
    res = invoke("grow", gpt, "--pass", "insert-identity-linear", "--value", at, "--bias", "none", "-o", out)
    assert res.exit_code == 0, res.output
    assert sum(n.op_type == "MatMul" for n in netmorph.load(out).nodes) == \
        sum(n.op_type == "MatMul" for n in netmorph.load(gpt).nodes) + 1
    for args, msg in [(["--value", at, "--bias", "some"], "is not one of zero, none"),
                      (["--value", "x"], "is not a float tensor"),
                      (["--value", at, "--kernel", "3"], "does not apply to pass(es) insert-identity-lin")]:
        bad = tmp_path / "bad.onnx"
        res = invoke("grow", gpt, "--pass", "insert-identity-linear", *args, "-o", bad)
        lines = res.output.strip().splitlines()
        assert res.exit_code == 2 and msg in res.output and len(lines) == 1, res.output
        assert not bad.exists()
    row = next(r for r in list_passes() if r["name"] == "insert-identity-linear")
    assert [o["name"] for o in row["options"]] == ["value", "bias"]
    with pytest.raises(PipelineError, match="is not one of"):
        Stage(1, grow="insert-identity-linear", options={"value": at, "bias": "yes"})
