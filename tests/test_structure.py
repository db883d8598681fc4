"""Structure recognition on netmorph's own models, on independent torch models exported by both
ONNX exporters (BatchNorm folded and kept), on standard ResNet / VGG stages, and refusals."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper
from torch import nn

import netmorph
from netmorph.errors import StructureError

# -- independent torch models (written from the paper, not from netmorph's builder) ---------------


class ConvBNAct(nn.Sequential):
    def __init__(self, cin, cout, k=3, stride=1, act="relu"):
        layers = [nn.Conv2d(cin, cout, k, stride, k // 2, bias=False), nn.BatchNorm2d(cout)]
        if act:
            layers.append(nn.ReLU6() if act == "relu6" else nn.ReLU())
        super().__init__(*layers)


class TorchPlainNet(nn.Module):
    """PlainNet: levels of n conv3x3-BN-ReLU blocks, stride 2 at each later level's first block.

    ``variant`` switches the exported ops: ReLU6 (Clip), x.mean (ReduceMean), x.view (Reshape),
    x @ W.T + b (MatMul + Add) instead of Relu, GlobalAveragePool, Flatten and Gemm.
    """

    def __init__(self, n, widths=(16, 32, 64), classes=10, variant=False):
        super().__init__()
        blocks, cin = [], 3
        for i, c in enumerate(widths):
            for j in range(n):
                blocks.append(ConvBNAct(cin, c, 3, 2 if (j == 0 and i > 0) else 1,
                                        "relu6" if variant else "relu"))
                cin = c
        self.body = nn.Sequential(*blocks)
        self.variant = variant
        self.fc = nn.Linear(cin, classes)

    def forward(self, x):
        x = self.body(x)
        if self.variant:
            x = x.mean(dim=(2, 3)).view(x.shape[0], -1)
            return x @ self.fc.weight.t() + self.fc.bias
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


class ResBlockR(nn.Module):
    """ResNet(r) block: conv-BN-ReLU-conv-BN + shortcut (r·x, or conv1x1-BN for the switch), Add, ReLU."""

    def __init__(self, cin, cout, stride, r, switch):
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout)
        self.c2, self.b2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout)
        self.sc = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)) \
            if switch else None
        self.r = r

    def forward(self, x):
        y = self.b2(self.c2(torch.relu(self.b1(self.c1(x)))))
        s = self.sc(x) if self.sc is not None else (x if self.r == 1 else self.r * x)
        return torch.relu(y + s)


class TorchResNetR(nn.Module):
    def __init__(self, n, r, widths=(16, 32, 64), classes=10):
        super().__init__()
        self.stem = ConvBNAct(3, widths[0])
        blocks, cin = [], widths[0]
        for i, c in enumerate(widths):
            for j in range(n):
                blocks.append(ResBlockR(cin, c, 2 if (j == 0 and i > 0) else 1, r, j == 0))
                cin = c
        self.body = nn.Sequential(*blocks)
        self.fc = nn.Linear(cin, classes)

    def forward(self, x):
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(self.body(self.stem(x)), 1), 1))


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin, planes, stride):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False), nn.BatchNorm2d(planes)
        self.conv2, self.bn2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False), nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or cin != planes:
            self.downsample = nn.Sequential(nn.Conv2d(cin, planes, 1, stride, bias=False),
                                            nn.BatchNorm2d(planes))

    def forward(self, x):
        idt = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + idt)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin, planes, stride):
        super().__init__()
        out = planes * 4
        self.conv1, self.bn1 = nn.Conv2d(cin, planes, 1, bias=False), nn.BatchNorm2d(planes)
        self.conv2, self.bn2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False), nn.BatchNorm2d(planes)
        self.conv3, self.bn3 = nn.Conv2d(planes, out, 1, bias=False), nn.BatchNorm2d(out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or cin != out:
            self.downsample = nn.Sequential(nn.Conv2d(cin, out, 1, stride, bias=False), nn.BatchNorm2d(out))

    def forward(self, x):
        idt = x if self.downsample is None else self.downsample(x)
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        return self.relu(self.bn3(self.conv3(y)) + idt)


class TorchResNet(nn.Module):
    """torchvision-style ResNet (conv7x7/2-BN-ReLU-maxpool stem, stages of Basic/Bottleneck blocks)."""

    def __init__(self, block, layers, widths=(8, 16, 32), classes=10):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, widths[0], 7, 2, 3, bias=False), nn.BatchNorm2d(widths[0])
        self.relu, self.maxpool = nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1)
        stages, cin = [], widths[0]
        for i, (w, n) in enumerate(zip(widths, layers, strict=True)):
            for j in range(n):
                stages.append(block(cin, w, 2 if (j == 0 and i > 0) else 1))
                cin = w * block.expansion
        self.layers = nn.Sequential(*stages)
        self.fc = nn.Linear(cin, classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(self.layers(x), 1), 1))


class TorchVGG(nn.Module):
    """VGG-style: stages of conv-BN-ReLU, MaxPool between stages, global pool + linear."""

    def __init__(self, stages=((8, 2), (16, 2), (32, 3)), classes=10, odd_kernel=False):
        super().__init__()
        layers, cin = [], 3
        for i, (w, n) in enumerate(stages):
            if i:
                layers.append(nn.MaxPool2d(2))
            for j in range(n):
                k = 5 if (odd_kernel and i == 1 and j == 1) else 3
                layers.append(ConvBNAct(cin, w, k))
                cin = w
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(cin, classes)

    def forward(self, x):
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(self.features(x), 1), 1))


def randomise_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            c = m.num_features
            m.weight.data = torch.rand(c, generator=g) + 0.5
            m.bias.data = torch.randn(c, generator=g) * 0.1
            m.running_mean = torch.randn(c, generator=g) * 0.1
            m.running_var = torch.rand(c, generator=g) + 0.5
    return model.eval()


def export(model: nn.Module, path, *, dynamo=False, fold=True, size=32):
    torch.manual_seed(0)
    randomise_bn(model)
    x = torch.randn(2, 3, size, size)
    if dynamo:
        torch.onnx.export(model, (x,), str(path), dynamo=True, optimize=fold, input_names=["x"],
                          output_names=["y"], dynamic_shapes={"x": {0: torch.export.Dim("N")}}, verbose=False)
    else:
        torch.onnx.export(model, x, str(path), dynamo=False, do_constant_folding=fold, input_names=["x"],
                          output_names=["y"], dynamic_axes={"x": {0: "N"}, "y": {0: "N"}})
    return netmorph.load(path)


def assert_levels(s, blocks, widths, *, switches=None, spatial=None):
    assert s.blocks_per_level == list(blocks)
    assert [lv.width for lv in s.levels] == list(widths)
    if switches is not None:
        assert [lv.switch is not None for lv in s.levels] == list(switches)
    if spatial is not None:
        assert [lv.spatial for lv in s.levels] == [(h, h) for h in spatial]
    chain = [b for lv in s.levels for b in lv.blocks]
    for a, b in zip(chain[:-1], chain[1:], strict=True):
        assert a.output == b.input  # blocks tile the body
    for lv in s.levels:
        names = [f"level{lv.index}.block{i}" for i in range(1, len(lv.blocks) + 1)]
        assert [b.name for b in lv.blocks] == names
        assert all(b.kind == "template" for b in lv.templates)


# -- netmorph's own models ------------------------------------------------------------------------


@pytest.mark.parametrize("n", [2, 3, 5, 9, 17, 33])
def test_recognise_built_plainnet(n):
    g = netmorph.build("plain", blocks=n)
    before = len(g.nodes), [v.type for v in g.values()]
    s = netmorph.recognise(g)
    assert (len(g.nodes), [v.type for v in g.values()]) == before  # input untouched
    assert s.family == "plain" and s.stem is None and s.depth == 3 * n + 1
    assert_levels(s, [n] * 3, (16, 32, 64), switches=[True] * 3, spatial=(32, 16, 8))
    lv2 = s.levels[1]
    assert lv2.switch.convs == ["level2.block1.conv1"] and lv2.switch.stride == 2
    assert [b.convs for b in lv2.templates] == [[f"level2.block{i}.conv1"] for i in range(2, n + 1)]
    assert lv2.templates[0].nodes == ["level2.block2.conv1", "level2.block2.bn1", "level2.block2.relu1"]
    assert all(b.shortcut is None and b.add is None for b in s.blocks())
    assert s.tail.output == "logits" and s.tail.input == f"level3.block{n}.relu1"


@pytest.mark.parametrize("n", [1, 2, 4, 8, 16])
@pytest.mark.parametrize("r", [0.5, 1.0])
def test_recognise_built_resnet(n, r):
    s = netmorph.recognise(netmorph.build("resnet", blocks=n, residual_ratio=r))
    assert s.family == "resnet" and s.depth == 6 * n + 2
    assert s.stem.convs == ["stem.conv1"] and s.stem.out_channels == 16
    assert_levels(s, [n] * 3, (16, 32, 64), switches=[True] * 3, spatial=(32, 16, 8))
    for lv in s.levels:
        assert lv.switch.shortcut == "conv" and lv.switch.residual_ratio is None
        assert lv.switch.stride == (1 if lv.index == 1 else 2)
        assert len(lv.templates) == n - 1
        for t in lv.templates:
            assert t.shortcut == ("identity" if r == 1.0 else "scaled")
            assert t.residual_ratio == r
            assert t.add == f"{t.name}.add" and t.convs == [f"{t.name}.conv1", f"{t.name}.conv2"]
            assert (f"{t.name}.scale" in t.nodes) == (r != 1.0)


def test_recognise_imagenet_plainnet_and_stem_hint():
    s = netmorph.recognise(netmorph.build("plain", levels=4, blocks=3, channels=(16, 32, 64, 128),
                                          input_shape=(3, 224, 224)))
    assert s.stem.convs == ["stem.conv1"] and s.stem.stride == 4 and "stem.pool" in s.stem.nodes
    assert_levels(s, [3] * 4, (16, 32, 64, 128), spatial=(56, 28, 14, 7))
    assert s.depth == 4 * 3 + 2
    # a conv3x3 stem has the template's shape: the graph alone cannot tell, netmorph's metadata can
    g = netmorph.build("plain", blocks=3, stem=True)
    s = netmorph.recognise(g)
    assert s.stem.convs == ["stem.conv1"] and s.blocks_per_level == [3, 3, 3] and s.depth == 11
    assert all(lv.switch is not None for lv in s.levels)
    # hints are taken only where the names agree; without them the graph alone is read honestly
    for n in g.nodes:
        n.name = n.name.replace("stem.", "first.").replace("level", "stage")
    s = netmorph.recognise(g)
    assert s.stem is None and s.blocks_per_level == [4, 3, 3] and s.depth == 11
    assert s.levels[0].switch is not None  # 3 -> 16 channels: a switch by structure
    # ImageNet: level 1 keeps the stem's width; its switch is known from the hint
    s = netmorph.recognise(netmorph.build("plain", levels=4, blocks=2, channels=(16, 32, 64, 128),
                                          input_shape=(3, 128, 128), softmax=True))
    assert s.levels[0].switch is not None and s.levels[0].switch.in_channels == 16
    assert s.tail.output == "probs" and s.depth == 10


def test_summary_and_dict():
    s = netmorph.recognise(netmorph.build("resnet", blocks=2, residual_ratio=0.5))
    text = s.summary()
    assert "resnet" in text and "depth 14" in text and "2/2/2" in text
    assert "width 32" in text and "r=0.5" in text
    d = s.to_dict()
    assert d["family"] == "resnet" and d["depth"] == 14 and d["blocks_per_level"] == [2, 2, 2]
    assert d["levels"][2]["blocks"][1]["residual_ratio"] == 0.5
    assert d["levels"][0]["spatial"] == [32, 32]
    import json

    json.dumps(d)  # serialisable


# -- the torch equivalents compute the same function as netmorph's models -------------------------


def _copy_into_torch(g, model):
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    gconvs = [n for n in g.nodes if n.op_type == "Conv"]
    gbns = [n for n in g.nodes if n.op_type == "BatchNormalization"]
    assert len(convs) == len(gconvs) and len(bns) == len(gbns)
    for m, n in zip(convs, gconvs, strict=True):
        m.weight.data = torch.from_numpy(n.param(1).copy())
    for m, n in zip(bns, gbns, strict=True):
        m.weight.data, m.bias.data = (torch.from_numpy(n.param(i).copy()) for i in (1, 2))
        m.running_mean, m.running_var = (torch.from_numpy(n.param(i).copy()) for i in (3, 4))
    fc = g.node("tail.fc")
    model.fc.weight.data, model.fc.bias.data = (torch.from_numpy(fc.param(i).copy()) for i in (1, 2))
    return model.eval()


@pytest.mark.parametrize("family,model", [
    ("plain", lambda: TorchPlainNet(3)), ("resnet", lambda: TorchResNetR(2, 0.5)),
])
def test_torch_equivalents_match_built_models(family, model):
    kw = {"blocks": 3} if family == "plain" else {"blocks": 2, "residual_ratio": 0.5}
    g = netmorph.build(family, bn_stats=True, seed=4, **kw)
    m = _copy_into_torch(g, model())
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    sess = ort.InferenceSession(netmorph.to_onnx(g).SerializeToString(), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        np.testing.assert_allclose(sess.run(None, {"input": x})[0], m(torch.from_numpy(x)).numpy(),
                                   rtol=1e-4, atol=1e-5)


# -- torch exports --------------------------------------------------------------------------------


@pytest.mark.parametrize("fold", [True, False])
@pytest.mark.parametrize("variant", [False, True])
def test_torch_plainnet_torchscript(tmp_path, fold, variant):
    g = export(TorchPlainNet(3, variant=variant), tmp_path / "p.onnx", fold=fold)
    assert bool(g.find_nodes("BatchNormalization")) == (not fold)
    if variant:
        assert g.find_nodes("Clip") and g.find_nodes("ReduceMean") and g.find_nodes("MatMul")
    s = netmorph.recognise(g)
    assert s.family == "plain" and s.stem is None and s.depth == 10
    assert_levels(s, [3, 3, 3], (16, 32, 64), switches=[True] * 3, spatial=(32, 16, 8))
    assert s.levels[2].switch.stride == 2


@pytest.mark.parametrize("fold", [True, False])
@pytest.mark.parametrize("r", [0.5, 1.0])
def test_torch_resnet_r_torchscript(tmp_path, fold, r):
    g = export(TorchResNetR(2, r), tmp_path / "r.onnx", fold=fold)
    s = netmorph.recognise(g)
    assert s.family == "resnet" and s.depth == 14 and len(s.stem.convs) == 1
    assert_levels(s, [2, 2, 2], (16, 32, 64), switches=[True] * 3, spatial=(32, 16, 8))
    for lv in s.levels:
        assert lv.switch.shortcut == "conv"
        (t,) = lv.templates
        assert t.shortcut == ("identity" if r == 1.0 else "scaled") and t.residual_ratio == pytest.approx(r)
        assert len(t.convs) == 2 and t.add is not None


@pytest.mark.parametrize("model,fold,blocks", [
    (lambda: TorchResNetR(2, 0.5), True, [2, 2, 2]),  # BN folded, weights in an external .data file
    (lambda: TorchPlainNet(2), False, [2, 2, 2]),  # BatchNormalization kept, shape plumbing nodes
])
def test_dynamo_exports(tmp_path, model, fold, blocks):
    g = export(model(), tmp_path / "d.onnx", dynamo=True, fold=fold)
    s = netmorph.recognise(g)
    assert s.blocks_per_level == blocks and [lv.width for lv in s.levels] == [16, 32, 64]
    if fold:
        assert (tmp_path / "d.onnx.data").exists()
        assert s.family == "resnet" and s.depth == 14
        assert [t.residual_ratio for lv in s.levels for t in lv.templates] == pytest.approx([0.5] * 3)
    else:
        assert g.find_nodes("BatchNormalization") and s.family == "plain" and s.depth == 7


@pytest.mark.parametrize("block,layers,switches,widths,depth", [
    (BasicBlock, (2, 1, 3), [False, True, True], (8, 16, 32), 1 + 2 * 6 + 1),
    (Bottleneck, (1, 2, 2), [True, True, True], (32, 64, 128), 1 + 3 * 5 + 1),
])
@pytest.mark.parametrize("fold", [True, False])
def test_torch_standard_resnet_stages(tmp_path, block, layers, switches, widths, depth, fold):
    g = export(TorchResNet(block, layers), tmp_path / "rn.onnx", fold=fold, size=64)
    s = netmorph.recognise(g)
    assert s.family == "resnet" and s.depth == depth
    assert len(s.stem.convs) == 1 and s.stem.stride == 4
    assert any(g.node(n).op_type == "MaxPool" for n in s.stem.nodes)
    assert_levels(s, layers, widths, switches=switches, spatial=(16, 8, 4))
    for lv in s.levels:
        per_block = 2 if block is BasicBlock else 3
        assert all(t.shortcut == "identity" and len(t.convs) == per_block for t in lv.templates)
        if lv.switch is not None:
            assert lv.switch.shortcut == "conv"


@pytest.mark.parametrize("fold", [True, False])
def test_torch_vgg(tmp_path, fold):
    s = netmorph.recognise(export(TorchVGG(), tmp_path / "vgg.onnx", fold=fold))
    assert s.family == "plain" and s.stem is None and s.depth == 8
    assert_levels(s, [2, 2, 3], (8, 16, 32), switches=[True] * 3, spatial=(32, 16, 8))
    sw = s.levels[1].switch
    assert sw.stride == 2 and len(sw.convs) == 1  # the MaxPool opens the level


# -- refusals -------------------------------------------------------------------------------------


class TinyUNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.enc = ConvBNAct(3, 8)
        self.down = ConvBNAct(8, 8)
        self.dec = ConvBNAct(16, 8)
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        e = self.enc(x)
        d = self.down(nn.functional.max_pool2d(e, 2))
        u = nn.functional.interpolate(d, scale_factor=2.0, mode="nearest")
        y = self.dec(torch.cat([u, e], 1))  # long skip
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(y, 1), 1))


class TinyViT(nn.Module):
    def __init__(self, d=16):
        super().__init__()
        self.patch = nn.Conv2d(3, d, 4, 4)
        self.q, self.k, self.v = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d)
        self.fc = nn.Linear(d, 10)

    def forward(self, x):
        t = self.patch(x).flatten(2).transpose(1, 2)
        a = torch.softmax(self.q(t) @ self.k(t).transpose(1, 2), dim=-1)
        t = t + a @ self.v(t)
        return self.fc(t.mean(1))


def test_refuses_unet_long_skip(tmp_path):
    g = export(TinyUNet(), tmp_path / "unet.onnx")
    with pytest.raises(StructureError, match=r"'/Concat' \(Concat\) closes a region of 5 nodes") as e:
        netmorph.recognise(g)
    assert "only an Add of a main path and a shortcut forms a residual block" in str(e.value)


def test_refuses_attention(tmp_path):
    g = export(TinyViT(), tmp_path / "vit.onnx")
    with pytest.raises(StructureError, match=r"\(MatMul\) joins 2 activations"):
        netmorph.recognise(g)


def test_refuses_graph_without_conv():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8, 16])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8, 16])
    nodes = [helper.make_node("Transpose", ["x"], ["xt"], perm=[0, 2, 1]),
             helper.make_node("MatMul", ["x", "xt"], ["s"]),
             helper.make_node("Softmax", ["s"], ["p"], axis=-1),
             helper.make_node("MatMul", ["p", "x"], ["y"])]
    m = helper.make_model(helper.make_graph(nodes, "attn", [x], [y]),
                          opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(StructureError, match=r"has no Conv node \(its ops: MatMul, Softmax, Transpose\)"):
        netmorph.recognise(netmorph.from_onnx(m))


def test_refuses_non_repeatable_level(tmp_path):
    g = export(TorchVGG(((8, 2), (16, 3), (32, 3)), odd_kernel=True), tmp_path / "odd.onnx")
    with pytest.raises(StructureError, match=r"no repeatable template block in level 2: block 3 .*"
                                             r"differs from block 2 .*conv5x5"):
        netmorph.recognise(g)


def test_refuses_two_outputs_and_dead_branches():
    g = netmorph.build("plain", blocks=2)
    g.outputs.append(g.value("level2.block1.relu1"))
    with pytest.raises(StructureError, match="graph has 2 outputs"):
        netmorph.recognise(g)
    g = netmorph.build("plain", blocks=2)
    side = g.create_node("Relu", [g.value("level2.block1.relu1")], name="dangling")
    g.insert_before(None, side)
    with pytest.raises(StructureError, match="'dangling' .* does not reach the output"):
        netmorph.recognise(g)


def test_refuses_odd_shortcut():
    g = netmorph.build("resnet", blocks=2)
    x = g.value("level2.block1.relu")  # input of level2.block2, read by its Add directly
    sig = g.create_node("Sigmoid", [x], name="odd_gate")
    g.insert_after(x.producer, sig)
    add = g.node("level2.block2.add")
    add.set_input(1, sig.output)
    with pytest.raises(StructureError, match=r"shortcut of the residual block ending at 'level2.block2.add'.*"
                                             r"odd_gate \(Sigmoid\)"):
        netmorph.recognise(g)


# -- grown and foreign-looking graphs -------------------------------------------------------------


def _split_template_conv(g, block: str) -> None:
    """The surgery of a PlainNet conv split: conv -> conv(F1), identity BN, identity PReLU, conv(F2)."""
    conv = g.node(f"{block}.conv1")
    c = conv.param(1).shape[0]
    bn_params = [g.add_parameter(f"{block}.mid_bn.{p}", a) for p, a in [
        ("scale", np.ones(c, np.float32)), ("bias", np.zeros(c, np.float32)),
        ("mean", np.zeros(c, np.float32)), ("var", np.ones(c, np.float32))]]
    bn = g.insert_on(conv.output, "BatchNormalization", bn_params, {"epsilon": 1e-5}, name=f"{block}.mid_bn")
    slope = g.add_parameter(f"{block}.mid_prelu.slope", np.ones((c, 1, 1), np.float32))
    pr = g.insert_on(bn.output, "PRelu", [slope], name=f"{block}.mid_prelu")
    w = g.add_parameter(f"{block}.conv2.weight", np.zeros((c, c, 3, 3), np.float32))
    g.insert_on(pr.output, "Conv", [w], {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}, name=f"{block}.conv2")


def test_recognise_grown_plainnet_with_prelu():
    g = netmorph.build("plain", blocks=3)
    for b in ("level2.block2", "level2.block3"):
        _split_template_conv(g, b)
    g.check()
    s = netmorph.recognise(g)
    assert s.blocks_per_level == [3, 5, 3] and s.depth == 3 * 3 + 2 + 1
    lv2 = s.levels[1]
    assert lv2.switch.name == "level2.block1" and len(lv2.templates) == 4
    assert lv2.templates[0].convs == ["level2.block2.conv1"]
    assert lv2.templates[1].convs == ["level2.block2.conv2"]
    assert "level2.block2.mid_prelu" in lv2.templates[0].nodes


def test_recognise_nameless_nodes():
    g = netmorph.build("resnet", blocks=3, residual_ratio=0.5)
    for n in g.nodes:
        n.name = ""
    s = netmorph.recognise(g)
    assert s.blocks_per_level == [3, 3, 3] and s.depth == 20
    assert [t.residual_ratio for t in s.levels[0].templates] == [0.5, 0.5]
