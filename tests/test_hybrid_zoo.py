"""deepen, widen and grow-kernel on tiny random-weight builds of timm CNNs and hybrids no other test uses.

Each child is checked as in ``test_cnn_zoo`` (verified by the PassManager, again in ONNX Runtime
on a fresh batch, node and parameter counts, one SGD step after lowering). The full table, with
the exporters and refusals, is ``python benchmarks/cnn_zoo_table.py --hybrids`` (docs/structure.md).
"""

from __future__ import annotations

import pytest
import torch
from cnn_models import export
from hybrid_models import HYBRIDS, randomised
from netmorph.passes import PassManager, get_pass
from test_cnn_zoo import MORPHS, check_child

import netmorph

CASES = [  # (architecture, morph): what the shared structure layer must do on each
    ("cspresnet", "widen"),  # Split pieces, a Split that is no cut value
    ("dla", "widen"),  # a Concat of two values of one group
    ("repvgg", "widen"),  # convs that read and write the same group (also EfficientNetV2's crash)
    ("fastvit", "widen"),  # grouped convs with 2 outputs per group writing a group
    ("levit", "widen"),  # the stream as tokens: x.flatten(2).transpose, reshape_as, token Slices
    ("ghostnet", "deepen"),  # zero through a ghost Concat + Slice
    ("efficientnet_v2", "deepen"),  # zero through a SiLU product
]
ARCHS = sorted({a for a, _ in CASES})
SIZE = {"fastvit": 64, "levit": 64}


@pytest.fixture(scope="session")
def hybrids(tmp_path_factory):
    d = tmp_path_factory.mktemp("hybrid_zoo")
    out = {}
    for arch in ARCHS:
        torch.manual_seed(0)
        out[arch] = export(randomised(HYBRIDS[arch]()), d / f"{arch}.onnx", "ts", size=SIZE.get(arch, 32))
    return out


@pytest.mark.parametrize("arch,morph", CASES, ids=[f"{a}-{m}" for a, m in CASES])
def test_morph_hybrid(hybrids, arch, morph):
    g = netmorph.load(hybrids[arch])
    child, (rep,) = PassManager(batches=1, batch_size=2).run(g, [get_pass(morph, **MORPHS[morph])])
    check_child(g, child, rep, morph, SIZE.get(arch, 32))
    if morph == "widen":  # every group of these widens but a classifier conv writing the logits
        skipped = [d["skipped"] for d in rep.details if "skipped" in d]
        assert all("reaches the graph output" in s for s in skipped), skipped
    if (arch, morph) == ("levit", "widen"):  # the stem's group goes on as tokens into the linears
        kinds = [{g.node(p).op_type for p in d["producers"]} for d in rep.details if "producers" in d]
        assert any({"Conv", "MatMul"} <= k for k in kinds), kinds
    if (arch, morph) == ("ghostnet", "deepen"):  # both halves of the ghost concat are zeroed, and named
        zeroed = [d["zeroed"] for d in rep.details if d.get("morph") == "unit-copy"]
        assert zeroed and all(z.count("BatchNormalization") + z.count("Conv") >= 2 for z in zeroed), zeroed
