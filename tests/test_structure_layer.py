"""The structure layer on its own: imports point one way, slices of a group index the whole axis, and
transformer layers (pre-LN, post-LN, parallel) are readings of the one residual matcher."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from transformer_models import exported

import netmorph
from netmorph.structure import ActivationView, ResidualUnit, match_residual
from netmorph.structure.channels import Member

STRUCTURE = Path(__file__).resolve().parents[1] / "netmorph" / "structure"


def _imports(path: Path) -> list[str]:
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            out.append("." * node.level + (node.module or ""))
    return out


def test_structure_never_imports_passes():
    """Passes depend on structure, never the reverse (nor on the CLI)."""
    files = sorted(STRUCTURE.glob("*.py"))
    assert len(files) > 5
    bad = [(f.name, m) for f in files for m in _imports(f)
           if m.split(".")[:2] in (["netmorph", "passes"], ["netmorph", "cli"]) or m.lstrip(".").split(".")[0]
           in ("passes", "cli") and m.startswith("..")]
    assert not bad, bad


def test_member_with_two_copies_of_the_group():
    """A Concat of x and dw(x) (GhostNet) holds a 3-channel group twice: both copies follow the mapping."""
    m = Member(None, 1, offsets=(1, 4), total=8)
    assert m.full_index(np.array([0, 1, 2, 0]), 3).tolist() == [0, 1, 2, 3, 1, 4, 5, 6, 4, 7]
    assert m.widened(3, 4) == 10
    whole = Member(None, 1)
    assert whole.full_index(np.array([0, 1, 1]), 2).tolist() == [0, 1, 1] and whole.widened(2, 3) == 3


@pytest.mark.parametrize("kind", ["encoder-pre", "encoder-post", "gpt"])
def test_transformer_units_are_one_matcher_call(kind):
    """Pre-LN and post-LN layers: each attention / MLP unit is ``match_residual(add, flow, entry=x)``."""
    from netmorph.structure.transformer import recognise_transformer

    st = recognise_transformer(netmorph.load(exported(kind, "torchscript")))
    for lay in st.layers:
        for u in (lay.attention, lay.mlp):
            m = match_residual(u.add, st.flow, entry=u.entry)
            assert isinstance(m, ResidualUnit), m
            assert {id(n) for n in m.branch} == {id(n) for n in u.branch}
            assert m.shortcut_kind == "identity" and m.branch_outputs == [u.branch_output]


@pytest.mark.parametrize("nested", [False, True])
def test_parallel_attention_and_mlp_is_one_unit(nested):
    """``(x + a) + m`` and ``x + (a + m)`` with ``a``, ``m`` both reading ``LN(x)``: one unit, two terms."""
    rng = np.random.default_rng(0)
    w = {k: numpy_helper.from_array(rng.standard_normal(s).astype(np.float32), k)
         for k, s in [("g", (8,)), ("b", (8,)), ("wa", (8, 8)), ("w1", (8, 16)), ("w2", (16, 8))]}
    nodes = [helper.make_node("LayerNormalization", ["x", "g", "b"], ["h"], axis=-1),
             helper.make_node("MatMul", ["h", "wa"], ["a"]),
             helper.make_node("MatMul", ["h", "w1"], ["u"]), helper.make_node("Relu", ["u"], ["r"]),
             helper.make_node("MatMul", ["r", "w2"], ["m"])]
    sums = [("a", "m"), ("x", "s")] if nested else [("x", "a"), ("s", "m")]
    nodes += [helper.make_node("Add", list(sums[0]), ["s"]), helper.make_node("Add", list(sums[1]), ["y"])]
    vi = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", 4, 8]) for n in ("x", "y")]
    graph = helper.make_graph(nodes, "par", vi[:1], vi[1:], list(w.values()))
    g = netmorph.from_onnx(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    view = ActivationView(g)
    add = g.node(nodes[-1].name) if nodes[-1].name else next(n for n in g.nodes if n.outputs[0].name == "y")
    unit = match_residual(add, view, entry=g.inputs[0])
    assert isinstance(unit, ResidualUnit), unit
    assert sorted(v.name for v in unit.branch_outputs) == ["a", "m"]
    assert len(unit.branch) == 6 and unit.branch[0].op_type == "LayerNormalization"
    generic = match_residual(add, view)  # (x + a) + m without the stream's entry: no fork both start from
    assert nested or isinstance(generic, str) or generic.side_inputs


@pytest.mark.parametrize("kind", ["encoder-pre", "gpt"])
def test_mlp_hidden_group_is_a_channel_group(kind):
    """A layer's MLP hidden width is the channel group of its up-projection: ``widen`` over it is
    what a transformer's MLP widening is (up-projection rows, down-projection columns)."""
    from netmorph.structure.channels import find_channel_group
    from netmorph.structure.transformer import recognise_transformer

    g = netmorph.load(exported(kind, "torchscript"))
    st = recognise_transformer(g)
    for lay in st.layers:
        grp = find_channel_group(g, lay.up.node)
        assert grp.width == lay.up.out_features
        assert [n for n, _ in grp.producers] == [lay.up.node]
        assert [n for n, _, _ in grp.consumers] == [lay.down.node]
        assert not grp.needs_equal_replication


class _ChannelsLast(torch.nn.Module):
    """ConvNeXt / hybrid layout: a conv stem, then NHWC (a Transpose moves the channel axis) with a
    LayerNorm, an MLP and a residual on the last axis, tokens ``[N, H·W, C]`` by a Reshape that
    keeps the channels, a token linear, back to NCHW, a nearest upsampling, a conv and a linear head."""

    def __init__(self):
        super().__init__()
        self.stem = torch.nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.norm = torch.nn.LayerNorm(8)
        self.fc1, self.fc2 = torch.nn.Linear(8, 16), torch.nn.Linear(16, 8)
        self.tok = torch.nn.Linear(8, 8)
        self.conv = torch.nn.Conv2d(8, 12, 3, padding=1)
        self.head = torch.nn.Linear(12, 10)

    def forward(self, x):
        x = self.stem(x).permute(0, 2, 3, 1)  # N, H, W, C
        x = x + self.fc2(torch.nn.functional.gelu(self.fc1(self.norm(x))))
        n, h, w, c = x.shape
        t = x.reshape(n, h * w, c)  # tokens
        t = t + self.tok(t)
        x = t.reshape(n, h, w, c).permute(0, 3, 1, 2)
        x = torch.nn.functional.interpolate(x, scale_factor=2.0, mode="nearest")  # HRNet's fuse layers
        return self.head(self.conv(x).mean((2, 3)))


@pytest.fixture(scope="module")
def channels_last(tmp_path_factory):
    from cnn_models import export

    torch.manual_seed(0)
    m = _ChannelsLast().eval()
    with torch.no_grad():
        m.norm.weight.uniform_(0.5, 1.5)
        m.norm.bias.normal_()
    d = tmp_path_factory.mktemp("channels_last")
    return {how: export(m, d / f"{how}.onnx", how, size=16) for how in ("ts", "dynamo")}


@pytest.mark.parametrize("how", ["ts", "dynamo"])
def test_channel_group_through_channels_last_layouts(channels_last, how):
    """The stem's group goes NCHW -> NHWC (Transpose) -> tokens (Reshape) -> NCHW: one group, its
    producers the stem, fc2 and the token linear, its consumers fc1, the token linear and the conv;
    ``widen`` of it and of the MLP's hidden group are exact, and the reshape targets follow."""
    from netmorph.passes import PassManager, get_pass

    from netmorph.structure.channels import find_channel_group, producer_axis, weight_of

    g = netmorph.load(channels_last[how])
    convs = [n for n in g.nodes if n.op_type == "Conv"]
    grp = find_channel_group(g, convs[0])
    kinds = sorted(n.op_type for n in grp.through)
    assert grp.width == 8 and "Transpose" in kinds and "Resize" in kinds, kinds
    assert kinds.count("Reshape") >= 2, kinds
    assert len(grp.producers) == 3 and convs[1] in [n for n, _, _ in grp.consumers]
    assert len(grp.consumers) == 3
    assert [n.op_type for n in grp.needs_equal_replication] == ["LayerNormalization"]
    # the reshapes' targets: computed from x.shape (TorchScript: followed at run time) or constants
    assert len(grp.sized_at_run_time) == (2 if how == "ts" else 0), [n.name for n in grp.sized_at_run_time]
    hidden = next(n for n, _, _ in grp.consumers if weight_of(n)[1].shape[producer_axis(n)] == 16)
    for node in (convs[0].name, hidden.name):
        child, (rep,) = PassManager(batches=1, batch_size=2).run(g, [get_pass("widen", node=node, factor=2)])
        assert rep.verification["ok"]
        x = np.random.default_rng(1).standard_normal((3, 3, 16, 16)).astype(np.float32)
        a, b = _ort(g, x), _ort(child, x)
        assert np.max(np.abs(a - b)) <= 1e-5 * np.max(np.abs(a))
        assert rep.params_after > rep.params_before


def _ort(graph, x):
    import onnxruntime as ort

    s = ort.InferenceSession(netmorph.to_onnx(graph).SerializeToString(), providers=["CPUExecutionProvider"])
    return s.run(None, {s.get_inputs()[0].name: x})[0]


def test_resize_to_fixed_sizes_follows_the_widened_group():
    """A Resize whose ``sizes`` name the channel count (a fixed-batch export) keeps the group; widen
    retargets the count and stays exact."""
    from netmorph.passes import PassManager, get_pass

    rng = np.random.default_rng(0)
    w = [numpy_helper.from_array(a, k) for k, a in [
        ("w1", rng.standard_normal((4, 3, 3, 3)).astype(np.float32)),
        ("b1", rng.standard_normal(4).astype(np.float32)),
        ("w2", rng.standard_normal((5, 4, 1, 1)).astype(np.float32)),
        ("sizes", np.array([2, 4, 16, 16], dtype=np.int64))]]
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c"], pads=[1, 1, 1, 1], name="conv1"),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("Resize", ["r", "", "", "sizes"], ["u"], mode="nearest"),
             helper.make_node("Conv", ["u", "w2"], ["y"], name="conv2")]
    io = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 8, 8]),
          helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 5, 16, 16])]
    graph = helper.make_graph(nodes, "rs", io[:1], io[1:], w)
    g = netmorph.from_onnx(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    child, (rep,) = PassManager(batches=1, batch_size=2).run(g, [get_pass("widen", node="conv1", factor=2)])
    x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    a, b = _ort(g, x), _ort(child, x)
    assert np.max(np.abs(a - b)) <= 1e-5 * np.max(np.abs(a))
    resize = next(n for n in child.nodes if n.op_type == "Resize")
    assert resize.inputs[3].const.array.tolist() == [2, 8, 16, 16]
