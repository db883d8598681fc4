"""The IR: rewrite API, invariants (``check``), type inference, topological order, cloning."""

from __future__ import annotations

import random

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto

from netmorph.ir import Graph, IRError, Parameter, TensorType, Value, infer_types
from netmorph.ir.infer import check_types
from netmorph.onnx_io import to_onnx
from netmorph.onnx_io.compare import normalise_proto


def _cnn(rng: np.random.Generator | None = None) -> Graph:
    """x -> Conv -> Relu -> GlobalAveragePool -> Flatten -> Gemm -> y, untyped intermediates."""
    rng = rng or np.random.default_rng(0)
    g = Graph("cnn")
    x = g.add_input("x", TensorType.float32("N", 3, 8, 8))
    w = g.add_parameter("w", rng.standard_normal((4, 3, 3, 3)).astype(np.float32))
    b = g.add_parameter("b", np.zeros(4, np.float32))
    conv = g.create_node("Conv", [x, w, b], {"pads": [1, 1, 1, 1]}, name="conv")
    relu = g.create_node("Relu", [conv.output], name="relu")
    gap = g.create_node("GlobalAveragePool", [relu.output], name="gap")
    flat = g.create_node("Flatten", [gap.output], name="flat")
    fw = g.add_parameter("fc.w", rng.standard_normal((5, 4)).astype(np.float32))
    gemm = g.create_node("Gemm", [flat.output, fw], {"transB": 1}, name="fc", output_names=["y"])
    g.insert_before(None, conv, relu, gap, flat, gemm)
    g.outputs.append(gemm.output)
    return g


def _run(g: Graph, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(to_onnx(g).SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})[0]


def _snapshot(g: Graph) -> dict:
    return normalise_proto(to_onnx(g))


X = np.random.default_rng(1).standard_normal((2, 3, 8, 8)).astype(np.float32)


# -- rewrite API ----------------------------------------------------------------------------
def test_built_graph_is_valid_and_runs():
    g = _cnn()
    g.check()
    assert _run(g, X).shape == (2, 5)
    assert [n.name for n in g.nodes] == ["conv", "relu", "gap", "flat", "fc"]
    assert g.parameter_count() == 4 * 27 + 4 + 20


def test_insert_on_takes_over_all_readers():
    g = _cnn()
    relu_out = g.node("relu").output
    node = g.insert_on(relu_out, "Identity", name="probe")
    g.check()
    assert node.inputs == (relu_out,)
    assert relu_out.consumers() == [node]
    assert g.node("gap").inputs[0] is node.output
    assert [n.name for n in g.nodes].index("probe") == [n.name for n in g.nodes].index("relu") + 1
    np.testing.assert_array_equal(_run(g, X), _run(_cnn(), X))


def test_insert_on_a_graph_output_reroutes_it_and_keeps_its_type():
    g = _cnn()
    y = g.value("y")
    y.type = TensorType.float32("N", 5)
    node = g.insert_on(y, "Neg")
    g.check()
    assert g.outputs == [node.output] and node.output.type == y.type
    np.testing.assert_array_equal(_run(g, X), -_run(_cnn(), X))
    node2 = g.insert_on(node.output, "Neg", reroute_graph_output=False)
    assert g.outputs == [node.output] and node2.output.uses() == []


def test_insert_on_a_graph_input_goes_first():
    g = _cnn()
    node = g.insert_on(g.value("x"), "Identity", name="in_id")
    g.check()
    assert g.nodes[0] is node and g.node("conv").inputs[0] is node.output


def test_replace_node_reroutes_readers_and_outputs():
    g = _cnn()
    relu = g.node("relu")
    clip = g.create_node("Clip", [relu.inputs[0]], name="clip0")  # Clip without bounds == identity
    new = g.create_node("Relu", [clip.output], name="relu2")
    g.replace_node(relu, [clip, new], [new.output])
    g.check()
    assert "relu" not in {n.name for n in g.nodes} and g.node("gap").inputs[0] is new.output
    np.testing.assert_array_equal(_run(g, X), _run(_cnn(), X))
    gemm = g.node("fc")
    neg = g.create_node("Neg", [gemm.inputs[0]])
    with pytest.raises(IRError, match="1 outputs, 2 given"):
        g.replace_node(gemm, [neg], [neg.output, neg.output])


def test_replace_node_moves_the_graph_output():
    g = _cnn()
    gemm = g.node("fc")
    mm = g.create_node("MatMul", [gemm.inputs[0], g.add_parameter("wt", g.value("fc.w").const.array.T)])
    g.replace_node(gemm, [mm], [mm.output])
    g.check()
    assert g.outputs == [mm.output]
    np.testing.assert_allclose(_run(g, X), _run(_cnn(), X), rtol=1e-6, atol=1e-6)


def test_remove_node_refuses_used_outputs():
    g = _cnn()
    with pytest.raises(IRError, match="'relu'.*read by gap"):
        g.remove_node(g.node("relu"))
    with pytest.raises(IRError, match="graph outputs"):
        g.remove_node(g.node("fc"))
    g.check()  # nothing changed
    dead = g.create_node("Neg", [g.value("x")], name="dead")
    g.insert_before(None, dead)
    g.remove_node(dead)
    g.check()
    assert not g.has_value(dead.outputs[0].name) and g.value("x").consumers() == [g.node("conv")]
    assert g.unique_node_name("dead") == "dead"  # the name is free again


def test_replace_all_uses_keeps_graph_outputs_unless_asked():
    g = _cnn()
    relu_out, gemm = g.node("relu").output, g.node("fc")
    alt = g.create_node("Abs", [g.node("conv").output], name="alt")
    g.insert_after(g.node("conv"), alt)
    relu_out.replace_all_uses_with(alt.output)
    assert relu_out.uses() == [] and g.node("gap").inputs[0] is alt.output
    y = g.value("y")
    y2 = g.create_node("Gemm", list(gemm.inputs), gemm.attributes, name="fc2")
    g.insert_after(gemm, y2)
    y.replace_all_uses_with(y2.output)
    assert g.outputs == [y]
    y.replace_all_uses_with(y2.output, include_graph_outputs=True)
    assert g.outputs == [y2.output]
    g.remove_node(gemm)
    g.check()


def test_names_are_unique_by_construction():
    g = _cnn()
    a = g.add_parameter("w", np.ones(2, np.float32))
    b = g.add_parameter("w", np.ones(2, np.float32))
    c = g.add_parameter("relu", np.ones(2, np.float32))  # collides with a node output name
    assert len({g.value("w").name, a.name, b.name, c.name}) == 4
    assert a.name == "w.1" and b.name == "w.2" and c.name == "relu.1"
    n1 = g.create_node("Relu", [g.value("x")], name="conv")
    n2 = g.create_node("Relu", [g.value("x")], name="conv")
    assert len({"conv", n1.name, n2.name}) == 3
    assert n1.output.name != n2.output.name
    with pytest.raises(IRError, match="already used"):
        g.add_input("x", TensorType.float32(1))


def test_rename_value():
    g = _cnn()
    v = g.node("relu").output
    g.rename_value(v, "activations")
    assert g.value("activations") is v and not g.has_value("relu")
    with pytest.raises(IRError, match="already used"):
        g.rename_value(v, "y")
    g.check()
    names = {n for node in to_onnx(g).graph.node for n in node.input}
    assert "activations" in names and "relu" not in names


def test_set_parameter_and_unused_parameters():
    g = _cnn()
    w = g.value("b")
    g.set_parameter(w, np.ones(4, np.float32))
    assert w.type == TensorType.float32(4) and w.const.array.sum() == 4
    with pytest.raises(IRError, match="not a parameter"):
        g.set_parameter(g.value("x"), np.ones(1))
    g.add_parameter("unused", np.ones(3, np.float32))
    assert g.remove_unused_parameters() == 1 and not g.has_value("unused")
    g.check()


# -- clone ------------------------------------------------------------------------------------
def test_clone_is_independent_and_shares_read_only_parameters():
    g = _cnn()
    before = _snapshot(g)
    c = g.clone()
    c.check()
    assert _snapshot(c) == before
    assert c.value("w").const is g.value("w").const  # shared, not copied
    with pytest.raises(ValueError):
        c.value("w").const.array[0, 0, 0, 0] = 1.0  # read-only
    # Mutate the clone in every way the rewrite API allows.
    c.insert_on(c.node("relu").output, "Neg")
    c.set_parameter(c.value("b"), np.ones(4, np.float32))
    c.rename_value(c.value("y"), "logits")
    c.node("conv").set_attr("pads", [0, 0, 0, 0])
    c.add_parameter("extra", np.ones(1, np.float32))
    c.value("x").type = TensorType.float32(1, 3, 8, 8)
    c.metadata_props.append(("k", "v"))
    c.opset_imports["com.example"] = 1
    c.remove_unused_parameters()
    assert _snapshot(g) == before
    g.check()
    assert g.node("conv").attr("pads") == [1, 1, 1, 1]
    assert all(n.graph is c for n in c.nodes) and all(v.graph is c for v in c.values())


def test_parameters_are_read_only_and_not_copied():
    a = np.arange(6, dtype=np.float32)
    p = Parameter(a)
    assert p.array is a and not a.flags.writeable  # an array that owns its data is frozen, not copied
    with pytest.raises(ValueError):
        p.array[0] = 5
    base = np.arange(12, dtype=np.float32)
    view = base[:6]
    q = Parameter(view)  # a view of a writable buffer is copied, so writes to the buffer cannot leak in
    base[0] = 42
    assert q.array[0] == 0 and not q.array.flags.writeable and base.flags.writeable
    frozen = np.arange(3, dtype=np.float32)
    frozen.flags.writeable = False
    assert Parameter(frozen).array is frozen  # already read-only: no copy


# -- invariants -----------------------------------------------------------------------------
def _break(kind: str) -> Graph:
    g = _cnn()
    relu, gap = g.node("relu"), g.node("gap")
    if kind == "input-with-producer":
        g.value("x").producer = relu
    elif kind == "parameter-without-data":
        g.value("b").const = None
    elif kind == "parameter-shape":
        g.value("b").type = TensorType.float32(5)
    elif kind == "foreign-node":
        g.nodes[1] = _cnn().node("relu")
    elif kind == "duplicate-node-name":
        gap.name = "relu"
    elif kind == "order":
        g.nodes[1], g.nodes[2] = g.nodes[2], g.nodes[1]
    elif kind == "dangling":
        gap.set_input(0, Value(g, "ghost"))
    elif kind == "missing-use":
        relu.output._uses.clear()
    elif kind == "wrong-producer":
        relu.output.producer = gap
    elif kind == "produced-twice":  # a parameter also claimed as a node output
        b = g.value("b")
        b.producer, b.output_index = gap, 1
        gap.outputs.append(b)
    elif kind == "misregistered":
        g._values["other"] = g._values.pop("relu")
    elif kind == "stale-use":
        relu.output._uses.append((g.node("fc"), 0))
    elif kind == "removed-producer":
        g.nodes.remove(g.node("fc"))
    elif kind == "output-not-produced":
        g.outputs.append(Value(g, "nowhere"))
    elif kind == "cycle":
        relu.set_input(0, gap.output)
    return g


BROKEN = {
    "input-with-producer": "graph input 'x' has a producer",
    "parameter-without-data": "parameter 'b' has no data",
    "parameter-shape": "parameter 'b': type",
    "foreign-node": "belongs to another graph",
    "duplicate-node-name": "two nodes are named 'relu'",
    "order": "not topologically ordered",
    "dangling": "'ghost' is produced by nothing",
    "missing-use": "use list of 'relu' misses 'gap'",
    "wrong-producer": "wrong producer link",
    "produced-twice": "produced twice",
    "misregistered": "registered as 'other'",
    "stale-use": "stale use of 'relu' by 'fc'",
    "removed-producer": "produced by a node not in the graph|graph output 'y' is not produced",
    "output-not-produced": "graph output 'nowhere' is not produced",
    "cycle": "not topologically ordered",
}


@pytest.mark.parametrize("kind", list(BROKEN))
def test_check_catches_each_broken_invariant(kind):
    _cnn().check()
    with pytest.raises(IRError, match=BROKEN[kind]):
        _break(kind).check()


# -- type inference -------------------------------------------------------------------------
def test_infer_types_fills_every_intermediate():
    g = _cnn()
    assert g.node("relu").output.type is None
    filled = infer_types(g)
    assert filled == 5
    assert g.node("conv").output.type == TensorType.float32("N", 4, 8, 8)
    assert g.node("gap").output.type == TensorType.float32("N", 4, 1, 1)
    assert g.node("flat").output.type == TensorType(TensorProto.FLOAT, ("N", 4))
    assert g.value("y").type == TensorType.float32("N", 5)
    assert infer_types(g) == 0  # idempotent
    check_types(g)


def test_strict_inference_catches_a_wrong_stored_shape():
    g = _cnn()
    infer_types(g)
    g.node("relu").output.type = TensorType.float32("N", 7, 8, 8)
    infer_types(g)  # lenient: keeps the stored type
    assert g.node("relu").output.type.shape[1] == 7
    with pytest.raises(IRError, match="'relu'.*Relu.*typed float\\[N,7,8,8\\].*float\\[N,4,8,8\\]"):
        infer_types(g, strict=True)
    with pytest.raises(IRError):
        check_types(g)
    infer_types(g, overwrite=True)
    assert g.node("relu").output.type.shape[1] == 4
    check_types(g)


def test_infer_types_merges_unknown_dims_and_reports_failure():
    g = _cnn()
    g.node("conv").output.type = TensorType.float32("N", None, 8, None)
    infer_types(g)
    assert g.node("conv").output.type == TensorType.float32("N", 4, 8, 8)
    bad = _cnn()
    bad.set_parameter(bad.value("fc.w"), np.ones((5, 3), np.float32))  # 4 features, 3 weights
    with pytest.raises(IRError, match="type inference failed"):
        infer_types(bad, strict=True)


# -- order and views ------------------------------------------------------------------------
def test_toposort_restores_an_order_and_is_stable():
    g = _cnn()
    names = [n.name for n in g.nodes]
    g.toposort()
    assert [n.name for n in g.nodes] == names  # already sorted: unchanged
    random.Random(0).shuffle(g.nodes)
    with pytest.raises(IRError):
        g.check()
    g.toposort()
    g.check()
    assert [n.name for n in g.nodes] == names  # a chain has only one order
    cyc = _break("cycle")
    with pytest.raises(IRError, match="cycle"):
        cyc.toposort()


def test_toposort_keeps_independent_nodes_in_their_current_order():
    g = Graph("par")
    x = g.add_input("x", TensorType.float32(2))
    nodes = [g.create_node(op, [x], name=op.lower()) for op in ("Neg", "Abs", "Relu", "Sigmoid")]
    g.insert_before(None, *nodes)
    g.nodes.reverse()
    g.toposort()
    assert [n.op_type for n in g.nodes] == ["Sigmoid", "Relu", "Abs", "Neg"]


def test_networkx_view_and_lookups():
    g = _cnn()
    nxg = g.to_networkx()
    assert set(nxg.nodes) == {"conv", "relu", "gap", "flat", "fc"}
    assert [(u, v, d["value"]) for u, v, d in nxg.edges(data=True)][0] == ("conv", "relu", "conv")
    assert nxg.number_of_edges() == 4 and nxg.nodes["fc"]["op_type"] == "Gemm"
    assert [n.name for n in g.find_nodes("Relu")] == ["relu"] and len(g.find_nodes()) == 5
    with pytest.raises(KeyError, match="no node named 'nope'"):
        g.node("nope")
    with pytest.raises(KeyError, match="no value named 'nope'"):
        g.value("nope")
    assert [p.name for p in g.parameters] == ["w", "b", "fc.w"]
    assert g.value("w").is_parameter and g.value("x").is_graph_input and g.value("y").is_graph_output
    assert g.node("conv").param(1).shape == (4, 3, 3, 3) and g.node("conv").param(0) is None
    with pytest.raises(IRError, match="2 outputs"):
        _ = g.create_node("Split", [g.value("x")], num_outputs=2).output


# -- subgraphs (If / Loop bodies read outer values by name) --------------------------------
def _if_graph() -> Graph:
    """x -> Relu(h) -> If(cond) whose branches read h and w from the outer graph."""
    from onnx import helper

    from netmorph.onnx_io import from_onnx

    F = TensorProto.FLOAT
    then_g = helper.make_graph(
        [helper.make_node("Add", ["h", "w"], ["t_out"])], "then", [],
        [helper.make_tensor_value_info("t_out", F, [2])],
    )
    else_g = helper.make_graph(
        [helper.make_node("Mul", ["h", "w"], ["e_out"])], "else", [],
        [helper.make_tensor_value_info("e_out", F, [2])],
    )
    g = helper.make_graph(
        [
            helper.make_node("Relu", ["x"], ["h"], name="relu"),
            helper.make_node("If", ["cond"], ["y"], name="branch", then_branch=then_g, else_branch=else_g),
        ],
        "ifg",
        [
            helper.make_tensor_value_info("x", F, [2]),
            helper.make_tensor_value_info("cond", TensorProto.BOOL, []),
        ],
        [helper.make_tensor_value_info("y", F, [2])],
        [helper.make_tensor("w", F, [2], [1.0, 2.0])],
    )
    return from_onnx(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]))


def test_subgraph_captures_are_implicit_uses():
    g = _if_graph()
    branch = g.node("branch")
    assert branch.has_subgraphs and branch.captured_names() == {"h", "w"}
    assert g.value("h").uses() == []  # explicit uses only ...
    assert ("relu", "branch") in g.to_networkx().edges()  # ... but the dependency is seen
    with pytest.raises(IRError, match="'relu'.*read inside the subgraph of 'branch'"):
        g.remove_node(g.node("relu"))
    with pytest.raises(IRError, match="cannot rename 'h'"):
        g.rename_value(g.value("h"), "hidden")
    g.nodes.reverse()
    with pytest.raises(IRError, match="subgraph reads 'h', which is not defined before it"):
        g.check()
    g.toposort()
    g.check()
    assert [n.name for n in g.nodes] == ["relu", "branch"]
    assert g.remove_unused_parameters() == 0 and g.has_value("w")  # w is read by the branches


def test_new_names_avoid_names_defined_inside_subgraphs():
    g = _if_graph()
    assert g.add_parameter("t_out", np.ones(1, np.float32)).name == "t_out.1"
    with pytest.raises(IRError, match="already used"):
        g.rename_value(g.value("y"), "e_out")
    assert g.clone().unique_value_name("e_out") == "e_out.1"
