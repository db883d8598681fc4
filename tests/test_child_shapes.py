"""A grown child runs at every input shape its parent runs at, the way users run it (ONNX Runtime's
default session options: the graph optimiser on, which trusts every shape annotation).

The model is a tiny conv / token-attention hybrid (MobileViT-like) exported with a dynamic batch:
its q/k/v reshapes fold the batch into the head axis (``[3, 2*N, HW, d]``). Shapes measured at
one batch and written over such a dim used to give children that ran at the measuring batch only.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
from click.testing import CliRunner
from cnn_models import export, hybrid_attention, randomised
from netmorph.cli.main import cli

from netmorph import onnx_io
from netmorph.structure.shapes import fill_unknown_shapes

PASSES = [("deepen",), ("widen",), ("grow-kernel", "--level", "all")]


@pytest.fixture(scope="module")
def hybrid(tmp_path_factory):
    d = tmp_path_factory.mktemp("hybrid")
    torch.manual_seed(0)
    m = randomised(hybrid_attention())
    return {how: export(m, d / f"hybrid_{how}.onnx", how, size=16) for how in ("ts", "dynamo")}


def _run(path, batch):
    x = np.random.default_rng(batch).standard_normal((batch, 3, 16, 16)).astype(np.float32)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])  # default options
    return sess.run(None, {"x": x})[0]


@pytest.mark.parametrize("how", ["ts", "dynamo"])
@pytest.mark.parametrize("grow", PASSES, ids=lambda p: p[0])
def test_child_runs_at_every_batch_the_parent_runs_at(hybrid, tmp_path, how, grow):
    parent, child = hybrid[how], tmp_path / "child.onnx"
    res = CliRunner().invoke(cli, ["grow", str(parent), "--pass", *grow, "-o", str(child)])
    assert res.exit_code == 0, res.output
    for batch in (1, 3, 5):
        ref, out = _run(parent, batch), _run(child, batch)
        assert out.shape == ref.shape == (batch, 10)
        assert np.abs(out - ref).max() <= 1e-4 * max(np.abs(ref).max(), 1.0), (how, grow, batch)


def test_measured_shapes_keep_batch_dependent_dims(hybrid):
    """fill_unknown_shapes never writes a size that depends on the batch: the dynamo export's
    ``[3, 2*N, 256, 4]`` stays symbolic, sizes that are the same at every batch are written."""
    g = onnx_io.load(hybrid["dynamo"])
    folded = [v for n in g.nodes for v in n.outputs
              if v.type is not None and v.type.shape and "2*N" in v.type.shape]
    assert folded  # the export names the batch-folded dim
    before = {v.name: v.type.shape for v in folded}
    for v in folded:  # as an export that left these dims unknown would have them
        v.type.shape = tuple(None if d == "2*N" else d for d in v.type.shape)
    assert fill_unknown_shapes(g, folded) > 0
    for v in folded:
        want = tuple(None if d == "2*N" else d for d in before[v.name])
        assert v.type.shape == want, (v.name, v.type.shape)
    for v in folded:  # a symbolic name is kept, never replaced by a measured size
        v.type.shape = before[v.name]
    fill_unknown_shapes(g, folded)
    assert {v.name: v.type.shape for v in folded} == before


def test_measured_shapes_fill_what_does_not_depend_on_the_input(hybrid):
    """Channels and image size are the same at every batch: written; the batch is not."""
    g = onnx_io.load(hybrid["ts"])
    convs = [n.outputs[0] for n in g.nodes if n.op_type == "Conv"]
    for v in convs:
        v.type = None  # unknown to inference
    assert fill_unknown_shapes(g, convs) == len(convs)
    assert [v.type.shape for v in convs] == [(None, 8, 16, 16), (None, 8, 16, 16), (None, 16, 8, 8),
                                             (None, 16, 8, 8)]
