"""One verdict per pair: ``netmorph verify``'s default rule is the one ``grow`` (``PassManager``)
applies to an exact contract, on the suite's exact morphs and on the same children made wrong."""

from __future__ import annotations

import pytest
from netmorph.passes import PassManager, get_pass
from onnx import numpy_helper

import netmorph
from netmorph.onnx_io import to_onnx
from netmorph.verification import verify_models

EXACT_MORPHS = [
    ("conv-split", {"level": 2}),
    ("insert-identity-bn", {"value": "level2.block2.relu1"}),
    ("insert-identity-prelu", {"value": "level3.block1.relu1"}),
    ("deepen-level", {"level": "1"}),
]


@pytest.fixture(scope="module")
def plain7():
    return netmorph.build("plain", blocks=2, channels=(8, 16, 16), bn_stats=True, seed=1)


def _grows(parent, child) -> bool:
    """``grow``'s verdict on an exact child: the check ``PassManager`` runs after the pass."""
    return PassManager()._verify(parent, child, 1e-4, 1e-5, exact=True).ok


def _nudged(graph, delta: float):
    """``graph`` as ONNX with one float weight of its first conv moved by ``delta``."""
    m = to_onnx(graph)
    name = next(n.input[1] for n in m.graph.node if n.op_type == "Conv")
    t = next(t for t in m.graph.initializer if t.name == name)
    w = numpy_helper.to_array(t).copy()
    w.flat[0] += delta
    t.CopyFrom(numpy_helper.from_array(w, name))
    return m


@pytest.mark.parametrize(("name", "options"), EXACT_MORPHS, ids=[m[0] for m in EXACT_MORPHS])
def test_verify_default_agrees_with_grow_on_exact_morphs(plain7, name, options):
    child, _ = get_pass(name, **options).apply(plain7, seed=0)
    wrong = _nudged(child, 1e-2)
    for pair_child, expected in ((child, True), (wrong, False)):
        report = verify_models(plain7, pair_child)
        assert report.tolerance == "calibrated:8" and report.rule_source == "the default"
        assert _grows(plain7, pair_child) == report.ok == expected, report.failure_line()


def test_reference_and_calibration_are_computed_once_per_parent(plain7):
    """Two children of one parent: the parent runs and is calibrated once; the child of step k is
    the parent of step k + 1: its outputs are reused, only its calibration is new."""
    from netmorph.verification import cache

    cache.clear()
    c1, _ = get_pass("insert-identity-bn", value="level2.block2.relu1").apply(plain7, seed=0)
    c2, _ = get_pass("insert-identity-prelu", value="level3.block1.relu1").apply(plain7, seed=0)
    first, second = verify_models(plain7, c1), verify_models(plain7, c2)
    assert first.extra["reused"] == {"reference": False, "calibration": False}
    assert second.extra["reused"] == {"reference": True, "calibration": True}
    assert first.ok and second.ok and second.calibration == first.calibration
    same = to_onnx(plain7)  # the same content as another object: still the same reference
    assert verify_models(same, c2).extra["reused"]["reference"]
    c3, _ = get_pass("insert-identity-prelu", value="level3.block1.relu1").apply(c1, seed=0)
    step2 = verify_models(c1, c3)
    assert step2.ok and step2.extra["reused"] == {"reference": True, "calibration": False}
    assert not verify_models(_nudged(plain7, 1e-2), c1).extra["reused"]["reference"]  # content changed
