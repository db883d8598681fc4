"""Conformance: the ONNX backend node test cases for the ops netmorph touches, through the IR.

Each case's model goes ONNX → IR → ONNX (in memory and through a file). The result must
pass the full checker wherever the original does, keep every proto field, give ONNX
Runtime outputs bit-identical to the original model's, and match the case's expected
outputs within the backend's tolerances. A case ONNX Runtime cannot run even in its
original form is skipped, after checking that the round-tripped model fails the same way.
"""

from __future__ import annotations

import functools
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import netmorph
from netmorph.onnx_io import from_onnx, to_onnx
from netmorph.onnx_io.compare import proto_differences

OPS = [
    "Conv", "ConvTranspose", "BatchNormalization", "Relu", "PRelu", "LeakyRelu", "Add", "Mul", "Sub",
    "Div", "Gemm", "MatMul", "GlobalAveragePool", "AveragePool", "MaxPool", "Flatten", "Reshape",
    "Concat", "Softmax", "Clip", "ReduceMean", "Sigmoid", "Identity", "Pad", "Split", "Slice",
    "Transpose", "Squeeze", "Unsqueeze", "Constant",
]


@functools.cache
def _all_cases() -> list:
    from onnx.backend.test.loader import load_model_tests

    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        return list(load_model_tests(kind="node"))


@functools.cache
def _cases_by_op() -> dict[str, list]:
    cases = _all_cases()
    by_op: dict[str, list] = {op: [] for op in OPS}
    primary: dict[str, str] = {}
    for c in cases:  # a case of op X: its graph is one X node (Constant nodes aside)
        ops = [n.op_type for n in c.model.graph.node if n.op_type != "Constant"] or ["Constant"]
        if len(ops) == 1 and ops[0] in by_op and c.model.graph.node[0].domain in ("", "ai.onnx"):
            primary[c.name] = ops[0]
            by_op[ops[0]].append(c)
    for c in cases:  # ... or the function-expanded form of such a case
        base = c.name.split("_expanded")[0]
        if "_expanded" in c.name and base in primary:
            by_op[primary[base]].append(c)
    return by_op


def _feeds(model: onnx.ModelProto, inputs: list) -> dict:
    init = {t.name for t in model.graph.initializer}
    names = [vi.name for vi in model.graph.input if vi.name not in init]
    return {n: np.asarray(v) if isinstance(v, np.generic) else v for n, v in zip(names, inputs, strict=False)}


def _run(model: onnx.ModelProto, feeds: dict) -> list:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def _same(a, b) -> bool:
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(map(_same, a, b))
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def _close(actual, expected, rtol: float, atol: float) -> None:
    if isinstance(expected, list):
        assert len(actual) == len(expected)
        for a, e in zip(actual, expected, strict=True):
            _close(a, e, rtol, atol)
        return
    np.testing.assert_allclose(np.asarray(actual), np.asarray(expected), rtol=rtol, atol=atol)


def _check_case(case, tmp_path) -> str | None:
    """Run one case; returns a reason string when ORT cannot run the original (skip)."""
    m = case.model
    in_memory = to_onnx(from_onnx(m))
    src, dst = tmp_path / f"{case.name}.onnx", tmp_path / f"{case.name}.rt.onnx"
    onnx.save(m, src)
    netmorph.save(netmorph.load(src), dst)
    via_file = onnx.load(dst)
    for back in (in_memory, via_file):
        assert proto_differences(m, back) == [], case.name
    try:
        onnx.checker.check_model(m, full_check=True)
        original_ok = True
    except onnx.checker.ValidationError:
        original_ok = False
    for back in (in_memory, via_file):
        if original_ok:
            onnx.checker.check_model(back, full_check=True)
        else:
            with pytest.raises(onnx.checker.ValidationError):
                onnx.checker.check_model(back, full_check=True)
    for inputs, expected in case.data_sets:
        feeds = _feeds(m, inputs)
        try:
            ref = _run(m, feeds)
        except Exception as e:  # ORT cannot run this case at all: the copy must fail too
            for back in (in_memory, via_file):
                with pytest.raises(Exception):  # noqa: B017 - any ORT failure
                    _run(back, feeds)
            return f"{case.name}: ONNX Runtime cannot run the original ({str(e).splitlines()[0][:80]})"
        for back in (in_memory, via_file):
            got = _run(back, feeds)
            assert all(_same(a, b) for a, b in zip(got, ref, strict=True)), f"{case.name}: not bit-identical"
        rtol, atol = min(case.rtol, 1e-3), min(case.atol, 1e-7)
        for a, e in zip(ref, expected, strict=True):
            _close(a, e, rtol, atol)
    return None


@pytest.mark.parametrize("op", OPS)
def test_node_cases_roundtrip(op, tmp_path):
    cases = _cases_by_op()[op]
    assert cases, f"no backend node cases for {op}"
    skipped = [r for c in cases if (r := _check_case(c, tmp_path)) is not None]
    assert len(skipped) < len(cases), f"every {op} case was skipped: {skipped}"
    if skipped:
        warnings.warn(f"{op}: {len(skipped)} of {len(cases)} cases skipped: {skipped}", stacklevel=1)


def test_every_node_case_is_carried_through_losslessly():
    """All backend node models (every op, sequences, optionals, ai.onnx.ml, training ops …)
    survive ONNX → IR → ONNX field for field (in memory; files are covered above and the
    writer is checked to produce exactly ``to_onnx``'s proto in test_onnx_io)."""
    cases = _all_cases()
    assert len(cases) > 1000
    lossy = []
    for case in cases:
        g = from_onnx(case.model)
        g.check()
        diffs = proto_differences(case.model, to_onnx(g), limit=2)
        if diffs:
            lossy.append((case.name, diffs))
    assert lossy == []
