"""Lowering of transformer exports (both exporters) against ONNX Runtime, and write-back.

Models: ``nn.TransformerEncoder`` (post-LN and pre-LN), a hand-written GPT with a causal mask
built from the sequence length, a ViT in torchvision's layout, and tiny random-config BERT and
GPT-2 from ``transformers`` (built from config objects). Each lowered module must match ONNX
Runtime to 1e-5 relative at two sequence lengths (or batch sizes where the export fixes the
length), hold real ``nn.Embedding`` / ``nn.LayerNorm`` / ``nn.Linear`` modules, write back
bit-identically, and train.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn
from transformer_models import LLAMA_STYLE, MODELS, exported, inputs, need, rel_error

import netmorph
from netmorph import onnx_io
from netmorph.lowering import write_back


def _ort(path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("kind,exporter", MODELS)
def test_lowered_matches_onnxruntime(kind, exporter):
    need(kind)
    path = exported(kind, exporter)
    g = onnx_io.load(path)
    gm = netmorph.lower(g)
    sess = _ort(path)
    rng = np.random.default_rng(0)
    for x in inputs(kind, exporter, rng):
        ref = sess.run(None, {sess.get_inputs()[0].name: x})[0]
        with torch.no_grad():
            out = gm(torch.from_numpy(x)).numpy()
        assert out.shape == ref.shape
        assert rel_error(out, ref) <= 1e-5, (kind, exporter, x.shape, rel_error(out, ref))
    kinds = {type(m) for m in gm.modules()}
    assert (nn.LayerNorm in kinds or kind in LLAMA_STYLE) and nn.Linear in kinds  # RMSNorm: written out
    if kind != "vit":
        emb = [m for m in gm.modules() if isinstance(m, nn.Embedding)]
        assert emb and emb[0].num_embeddings >= 16
    # No trained change: the written-back graph holds the very same bytes.
    back = write_back(g, gm)
    for v in g.parameters:
        w = back.value(v.name).const.array
        assert w.dtype == v.const.array.dtype and w.tobytes() == v.const.array.tobytes(), v.name


@pytest.mark.parametrize("kind,exporter", [("gpt", "torchscript"), ("vit", "dynamo"), ("bert", "dynamo")])
def test_lowered_trains_and_writes_back(kind, exporter, tmp_path):
    """One AdamW step changes every trainable tensor that gets a gradient, and the written-back
    graph computes what the trained module computes (ONNX Runtime vs torch)."""
    need(kind)
    path = exported(kind, exporter)
    g = onnx_io.load(path)
    gm = netmorph.lower(g).train()
    rng = np.random.default_rng(1)
    x = torch.from_numpy(inputs(kind, exporter, rng)[0])
    before = {n: p.detach().clone() for n, p in gm.named_parameters()}
    opt = torch.optim.AdamW(gm.parameters(), lr=1e-2)
    out = gm(x)
    loss = out.float().pow(2).mean()
    loss.backward()
    opt.step()
    changed = [n for n, p in gm.named_parameters() if not torch.equal(p, before[n])]
    # the embeddings, norms, projections and (for the ViT) class token and positions all train
    assert len(changed) == len(before), set(before) - set(changed)
    gm.eval()
    child = write_back(g, gm)
    onnx_io.save(child, tmp_path / "trained.onnx")
    sess = _ort(tmp_path / "trained.onnx")
    xn = x.numpy()
    ref = sess.run(None, {sess.get_inputs()[0].name: xn})[0]
    with torch.no_grad():
        assert rel_error(gm(x).numpy(), ref) <= 1e-5


@pytest.mark.parametrize("kind", ["gpt", "encoder-pre"])
def test_decomposed_layer_norm(kind):
    """Opset 14 TorchScript exports write LayerNorm out as ReduceMean/Sub/Pow/Sqrt/Div/Mul/Add:
    it lowers exactly and its gamma and beta stay trainable parameters."""
    path = exported(kind, "torchscript", 14)
    g = onnx_io.load(path)
    ops = {n.op_type for n in g.nodes}
    assert "LayerNormalization" not in ops and {"ReduceMean", "Pow", "Sqrt"} <= ops
    gm = netmorph.lower(g)
    sess = _ort(path)
    for x in inputs(kind, "torchscript", np.random.default_rng(2)):
        ref = sess.run(None, {"x": x})[0]
        with torch.no_grad():
            assert rel_error(gm(torch.from_numpy(x)).numpy(), ref) <= 1e-5
    names = dict(gm.named_parameters())
    gammas = [n for n in names if "ln1" in n or "norm1" in n]
    assert len(gammas) >= 2  # gamma (Mul) and beta (Add) of the first norm


@pytest.mark.parametrize("op", ["IsNaN", "Trilu-lower", "Trilu-upper-k", "RMSNormalization"])
def test_lowered_mask_and_norm_ops(op, tmp_path):
    """The one-node forms of ops today's exports use for masks and norms: lowered within 1e-5 of
    ONNX Runtime (``IsNaN`` and ``Trilu`` exactly), RMSNormalization to ``nn.RMSNorm`` with its
    scale trainable and written back bit-identically."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 5, 8)).astype(np.float32)
    inits, opset = [], 18
    if op == "IsNaN":
        x[0, 1, 2] = x[1, 4, 7] = np.nan
        node, out = helper.make_node("IsNaN", ["x"], ["y"]), TensorProto.BOOL
    elif op.startswith("Trilu"):
        upper = int("upper" in op)
        ins = ["x", "k"] if op.endswith("-k") else ["x"]
        if op.endswith("-k"):
            inits.append(numpy_helper.from_array(np.array(1, np.int64), "k"))
        node, out = helper.make_node("Trilu", ins, ["y"], upper=upper), TensorProto.FLOAT
    else:
        inits.append(numpy_helper.from_array((1 + 0.3 * rng.standard_normal(8)).astype(np.float32), "w"))
        node, out = helper.make_node("RMSNormalization", ["x", "w"], ["y"], axis=-1, epsilon=1e-6), \
            TensorProto.FLOAT
        opset = 23
    xin = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 5, 8])
    graph = helper.make_graph([node], "g", [xin], [helper.make_tensor_value_info("y", out, None)],
                              initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    path = tmp_path / f"{op}.onnx"
    path.write_bytes(model.SerializeToString())
    g = onnx_io.load(path)
    gm = netmorph.lower(g)
    ref = _ort(path).run(None, {"x": x})[0]
    with torch.no_grad():
        y = gm(torch.from_numpy(x)).numpy()
    if op == "RMSNormalization":
        assert rel_error(y, ref) <= 1e-5
        assert any(isinstance(m, nn.RMSNorm) for m in gm.modules())
        back = write_back(g, gm)
        assert back.value("w").const.array.tobytes() == g.value("w").const.array.tobytes()
    else:
        np.testing.assert_array_equal(y, ref)


@pytest.mark.parametrize("kind,exporter", [("vit", "dynamo"), ("deit", "torchscript"),
                                           ("swin", "torchscript"), ("gpt2-tied", "dynamo")])
def test_lowered_timm_and_tied(kind, exporter):
    """timm ViT / DeiT / Swin and tied GPT-2: lowered within 1e-5 of ONNX Runtime at two batch sizes
    (and lengths), written back bit-identically. Swin's TorchScript export pads its windows with
    pads computed from the feature size (``F.pad``'s ``[-1, 2]`` reshape, reversed rows, transpose):
    a rank-2 shape value, kept as ints."""
    import vit_models

    path = vit_models.exported(kind, exporter)
    g = onnx_io.load(path)
    gm = netmorph.lower(g)
    sess = _ort(path)
    for x in vit_models.inputs(kind, np.random.default_rng(0)):
        ref = sess.run(None, {"x": x})[0]
        with torch.no_grad():
            assert rel_error(gm(torch.from_numpy(x)).numpy(), ref) <= 1e-5, (kind, x.shape)
    back = write_back(g, gm)
    for v in g.parameters:
        assert back.value(v.name).const.array.tobytes() == v.const.array.tobytes(), v.name
