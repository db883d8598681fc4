"""Shapes for the transformer reading: declared sizes where the input sizes determine them, ONNX
Runtime's run for the rest, and both agree with what the model really computes."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from transformer_models import exported, need

import netmorph
from netmorph.ir import TensorType
from netmorph.onnx_io import from_onnx
from netmorph.structure.shapes import _evaluate, declared_shape, symbol_sizes
from netmorph.structure.transformer import probe_shapes, recognise_transformer


def test_symbolic_dims_evaluate_to_sizes_and_nothing_else():
    env = {"N": 2, "T": 8}
    assert _evaluate("12*N", env) == 24 and _evaluate("N*T", env) == 16
    assert _evaluate("(T + 1) // 2 - N % 2", env) == 4
    for bad in ("M*2", "N**T", "__import__('os')", "N.real", "f(N)", "1.5*N", "N/2", "(" * 500, "N" * 300,
                "N // (T - 8)"):
        assert _evaluate(bad, env) is None, bad


def test_declared_shapes_bind_the_inputs_symbols():
    g = from_onnx(_two_input_model())
    env = symbol_sizes(g, {"x": np.zeros((3, 5), np.float32), "m": np.zeros((3, 5), np.float32)})
    assert env == {"N": 3, "T": 5}
    v = g.value("y")
    v.type = TensorType(TensorProto.FLOAT, ("N*T", 4))
    assert declared_shape(v, env) == (15, 4)
    v.type = TensorType(TensorProto.FLOAT, ("N", None))
    assert declared_shape(v, env) is None
    # a symbol the feeds give two sizes is not bound
    assert symbol_sizes(g, {"x": np.zeros((3, 5), np.float32), "m": np.zeros((3, 6), np.float32)}) == {"N": 3}


def _two_input_model() -> onnx.ModelProto:
    g = helper.make_graph(
        [helper.make_node("Add", ["x", "m"], ["s"]), helper.make_node("ReduceSum", ["s"], ["y"], keepdims=1)],
        "two", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", "T"]),
                helper.make_tensor_value_info("m", TensorProto.FLOAT, ["N", "T"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1])])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("kind,exporter", [("vit", "dynamo"), ("gpt2", "dynamo"), ("llama", "dynamo"),
                                           ("bert", "torchscript")])
def test_declared_sizes_equal_the_measured_ones(kind, exporter, monkeypatch):
    """:func:`probe_shapes` takes a value's size from its declared type where the input sizes
    determine it, and fetches the rest from ONNX Runtime: at both probe sizes it gives exactly
    what fetching every value gives (the way it was done before)."""
    from netmorph.structure import shapes

    need(kind)
    g = netmorph.load(exported(kind, exporter))
    flow = recognise_transformer(g).flow
    names = list(dict.fromkeys(o.name for n in flow.data_nodes for o in n.outputs if o.uses()))
    got = probe_shapes(g, names, flow, runs=2)
    declared = sum(declared_shape(g.value(n), {"N": 2, "T": 8}) is not None for n in names)
    monkeypatch.setattr(shapes, "declared_shape", lambda v, env: None)  # fetch every value
    assert probe_shapes(g, names, flow, runs=2) == got
    if exporter == "dynamo":
        assert declared > len(names) // 2  # most sizes came from the declared types
