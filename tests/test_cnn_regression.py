"""The paper's chains write what they always wrote: PlainNet 7 -> 100 and ResNet(0.5) 8 -> 98.

``tests/data/paper_chains.json`` was computed by ``tests/paper_chain_digest.py --write`` at the
commit it names (main before generic deepening): a SHA-256 of every node (name, op, inputs,
outputs, attributes) and of every parameter (name, dtype, shape, bytes) after each ``netmorph
grow --pass deepen`` step. Growing the same files now must give the same digests, step by step.
"""

from __future__ import annotations

import json

import pytest
from paper_chain_digest import CHAINS, REFERENCE, grow_chain


@pytest.mark.parametrize("chain", list(CHAINS))
def test_paper_chain_bit_for_bit(tmp_path, chain):
    ref = json.loads(REFERENCE.read_text())
    assert ref["computed_at_commit"]  # produced by running the code, not written by hand
    src, steps = CHAINS[chain]
    got = grow_chain(src, steps, tmp_path)
    want = ref["chains"][chain]
    assert [s["n_nodes"] for s in got] == [s["n_nodes"] for s in want]
    for i, (g, w) in enumerate(zip(got, want, strict=True), 1):
        assert g == w, f"{chain} step {i}: the grown graph differs from main's"
