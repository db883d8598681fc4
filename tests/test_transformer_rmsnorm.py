"""RMSNorm in its three encodings: written out (the exporters' form), ``RMSNormalization``
(opset 23) and ORT's ``SimplifiedLayerNormalization``: lowered within 1e-5 of ONNX Runtime and
written back bit-identical, recognised, and grown exactly."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from netmorph.passes import PassManager, get_pass
from onnx import TensorProto, helper, numpy_helper
from transformer_models import exported, fuse_rms_norms, inputs, need, rel_error

import netmorph
from netmorph import onnx_io
from netmorph.lowering import write_back
from netmorph.structure.transformer import recognise_transformer

OPS = [("RMSNormalization", 23), ("SimplifiedLayerNormalization", 18)]


@pytest.mark.parametrize("op,opset", OPS)
def test_rms_norm_op_lowers_and_writes_back(op, opset):
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array((1 + 0.3 * rng.standard_normal(8)).astype(np.float32), "w")
    node = helper.make_node(op, ["x", "w"], ["y"], axis=-1, epsilon=1e-6)
    x_info = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8])
    y_info = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3, 8])
    graph = helper.make_graph([node], "g", [x_info], [y_info], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 10
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    g = onnx_io.from_onnx(model)
    gm = netmorph.lower(g)
    assert any(isinstance(m, torch.nn.RMSNorm) for m in gm.modules())
    for b in (2, 1):
        x = rng.standard_normal((b, 3, 8)).astype(np.float32) * 3
        with torch.no_grad():
            assert rel_error(gm(torch.from_numpy(x)).numpy(), sess.run(None, {"x": x})[0]) <= 1e-5
    back = write_back(g, gm)
    assert back.value("w").const.array.tobytes() == g.value("w").const.array.tobytes()


@pytest.mark.parametrize("op,opset", OPS)
def test_fused_rms_llama_recognised_and_grown(op, opset, tmp_path):
    need("llama")
    path = fuse_rms_norms(exported("llama", "dynamo"), tmp_path / "llama.onnx", op)
    assert sum(n.op_type == op for n in onnx.load(str(path)).graph.node) == 5
    parent = onnx_io.load(path)
    st = recognise_transformer(parent)
    assert st.style == "Llama-style" and st.norm_kind == "rms" and len(st.layers) == 2
    xs = inputs("llama", "dynamo", np.random.default_rng(3))
    child, reps = PassManager(inputs=[{"x": x} for x in xs], record_depth=False).run(
        parent, [get_pass("deepen"), get_pass("widen-hidden", factor=2)])
    assert all(r.verification["ok"] for r in reps)
    cs = recognise_transformer(child)
    assert (len(cs.layers), cs.hidden, cs.heads, cs.kv_heads) == (4, 96, 12, 4)
    ps = ort.InferenceSession(onnx_io.to_onnx(parent).SerializeToString(), providers=["CPUExecutionProvider"])
    cx = ort.InferenceSession(onnx_io.to_onnx(child).SerializeToString(), providers=["CPUExecutionProvider"])
    gm = netmorph.lower(child)
    for x in xs:
        ref = ps.run(None, {"x": x})[0]
        out = cx.run(None, {"x": x})[0]
        assert rel_error(out, ref) <= 1e-4
        with torch.no_grad():
            assert rel_error(gm(torch.from_numpy(x)).numpy(), out) <= 1e-5


def test_isnan_mask_lowers():
    """``Where(IsNaN(x), 0, x)``, as dynamo exports of attention write it, lowers and matches ORT."""
    z = numpy_helper.from_array(np.zeros((), np.float32), "z")
    nodes = [helper.make_node("IsNaN", ["x"], ["m"]), helper.make_node("Where", ["m", "z", "x"], ["y"])]
    x_info = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])
    y_info = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])
    model = helper.make_model(helper.make_graph(nodes, "g", [x_info], [y_info], [z]),
                              opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 10
    x = np.array([[1.0, np.nan, -2.0, 3.0], [np.nan, np.nan, 0.5, 4.0]], np.float32)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    ref = sess.run(None, {"x": x})[0]
    with torch.no_grad():
        out = netmorph.lower(onnx_io.from_onnx(model))(torch.from_numpy(x)).numpy()
    np.testing.assert_array_equal(out, ref)
    assert not np.isnan(out).any()
