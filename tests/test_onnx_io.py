"""ONNX ⇄ IR: lossless carry-through, bad files refused clearly, atomic saves."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import netmorph
from netmorph.ir import Graph, Parameter, TensorType
from netmorph.onnx_io import OnnxFormatError, from_onnx, to_onnx
from netmorph.onnx_io.compare import normalise_proto, proto_differences

F = TensorProto.FLOAT


# -- model builders ------------------------------------------------------------------------
def _subgraph_model() -> onnx.ModelProto:
    """A runnable model with If (two branches reading an outer value) and Loop."""
    x = helper.make_tensor_value_info("x", F, ["N", 4])
    cond = helper.make_tensor_value_info("cond", TensorProto.BOOL, [])
    y = helper.make_tensor_value_info("y", F, ["N", 4])
    z = helper.make_tensor_value_info("z", F, ["N", 4])
    then_g = helper.make_graph(
        [helper.make_node("Add", ["h", "w"], ["t_out"], name="then_add")],
        "then", [], [helper.make_tensor_value_info("t_out", F, ["N", 4])],
    )
    else_g = helper.make_graph(
        [helper.make_node("Mul", ["h", "w"], ["e_out"], name="else_mul", doc_string="else branch")],
        "else", [], [helper.make_tensor_value_info("e_out", F, ["N", 4])],
    )
    body = helper.make_graph(
        [
            helper.make_node("Identity", ["b_cond_in"], ["b_cond_out"], name="body_cond"),
            helper.make_node("Add", ["b_acc_in", "w"], ["b_acc_out"], name="body_add"),
        ],
        "body",
        [
            helper.make_tensor_value_info("b_iter", TensorProto.INT64, []),
            helper.make_tensor_value_info("b_cond_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("b_acc_in", F, ["N", 4]),
        ],
        [
            helper.make_tensor_value_info("b_cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("b_acc_out", F, ["N", 4]),
        ],
    )
    w = numpy_helper.from_array(np.linspace(-1, 1, 4, dtype=np.float32), "w")
    trip = numpy_helper.from_array(np.array(3, dtype=np.int64), "trip")
    nodes = [
        helper.make_node("Relu", ["x"], ["h"], name="relu"),
        helper.make_node("If", ["cond"], ["y"], name="branch", then_branch=then_g, else_branch=else_g),
        helper.make_node("Loop", ["trip", "cond", "h"], ["z"], name="loop", body=body),
    ]
    g = helper.make_graph(nodes, "subgraphs", [x, cond], [y, z], [w, trip])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def _kitchen_sink_model() -> onnx.ModelProto:
    """Everything the IR does not interpret, for carry-through tests (not runnable)."""
    x_type = helper.make_tensor_type_proto(F, ["N", 3])
    x_type.denotation = "TENSOR"
    x_type.tensor_type.shape.dim[0].denotation = "DATA_BATCH"
    x = helper.make_value_info("x", x_type, doc_string="the input")
    xm = x.metadata_props.add()
    xm.key, xm.value = "role", "input"
    seq_in = helper.make_value_info(
        "s", helper.make_sequence_type_proto(helper.make_tensor_type_proto(F, [None]))
    )
    out = helper.make_tensor_value_info("out", F, ["N", 2], doc_string="the output")
    frob_out = helper.make_tensor_value_info("frob_out", F, ["N", "K"])
    w = numpy_helper.from_array(np.arange(6, dtype=np.float32).reshape(3, 2), "W")
    typed = helper.make_tensor("typed_b", F, [2], [0.5, -0.5])  # float_data, not raw_data
    shape = numpy_helper.from_array(np.array([-1, 2], dtype=np.int64), "shape")
    then_g = helper.make_graph(
        [helper.make_node("Identity", ["mm"], ["t"], name="then_id")], "then", [],
        [helper.make_tensor_value_info("t", F, ["N", 2])],
    )
    else_g = helper.make_graph(
        [helper.make_node("Neg", ["mm"], ["e"], name="else_neg")], "else", [],
        [helper.make_tensor_value_info("e", F, ["N", 2])],
    )
    fn = helper.make_function(
        "com.example", "Twice", ["a"], ["b"],
        [helper.make_node("Add", ["a", "a"], ["b"])],
        [helper.make_opsetid("", 17)],
    )
    nodes = [
        helper.make_node("MatMul", ["x", "W"], ["mm"], name="matmul", doc_string="x @ W"),
        helper.make_node(
            "Frob", ["mm", "", "shape"], ["frob_out", "frob_aux"], name="frob", domain="com.example",
            i=3, f=0.25, s="text", ints=[1, 2], floats=[0.5], strings=["a", "b"],
            t=numpy_helper.from_array(np.ones(2, np.float32), "attr_t"),
        ),
        helper.make_node("Dropout", ["mm"], ["drop", ""], name="dropout"),
        helper.make_node("If", ["cond"], ["branch_out"], name="branch", then_branch=then_g,
                         else_branch=else_g),
        helper.make_node("Twice", ["branch_out"], ["twice"], name="", domain="com.example"),
        helper.make_node("Add", ["twice", "typed_b"], ["out"], name=""),
    ]
    cond = helper.make_tensor_value_info("cond", TensorProto.BOOL, [])
    vi = [
        helper.make_tensor_value_info("mm", F, ["N", 2], doc_string="product"),
        helper.make_tensor_value_info("W", F, [3, 2], doc_string="weight info"),
        helper.make_tensor_value_info("somewhere_else", F, [7]),
        helper.make_tensor_value_info("frob_aux", TensorProto.INT64, [1]),
    ]
    g = helper.make_graph(
        nodes, "sink", [x, cond, seq_in], [out, frob_out], [w, typed, shape], doc_string="graph doc",
        value_info=vi,
    )
    m = helper.make_model(
        g,
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 2)],
        functions=[fn], producer_name="hand", producer_version="1.0", doc_string="model doc",
        domain="org.test", model_version=7,
    )
    helper.set_model_props(m, {"author": "netmorph tests", "purpose": "carry-through"})
    mp = m.graph.node[0].metadata_props.add()
    mp.key, mp.value = "origin", "matmul metadata"
    gm = m.graph.metadata_props.add()
    gm.key, gm.value = "graph_key", "graph value"
    vm = m.graph.value_info[1].metadata_props.add()
    vm.key, vm.value = "param_key", "param value"
    return m


def _roundtrip_file(model: onnx.ModelProto, tmp_path: Path, **save_kw) -> onnx.ModelProto:
    src, dst = tmp_path / "in.onnx", tmp_path / "out.onnx"
    onnx.save(model, src)
    netmorph.save(netmorph.load(src), dst, **save_kw)
    return onnx.load(dst)


def _ort_run(model: onnx.ModelProto, feeds: dict) -> list[np.ndarray]:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


# -- lossless carry-through ----------------------------------------------------------------
def test_kitchen_sink_in_memory_roundtrip_is_lossless():
    m = _kitchen_sink_model()
    back = to_onnx(from_onnx(m))
    assert proto_differences(m, back) == []
    onnx.checker.check_model(back)


def test_kitchen_sink_file_roundtrip_is_lossless(tmp_path):
    m = _kitchen_sink_model()
    back = _roundtrip_file(m, tmp_path)
    assert proto_differences(m, back) == []


def test_kitchen_sink_pieces_survive_explicitly():
    """Spot checks, so a bug in the normaliser cannot hide a loss."""
    back = to_onnx(from_onnx(_kitchen_sink_model()))
    assert [(o.domain, o.version) for o in back.opset_import] == [("", 17), ("com.example", 2)]
    assert {(p.key, p.value) for p in back.metadata_props} == {
        ("author", "netmorph tests"), ("purpose", "carry-through")
    }
    assert back.doc_string == "model doc" and back.graph.doc_string == "graph doc"
    assert back.functions[0].name == "Twice"
    frob = next(n for n in back.graph.node if n.op_type == "Frob")
    assert frob.domain == "com.example" and list(frob.input) == ["mm", "", "shape"]
    attrs = {a.name: helper.get_attribute_value(a) for a in frob.attribute}
    assert attrs["i"] == 3 and attrs["s"] == b"text" and attrs["strings"] == [b"a", b"b"]
    assert [a.name for a in frob.attribute] == [a.name for a in _kitchen_sink_model().graph.node[1].attribute]
    branch = next(n for n in back.graph.node if n.op_type == "If")
    then_g = helper.get_attribute_value(branch.attribute[0])
    assert then_g.node[0].input[0] == "mm"
    dropout = next(n for n in back.graph.node if n.op_type == "Dropout")
    assert list(dropout.output) == ["drop", ""]
    x = back.graph.input[0]
    assert x.type.denotation == "TENSOR" and x.type.tensor_type.shape.dim[0].denotation == "DATA_BATCH"
    assert back.graph.input[2].type.HasField("sequence_type")
    assert [(p.key, p.value) for p in x.metadata_props] == [("role", "input")]
    vi = {v.name: v for v in back.graph.value_info}
    assert vi["mm"].doc_string == "product"
    assert [(p.key, p.value) for p in vi["W"].metadata_props] == [("param_key", "param value")]
    assert "somewhere_else" in vi
    assert back.graph.initializer[1].float_data == [0.5, -0.5]
    assert [(p.key, p.value) for p in back.graph.node[0].metadata_props] == [("origin", "matmul metadata")]


def test_value_info_of_a_changed_parameter_is_retyped():
    g = from_onnx(_kitchen_sink_model())
    g.set_parameter(g.value("W"), np.zeros((3, 5), np.float32))
    back = to_onnx(g)
    vi = {v.name: v for v in back.graph.value_info}
    assert [d.dim_value for d in vi["W"].type.tensor_type.shape.dim] == [3, 5]
    assert vi["W"].doc_string == "weight info"


def test_retyped_value_drops_the_stale_kept_type_proto():
    g = from_onnx(_kitchen_sink_model())
    x = g.value("x")
    x.type = TensorType.float32("N", 5)
    back = to_onnx(g)
    dims = back.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value or d.dim_param for d in dims] == ["N", 5]


def test_subgraph_model_roundtrip_runs_bit_identically(tmp_path, rng):
    m = _subgraph_model()
    onnx.checker.check_model(m, full_check=True)
    feeds_list = [
        {"x": rng.standard_normal((2, 4)).astype(np.float32), "cond": np.array(c)} for c in (True, False)
    ]
    for back in (to_onnx(from_onnx(m)), _roundtrip_file(m, tmp_path)):
        onnx.checker.check_model(back, full_check=True)
        assert proto_differences(m, back) == []
        for feeds in feeds_list:
            for a, b in zip(_ort_run(m, feeds), _ort_run(back, feeds), strict=True):
                np.testing.assert_array_equal(a, b)


def test_initializers_listed_as_inputs_keep_their_place(tmp_path):
    x = helper.make_tensor_value_info("x", F, [2])
    b = helper.make_tensor_value_info("b", F, [2])
    y = helper.make_tensor_value_info("y", F, [2])
    init = numpy_helper.from_array(np.array([1.0, 2.0], np.float32), "b")
    g = helper.make_graph([helper.make_node("Add", ["x", "b"], ["y"])], "g", [x, b], [y], [init])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    for back in (to_onnx(from_onnx(m)), _roundtrip_file(m, tmp_path)):
        assert proto_differences(m, back) == []
        feeds = {"x": np.array([3.0, 4.0], np.float32)}
        np.testing.assert_array_equal(_ort_run(m, feeds)[0], _ort_run(back, feeds)[0])


def test_normaliser_sees_real_differences():
    m = _kitchen_sink_model()
    other = onnx.ModelProto()
    other.CopyFrom(m)
    other.graph.node[1].attribute[0].i += 1
    assert proto_differences(m, other)
    other.CopyFrom(m)
    other.graph.node[0].domain = ""  # presence only: not a difference
    assert normalise_proto(m) == normalise_proto(other)
    other.graph.value_info.reverse()  # value_info order is not semantic
    assert proto_differences(m, other) == []


def test_torch_cnn_fixture_roundtrips(torch_cnn_onnx, tmp_path, rng):
    m = onnx.load(torch_cnn_onnx)
    back = _roundtrip_file(m, tmp_path)
    onnx.checker.check_model(back, full_check=True)
    assert proto_differences(m, back) == []
    feeds = {"x": rng.standard_normal((3, 3, 16, 16)).astype(np.float32)}
    np.testing.assert_array_equal(_ort_run(m, feeds)[0], _ort_run(back, feeds)[0])


def test_saved_file_equals_to_onnx(torch_cnn_onnx, tmp_path):
    """The streaming writer and the in-memory converter give the same proto, field for field
    (presence included), and the file's graph is a canonical serialisation."""
    g = netmorph.load(torch_cnn_onnx)
    g.set_parameter(g.parameters[0], g.parameters[0].const.array * 2)  # one array-backed tensor
    netmorph.save(g, tmp_path / "s.onnx")
    data = (tmp_path / "s.onnx").read_bytes()
    expected = to_onnx(g)
    assert onnx.load_from_string(data) == expected
    assert data.endswith(expected.graph.SerializeToString())  # the graph is written last
    assert len(data) == expected.ByteSize()


# -- bad input ------------------------------------------------------------------------------
def _assert_one_line_naming(err: pytest.ExceptionInfo, path: Path) -> None:
    msg = str(err.value)
    assert "\n" not in msg and str(path) in msg, msg


@pytest.mark.parametrize("fraction", [i / 23 for i in range(1, 23)])
def test_truncated_model_is_refused(torch_cnn_onnx, tmp_path, fraction):
    data = torch_cnn_onnx.read_bytes()
    bad = tmp_path / "cut.onnx"
    bad.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(OnnxFormatError) as err:
        netmorph.load(bad)
    _assert_one_line_naming(err, bad)


def test_truncated_netmorph_save_is_always_refused(tmp_path):
    """netmorph writes the graph last, so even a cut in the metadata area is detected."""
    g = netmorph.build("plain", levels=1, blocks=1)
    assert g.metadata_props  # the builder records its configuration
    good = tmp_path / "good.onnx"
    netmorph.save(g, good)
    data = good.read_bytes()
    bad = tmp_path / "cut.onnx"
    for cut in sorted({*range(0, 400, 7), *range(0, len(data), max(1, len(data) // 60))}):
        bad.write_bytes(data[:cut])
        with pytest.raises(OnnxFormatError):
            netmorph.load(bad)


@pytest.mark.parametrize(
    "content",
    [b"", b"hello, this is a text file\nnot a model\n", b"\x08\x07", "random", "zeros"],
    ids=["empty", "text", "ir-version-only", "random", "zeros"],
)
def test_foreign_files_are_refused(tmp_path, content):
    if content == "random":
        content = np.random.default_rng(1).bytes(4096)
    elif content == "zeros":
        content = bytes(1000)
    bad = tmp_path / "foreign.onnx"
    bad.write_bytes(content)
    with pytest.raises(OnnxFormatError) as err:
        netmorph.load(bad)
    _assert_one_line_naming(err, bad)


def test_missing_path_and_directory_are_refused(tmp_path):
    with pytest.raises(OnnxFormatError, match="no such file"):
        netmorph.load(tmp_path / "nope.onnx")
    with pytest.raises(OnnxFormatError, match="not a regular file"):
        netmorph.load(tmp_path)


def test_dangling_node_input_is_refused_with_file_and_node(tmp_path):
    x = helper.make_tensor_value_info("x", F, [2])
    y = helper.make_tensor_value_info("y", F, [2])
    g = helper.make_graph([helper.make_node("Add", ["x", "ghost"], ["y"], name="adder")], "g", [x], [y])
    bad = tmp_path / "dangling.onnx"
    onnx.save(helper.make_model(g), bad)
    with pytest.raises(OnnxFormatError, match="adder.*ghost") as err:
        netmorph.load(bad)
    _assert_one_line_naming(err, bad)


@pytest.mark.parametrize("case", ["dup-output", "dup-input", "dup-initializer", "no-producer-output"])
def test_non_ssa_graphs_are_refused(tmp_path, case):
    x = helper.make_tensor_value_info("x", F, [2])
    y = helper.make_tensor_value_info("y", F, [2])
    nodes = [helper.make_node("Relu", ["x"], ["y"])]
    inputs, inits = [x], []
    if case == "dup-output":
        nodes.append(helper.make_node("Neg", ["x"], ["y"]))
    elif case == "dup-input":
        inputs.append(helper.make_tensor_value_info("x", F, [2]))
    elif case == "dup-initializer":
        inits = [numpy_helper.from_array(np.ones(2, np.float32), "w")] * 2
    else:
        nodes = []
    m = helper.make_model(helper.make_graph(nodes, "g", inputs, [y], inits))
    bad = tmp_path / f"{case}.onnx"
    onnx.save(m, bad)
    with pytest.raises(OnnxFormatError) as err:
        netmorph.load(bad)
    _assert_one_line_naming(err, bad)


def test_sparse_initializer_is_refused(tmp_path):
    values = numpy_helper.from_array(np.array([1.0], np.float32), "sp")
    indices = numpy_helper.from_array(np.array([1], np.int64), "sp_idx")
    sparse = helper.make_sparse_tensor(values, indices, [3])
    x = helper.make_tensor_value_info("x", F, [3])
    y = helper.make_tensor_value_info("y", F, [3])
    g = helper.make_graph([helper.make_node("Add", ["x", "sp"], ["y"])], "g", [x], [y])
    g.sparse_initializer.append(sparse)
    bad = tmp_path / "sparse.onnx"
    onnx.save(helper.make_model(g), bad)
    with pytest.raises(OnnxFormatError, match="sparse initializers are not supported.*'sp'") as err:
        netmorph.load(bad)
    _assert_one_line_naming(err, bad)


# -- atomic saves ---------------------------------------------------------------------------
def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def _graph_with_unread_external_param(torch_cnn_onnx: Path) -> Graph:
    """A real failing object: a parameter whose external data was never read (cannot be saved)."""
    g = netmorph.load(torch_cnn_onnx)
    tp = TensorProto()
    tp.name, tp.data_type = "late", F
    tp.dims.extend([4])
    tp.data_location = TensorProto.EXTERNAL
    for k, v in (("location", "never_read.bin"), ("offset", "0"), ("length", "16")):
        e = tp.external_data.add()
        e.key, e.value = k, v
    g.add_parameter("late", Parameter(proto=tp))  # last: the other weights are streamed first
    return g


@pytest.mark.parametrize("external", [False, True], ids=["inline", "external-data"])
def test_failed_save_keeps_the_old_file_and_leaves_no_temp_files(torch_cnn_onnx, tmp_path, external):
    target = tmp_path / "model.onnx"
    netmorph.save(netmorph.load(torch_cnn_onnx), target, external_data=external)
    before = target.read_bytes()
    side_before = (tmp_path / "model.onnx.data").read_bytes() if external else None
    g = _graph_with_unread_external_param(torch_cnn_onnx)
    with pytest.raises(OnnxFormatError, match="'late'.*external data"):
        netmorph.save(g, target, external_data=external)
    assert target.read_bytes() == before
    if external:
        assert (tmp_path / "model.onnx.data").read_bytes() == side_before
    assert _leftovers(tmp_path) == []
    assert netmorph.load(target).parameter_count() == netmorph.load(torch_cnn_onnx).parameter_count()


def test_failure_after_writing_everything_cleans_up(torch_cnn_onnx, tmp_path):
    """A folder at the target is refused before anything is written; and when the model's rename
    fails after the side file was moved (a folder appeared meanwhile), the previous side file is
    put back and no temporary file is left."""
    from netmorph.atomic import OutputError, make_temp
    from netmorph.onnx_io.files import _replace_pair

    g = netmorph.load(torch_cnn_onnx)
    target = tmp_path / "model.onnx"
    target.mkdir()
    (target / "keep.txt").write_text("still here")
    side = tmp_path / "model.onnx.data"
    side.write_bytes(b"the previous weights")
    with pytest.raises(OutputError, match="is a directory"):
        netmorph.save(g, target, external_data=True)
    assert (target / "keep.txt").read_text() == "still here"
    assert side.read_bytes() == b"the previous weights"
    assert _leftovers(tmp_path) == []
    for previous in (b"the previous weights", None):
        if previous is None:
            side.unlink()
        fd_side, side_tmp = make_temp(side)
        os.write(fd_side, b"new weights")
        os.close(fd_side)
        fd_model, model_tmp = make_temp(target)
        os.close(fd_model)
        with pytest.raises(OSError):
            _replace_pair(side_tmp, side, model_tmp, target)
        os.unlink(model_tmp)
        assert (side.read_bytes() if previous else side.exists()) == (previous or False)
        assert (target / "keep.txt").read_text() == "still here"
        assert _leftovers(tmp_path) == []


def test_save_refuses_unread_external_data_before_writing(torch_cnn_onnx, tmp_path):
    g = _graph_with_unread_external_param(torch_cnn_onnx)
    with pytest.raises(OnnxFormatError):
        netmorph.save(g, tmp_path / "new.onnx")
    assert list(tmp_path.iterdir()) == []


def test_save_respects_umask_and_overwrites(torch_cnn_onnx, tmp_path):
    g = netmorph.load(torch_cnn_onnx)
    target = tmp_path / "m.onnx"
    target.write_bytes(b"old")
    old = os.umask(0o022)
    try:
        netmorph.save(g, target)
    finally:
        os.umask(old)
    assert target.stat().st_mode & 0o777 == 0o644
    assert netmorph.load(target).parameter_count() == g.parameter_count()


@pytest.mark.parametrize(
    "kwargs",
    [{"family": "plain", "levels": 2, "blocks": 2}, {"family": "resnet", "levels": 2, "residual_ratio": 0.5}],
    ids=["plainnet", "resnet"],
)
def test_netmorph_built_models_roundtrip(kwargs, tmp_path, rng):
    """The models netmorph itself builds go through files and memory unchanged."""
    g = netmorph.build(bn_stats=True, **kwargs)
    m = to_onnx(g)
    onnx.checker.check_model(m, full_check=True)
    back = _roundtrip_file(m, tmp_path)
    onnx.checker.check_model(back, full_check=True)
    assert proto_differences(m, back) == [] and proto_differences(m, to_onnx(from_onnx(m))) == []
    name = m.graph.input[0].name
    x = rng.standard_normal((2, 3, 32, 32)).astype(np.float32)
    np.testing.assert_array_equal(_ort_run(m, {name: x})[0], _ort_run(back, {name: x})[0])


def test_value_info_of_outputs_and_passthrough_outputs_survive(tmp_path):
    """value_info naming a graph output, and an output that is an input / initializer."""
    x = helper.make_tensor_value_info("x", F, ["N", 2], doc_string="as input")
    x_out = helper.make_tensor_value_info("x", F, ["N", 2], doc_string="as output")
    c_out = helper.make_tensor_value_info("c", F, [2], doc_string="a constant output")
    y = helper.make_tensor_value_info("y", F, ["N", 2])
    g = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])], "pass", [x], [y, x_out, c_out],
        [numpy_helper.from_array(np.array([1.0, 2.0], np.float32), "c")],
        value_info=[helper.make_tensor_value_info("y", F, [None, 2], doc_string="info about y")],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(m, full_check=True)
    for back in (to_onnx(from_onnx(m)), _roundtrip_file(m, tmp_path)):
        assert proto_differences(m, back) == []
        feeds = {"x": np.array([[-1.0, 3.0]], np.float32)}
        for a, b in zip(_ort_run(m, feeds), _ort_run(back, feeds), strict=True):
            np.testing.assert_array_equal(a, b)
    ir = from_onnx(m)
    assert ir.value("x").doc_string == "as input" and ir.outputs[1] is ir.value("x")
