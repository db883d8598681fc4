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
