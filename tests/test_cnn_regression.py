"""The paper's chains write what they always wrote: PlainNet 7 -> 100 and ResNet(0.5) 8 -> 98.

``tests/data/paper_chains.json`` and ``paper_chains.npz`` were computed by
``tests/paper_chain_digest.py --write`` at the commit the JSON names (its node digests equal those
recorded before generic deepening). Growing the same files now must give, step by step, the same
structure bit for bit (nodes, names, types, shapes, dtypes, attributes, integer constants, lineage)
and float weights within ``RTOL * max|x| + ATOL`` of the reference fingerprints (the solvers' LAPACK
calls round differently on other BLAS builds and CPU kernels; see paper_chain_digest.py).
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from paper_chain_digest import (
    CHAINS,
    REFERENCE,
    WEIGHTS,
    fingerprints,
    float_params,
    grow_chain,
    lineage_of,
    mismatches,
    structure_digest,
)

from netmorph.solvers import split


@pytest.fixture(scope="module")
def grown(tmp_path_factory) -> dict:
    """Every chain's steps, grown once for the module."""
    d = tmp_path_factory.mktemp("chains")
    return {name: grow_chain(src, steps, d) for name, (src, steps) in CHAINS.items()}


def _ref():
    return json.loads(REFERENCE.read_text()), np.load(WEIGHTS)


@pytest.mark.parametrize("chain", list(CHAINS))
def test_paper_chain_structure_bit_for_bit_and_weights_within_tolerance(grown, chain):
    ref, weights = _ref()
    assert ref["computed_at_commit"]  # produced by running the code, not written by hand
    want = ref["chains"][chain]
    assert len(grown[chain]) == len(want)
    for i, (path, w) in enumerate(zip(grown[chain], want, strict=True), 1):
        m = onnx.load(str(path))
        assert structure_digest(m, lineage_of(path)) == w, f"{chain} step {i}: the grown structure differs"
        bad = mismatches(m, fingerprints(m), weights[f"{chain}.{i}"])
        assert not bad, f"{chain} step {i}: {len(bad)} weights differ, first {bad[0]}"


def _perturbed(path, change):
    m = onnx.load(str(path))
    for t in m.graph.initializer:
        a = numpy_helper.to_array(t)
        if np.issubdtype(a.dtype, np.floating):
            b = change(t.name, a)
            if b is not a:
                t.CopyFrom(numpy_helper.from_array(b.astype(a.dtype), t.name))
    return m


def test_one_ulp_everywhere_passes(grown):
    """Every float weight of every step moved by one ulp (what another BLAS does, at most): still equal."""
    _, weights = _ref()
    for chain, steps in grown.items():
        for i, path in enumerate(steps, 1):
            to = np.float32(np.inf if i % 2 else -np.inf)
            m = _perturbed(path, lambda _n, a, to=to: np.nextafter(a, to))
            assert not mismatches(m, fingerprints(m), weights[f"{chain}.{i}"]), (chain, i)


def test_a_1e4_change_of_one_solver_weight_fails(grown):
    """One tensor the exact split produced, scaled by 1 + 1e-4: the regression names it."""
    _, weights = _ref()
    path = grown["plainnet7"][0]
    new = [r["child"] for r in lineage_of(path)[0].values() if r["kind"] == "new" and
           r["child"].endswith(".a.weight")]
    target = new[0]
    m = _perturbed(path, lambda n, a: a * np.float32(1 + 1e-4) if n == target else a)
    bad = mismatches(m, fingerprints(m), weights["plainnet7.1"])
    assert len(bad) == 1 and bad[0].startswith(f"{target}: off by"), bad
    m = _perturbed(path, lambda n, a: a + np.float32(1e-4) if n == target else a)
    assert len(mismatches(m, fingerprints(m), weights["plainnet7.1"])) == 1


def test_a_changed_solver_fails(tmp_path, monkeypatch):
    """A solver that rebalances its two factors by 1e-4 still preserves the function (grow verifies
    and writes), and the regression catches it; the structure stays identical."""
    exact = split.SOLVERS["exact"]

    def rebalanced(*a, **k):
        f1, f2, it, losses = exact(*a, **k)
        return f1 * (1 + 1e-4), f2 / (1 + 1e-4), it, losses

    monkeypatch.setitem(split.SOLVERS, "exact", rebalanced)
    (path,) = grow_chain(CHAINS["plainnet7"][0], 1, tmp_path)
    ref, weights = _ref()
    m = onnx.load(str(path))
    assert structure_digest(m, lineage_of(path)) == ref["chains"]["plainnet7"][0]
    bad = mismatches(m, fingerprints(m), weights["plainnet7.1"])
    split_weights = [n for n, _ in float_params(m) if n.endswith((".a.weight", ".b.weight"))]
    assert bad and {b.split(":")[0] for b in bad} <= set(split_weights), bad
