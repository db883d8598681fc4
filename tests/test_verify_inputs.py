"""Random inputs that reach the function: integer ranges from the graph, table coverage, dynamic dims."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from netmorph.verification import (
    InputsError,
    IntRange,
    OptionsError,
    infer_int_ranges,
    make_inputs,
    read_batches,
    verify_models,
)
from netmorph.verification.inputs import COVER_ROWS

OPSET = [helper.make_opsetid("", 17)]


def embedder(*, rows: int = 100, type_rows: int = 2, changed_row: int | None = None,
             seq="seq") -> onnx.ModelProto:
    """ids int64[N, seq] -> Gather(emb[rows, 4]) + Gather(type_emb[type_rows, 4], type_ids) -> 'h'."""
    rng = np.random.default_rng(0)
    emb = rng.standard_normal((rows, 4)).astype(np.float32)
    if changed_row is not None:
        emb[changed_row, 1] += 0.5
    temb = rng.standard_normal((type_rows, 4)).astype(np.float32)
    g = helper.make_graph(
        [helper.make_node("Gather", ["emb", "ids"], ["e"]),
         helper.make_node("Gather", ["temb", "type_ids"], ["t"]),
         helper.make_node("Add", ["e", "t"], ["h"])],
        "embed",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["N", seq]),
         helper.make_tensor_value_info("type_ids", TensorProto.INT64, ["N", seq])],
        [helper.make_tensor_value_info("h", TensorProto.FLOAT, ["N", seq, 4])],
        [numpy_helper.from_array(emb, "emb"), numpy_helper.from_array(temb, "temb")],
    )
    return helper.make_model(g, opset_imports=OPSET)


def test_a_change_to_one_row_of_a_100_row_table_fails_and_a_2_row_table_passes():
    a = embedder()
    r = verify_models(a, a)  # before: ids 0..3 into a 2-row token_type table made ORT fail (exit 2)
    assert r.ok
    plan = r.plan
    assert plan["ranges"]["ids"] == {"lo": 0, "hi": 99, "source": "Gather 'emb' rows", "covered": True}
    assert plan["ranges"]["type_ids"]["hi"] == 1 and plan["coverage_batches"] > 0
    feeds = make_inputs(a)
    assert len(feeds) == r.batches == 2 + plan["coverage_batches"]
    seen = np.unique(np.concatenate([f["ids"].ravel() for f in feeds]))
    assert np.array_equal(seen, np.arange(100))  # every row of the table is looked up
    assert set(np.unique(np.concatenate([f["type_ids"].ravel() for f in feeds]))) == {0, 1}
    for row in (0, 57, 99):
        bad = verify_models(a, embedder(changed_row=row))
        assert not bad.ok, row
        h = bad.outputs[0]
        k, idx = h.worst_batch, h.worst_index
        assert feeds[k]["ids"][idx[:2]] == row and idx[2] == 1  # the failing element names that row


def test_fixed_length_input_gets_coverage_batches_too():
    a = embedder(seq=5)
    feeds = make_inputs(a)
    # batch 1 at dim 0 = 3; 75 rows left, 10 per coverage batch
    assert [f["ids"].shape[0] for f in feeds] == [2, 3] + [2] * 8
    assert not verify_models(a, embedder(seq=5, changed_row=57)).ok


def _ranges(nodes, inits, inputs) -> dict[str, IntRange]:
    out = [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)]
    g = helper.make_graph(nodes, "r", inputs, out, inits)
    return infer_int_ranges(helper.make_model(g, opset_imports=OPSET), [i.name for i in inputs])


def test_ranges_follow_shape_ops_onehot_and_comparisons():
    i64 = TensorProto.INT64
    table = numpy_helper.from_array(np.zeros((30, 2), np.float32), "table")
    depth = numpy_helper.from_array(np.array(7, np.int64), "depth")
    onoff = numpy_helper.from_array(np.array([0.0, 1.0], np.float32), "onoff")
    c50 = numpy_helper.from_array(np.array(50, np.int64), "c50")
    r = _ranges(
        [helper.make_node("Unsqueeze", ["a", "ax"], ["a1"]), helper.make_node("Cast", ["a1"], ["a2"], to=i64),
         helper.make_node("Gather", ["table", "a2"], ["ga"]),
         helper.make_node("OneHot", ["b", "depth", "onoff"], ["ob"]),
         helper.make_node("Less", ["c", "c50"], ["lc"]),
         helper.make_node("Gather", ["table", "d"], ["gd"]),
         helper.make_node("OneHot", ["d", "depth", "onoff"], ["od"]),
         helper.make_node("Cast", ["e"], ["y"], to=TensorProto.FLOAT)],
        [table, depth, onoff, c50, numpy_helper.from_array(np.array([0], np.int64), "ax")],
        [helper.make_tensor_value_info(n, TensorProto.INT32 if n == "a" else i64, ["N"]) for n in "abcde"],
    )
    assert (r["a"].lo, r["a"].hi) == (0, 29) and "Gather 'table' rows" in r["a"].source
    assert (r["b"].lo, r["b"].hi) == (0, 6)
    assert (r["c"].lo, r["c"].hi) == (0, 51) and r["c"].source == "comparisons with constants"
    assert (r["d"].lo, r["d"].hi) == (0, 6)  # valid for both the 30-row table and depth 7
    assert "e" not in r  # nothing bounds it: the default 0..3 applies
    # position ids offset by a constant (ids + 2 indexes the table): the range shifts with it
    two = numpy_helper.from_array(np.array(2, np.int64), "two")
    nodes = [helper.make_node("Add", ["p", "two"], ["p2"]),
             helper.make_node("Gather", ["table", "p2"], ["g"]),
             helper.make_node("Sub", ["q", "two"], ["q2"]),
             helper.make_node("Gather", ["table", "q2"], ["h"])]
    r = _ranges(nodes, [table, two], [helper.make_tensor_value_info(n, i64, ["N"]) for n in "pq"])
    assert (r["p"].lo, r["p"].hi) == (-2, 27) and "(ids +2)" in r["p"].source
    assert (r["q"].lo, r["q"].hi) == (2, 31)


def test_range_option_overrides_and_tables_beyond_the_cover_limit_are_sampled():
    a = embedder(rows=COVER_ROWS + 10)
    feeds = make_inputs(a)
    assert len(feeds) == 2  # sampled, no coverage batches
    ids = np.concatenate([f["ids"].ravel() for f in feeds])
    assert ids.min() >= 0 and ids.max() <= COVER_ROWS + 9 and np.unique(ids).size > 4
    feeds = make_inputs(embedder(), ranges={"ids": (10, 12)})
    assert set(np.unique(np.concatenate([f["ids"].ravel() for f in feeds]))) == {10, 11, 12}
    with pytest.raises(OptionsError, match="--range nope: no model input"):
        make_inputs(embedder(), ranges={"nope": (0, 1)})
    with pytest.raises(OptionsError, match="--dim L: the inputs have no symbolic dim.*seq"):
        make_inputs(embedder(), dims={"L": 3})


def attention(mask: str) -> onnx.ModelProto:
    """Single-head self-attention over ids int64[B, S] (embedding 20x8), dynamic batch and sequence.

    ``mask``: ``"full"`` (none), ``"causal-inf"`` (future positions -inf) or ``"causal-1e9"`` (-1e9).
    """
    rng = np.random.default_rng(1)
    d = 8
    inits = [numpy_helper.from_array(rng.standard_normal((20, d)).astype(np.float32), "emb")]
    inits += [numpy_helper.from_array((rng.standard_normal((d, d)) / np.sqrt(d)).astype(np.float32), n)
              for n in ("wq", "wk", "wv")]
    inits += [numpy_helper.from_array(np.array(1 / np.sqrt(d), np.float32), "scale"),
              numpy_helper.from_array(np.array([1], np.int64), "one"),
              numpy_helper.from_array(np.array(0, np.int64), "zero"),
              numpy_helper.from_array(np.array(1, np.int64), "step"),
              numpy_helper.from_array(np.array([0], np.int64), "ax0"),
              numpy_helper.from_array(np.array([1], np.int64), "ax1")]
    nodes = [helper.make_node("Gather", ["emb", "ids"], ["x"]),
             helper.make_node("MatMul", ["x", "wq"], ["q"]), helper.make_node("MatMul", ["x", "wk"], ["k"]),
             helper.make_node("MatMul", ["x", "wv"], ["v"]),
             helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 2, 1]),
             helper.make_node("MatMul", ["q", "kt"], ["s0"]), helper.make_node("Mul", ["s0", "scale"], ["s"])]
    scores = "s"
    if mask != "full":
        fill = -np.inf if mask == "causal-inf" else -1e9
        inits += [numpy_helper.from_array(np.array(fill, np.float32), "fill"),
                  numpy_helper.from_array(np.array(0, np.float32), "zf")]
        nodes += [helper.make_node("Shape", ["ids"], ["shp"]),
                  helper.make_node("Gather", ["shp", "one"], ["len1"]),
                  helper.make_node("Squeeze", ["len1"], ["len"]),
                  helper.make_node("Range", ["zero", "len", "step"], ["pos"]),
                  helper.make_node("Unsqueeze", ["pos", "ax0"], ["row"]),
                  helper.make_node("Unsqueeze", ["pos", "ax1"], ["col"]),
                  helper.make_node("Greater", ["row", "col"], ["future"]),  # j > i
                  helper.make_node("Where", ["future", "fill", "zf"], ["m"]),
                  helper.make_node("Add", ["s", "m"], ["sm"])]
        scores = "sm"
    nodes += [helper.make_node("Softmax", [scores], ["p"], axis=-1),
              helper.make_node("MatMul", ["p", "v"], ["out"])]
    ids = helper.make_tensor_value_info("ids", TensorProto.INT64, ["B", "S"])
    g = helper.make_graph(nodes, "attn", [ids],
                          [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["B", "S", d])], inits)
    return helper.make_model(g, opset_imports=OPSET)


def test_attention_with_dynamic_batch_and_sequence():
    causal, full, causal_1e9 = attention("causal-inf"), attention("full"), attention("causal-1e9")
    r = verify_models(causal, full)  # no inputs given: sequence lengths 8 and 1
    assert not r.ok
    assert [d["S"] for d in r.plan["batch_dims"][:2]] == [8, 1] and r.plan["batch_dims"][0]["B"] == 2
    assert r.outputs[0].worst_batch != 1  # length 1 cannot tell causal from full
    assert verify_models(causal, causal_1e9).ok  # exp(-inf) and exp(-1e9) are both exactly 0
    # length 1 only: the masks agree, as they must
    assert verify_models(causal, full, dims={"S": 1}).ok
    assert not verify_models(causal, full, dims={"S": 3}, batches=1).ok


def test_npz_with_several_batches_and_a_folder_of_them(tmp_path):
    causal, full = attention("causal-inf"), attention("full")
    rng = np.random.default_rng(0)
    one = {"batch0/ids": np.zeros((1, 1), np.int64), "batch1/ids": rng.integers(0, 20, (2, 1))}
    np.savez(tmp_path / "short.npz", **one)
    r = verify_models(causal, full, inputs=tmp_path / "short.npz")
    assert r.ok and r.batches == 2 and r.inputs == "npz"  # length-1 batches only: no difference
    folder = tmp_path / "batches"
    folder.mkdir()
    np.savez(folder / "a.npz", **one)
    np.savez(folder / "b.npz", ids=rng.integers(0, 20, (3, 6)))
    assert [b["ids"].shape for b in read_batches(folder)] == [(1, 1), (2, 1), (3, 6)]
    r = verify_models(causal, full, inputs=folder)
    assert not r.ok and r.batches == 3 and r.outputs[0].worst_batch == 2
    np.savez(tmp_path / "mixed.npz", **{"batch0/ids": np.zeros((1, 1), np.int64), "ids": np.zeros((1, 1))})
    with pytest.raises(InputsError, match="mixes batchK/NAME keys"):
        read_batches(tmp_path / "mixed.npz")
    with pytest.raises(InputsError, match="holds no .npz"):
        read_batches(_empty(tmp_path))


def _empty(tmp_path):
    d = tmp_path / "empty"
    d.mkdir()
    return d


def test_bool_and_fp16_inputs_still_work():
    g = helper.make_graph(
        [helper.make_node("Cast", ["x"], ["x16"], to=TensorProto.FLOAT16),
         helper.make_node("Mul", ["x16", "h"], ["y0"]),
         helper.make_node("Cast", ["y0"], ["yf"], to=TensorProto.FLOAT),
         helper.make_node("Where", ["flag", "yf", "z"], ["y"])],
        "bf",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4]),
         helper.make_tensor_value_info("h", TensorProto.FLOAT16, ["N", 4]),
         helper.make_tensor_value_info("flag", TensorProto.BOOL, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
        [numpy_helper.from_array(np.zeros(1, np.float32), "z")],
    )
    m = helper.make_model(g, opset_imports=OPSET)
    feeds = make_inputs(m)
    assert feeds[0]["flag"].dtype == np.bool_ and feeds[0]["h"].dtype == np.float16
    assert 0 < feeds[0]["flag"].mean() < 1
    assert verify_models(m, m).ok
