"""``netmorph.torch.grow`` on torchvision classes: a ``ResNet`` or ``VisionTransformer`` whose growth
is a change of its constructor arguments comes back as an instance of that class
(``netmorph/torch/classes.py``); any other growth of them comes back lowered, as before, with the
reason in ``report.fallback``.

Real parts throughout: torchvision models (``weights=None``; BatchNorm statistics and affines,
LayerNorms, class token, position table and head randomised, so a misplaced tensor shows), the
passes run by the PassManager (each child verified in ONNX Runtime), real optimizer steps.
Bounds: child vs parent output max |diff| / max |parent| <= 1e-5 (torch on both sides, at the
export's batch and at another one); identical gradients give bit-identical updates of every
parameter the growth kept, so the carried optimizer state is the parent's.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from cnn_models import torchvision_models
from netmorph.passes import get_pass
from torch import nn

import netmorph.torch as nmt

IMAGE = 32
tvm = torchvision_models()


def _images(n: int, seed: int) -> torch.Tensor:
    return torch.randn(n, 3, IMAGE, IMAGE, generator=torch.Generator().manual_seed(seed))


def _labels(n: int, seed: int) -> torch.Tensor:
    return torch.randint(0, 10, (n,), generator=torch.Generator().manual_seed(seed))


def _randomised(m: nn.Module, seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, nn.BatchNorm2d):
                mod.running_mean.copy_(0.2 * torch.randn(mod.num_features, generator=g))
                mod.running_var.copy_(torch.rand(mod.num_features, generator=g) + 0.5)
                mod.weight.copy_(torch.rand(mod.num_features, generator=g) + 0.5)
                mod.bias.copy_(0.2 * torch.randn(mod.num_features, generator=g))
            elif isinstance(mod, nn.LayerNorm):
                mod.weight.copy_(1 + 0.3 * torch.randn(mod.weight.shape, generator=g))
                mod.bias.copy_(0.3 * torch.randn(mod.bias.shape, generator=g))
        for name, p in m.named_parameters():
            if name in ("class_token", "encoder.pos_embedding") or name.startswith("heads."):
                p.copy_(0.3 * torch.randn(p.shape, generator=g))
    return m.eval()


def _train(m: nn.Module, opt: torch.optim.Optimizer, steps: int = 2) -> None:
    m.train()
    for i in range(steps):
        opt.zero_grad()
        F.cross_entropy(m(_images(8, 50 + i)), _labels(8, 50 + i)).backward()
        opt.step()
    m.eval()


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


def _same_function(parent: nn.Module, child: nn.Module, x: torch.Tensor) -> None:
    parent.eval()
    child.eval()
    with torch.no_grad():
        for batch in (x, _images(5, 11)):  # the export's batch and another one
            assert _rel(child(batch), parent(batch)) <= 1e-5


def _resnet(*layers: int, block=None, **kw) -> nn.Module:
    torch.manual_seed(0)
    return _randomised(tvm.ResNet(block or tvm.resnet.BasicBlock, list(layers), num_classes=10, **kw))


def _vit() -> nn.Module:
    torch.manual_seed(0)
    return _randomised(tvm.VisionTransformer(image_size=IMAGE, patch_size=8, num_layers=2, num_heads=2,
                                             hidden_dim=32, mlp_dim=64, num_classes=10))


def _identical_step(parent, opt, g) -> set[str]:
    """Random gradients on the parent, the same on every child parameter the growth kept (``same``
    in ``report.origins``), random ones on the rest: one step leaves every kept parameter and its
    state bit-identical to its parent's. Returns the parent keys compared."""
    pp, cp = dict(parent.named_parameters()), dict(g.module.named_parameters())
    gen = torch.Generator().manual_seed(7)
    for p in pp.values():
        p.grad = torch.randn(p.shape, generator=gen)
    pairs = [(pk, ck) for ck, (kind, pk) in g.report.origins.items() if kind == "same" and ck in cp]
    for q in cp.values():
        q.grad = torch.randn(q.shape, generator=gen)
    for pk, ck in pairs:
        assert torch.equal(cp[ck].detach(), pp[pk].detach()), (pk, ck)
        cp[ck].grad = pp[pk].grad.clone()
    opt.step()
    g.optimizer.step()
    for pk, ck in pairs:
        assert torch.equal(cp[ck].detach(), pp[pk].detach()), (pk, ck)
        mine, theirs = g.optimizer.state[cp[ck]], opt.state[pp[pk]]
        assert mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine), (pk, ck)
    return {pk for pk, _ in pairs}


# -- ResNet ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def resnet18_deepened():
    """resnet18 trained two AdamW steps (moments, moved BN statistics, num_batches_tracked 2), grown
    by deepen in its generic mode: a zero-branch copy of a stage's block after each block."""
    torch.manual_seed(0)
    parent = _randomised(tvm.resnet18(weights=None, num_classes=10))
    opt = torch.optim.AdamW(parent.parameters(), lr=1e-3, weight_decay=0.05)
    _train(parent, opt)
    return parent, opt, nmt.grow(parent, _images(2, 1), "deepen", optimizer=opt, mode="generic")


def test_resnet_deepen_comes_back_as_a_resnet_of_more_blocks(resnet18_deepened, tmp_path):
    parent, _, g = resnet18_deepened
    child = g.module
    assert type(child) is tvm.ResNet
    assert [len(s) for s in (child.layer1, child.layer2, child.layer3, child.layer4)] == [4, 4, 4, 4]
    assert g.report.config == {"layers": [[2, 2, 2, 2], [4, 4, 4, 4]]}
    assert g.report.returned_class == "torchvision.models.resnet.ResNet" and g.report.fallback is None
    assert g.report.passes[0].verification["ok"]
    assert not child.training
    _same_function(parent, child, _images(2, 1))
    assert set(child.state_dict()) == set(tvm.ResNet(tvm.resnet.BasicBlock, [4, 4, 4, 4], num_classes=10)
                                          .state_dict())
    with pytest.raises(nmt.CheckpointError, match="save its state_dict"):
        g.save(tmp_path / "grown.pt")  # a netmorph checkpoint holds a lowered module


def test_resnet_blocks_are_renumbered_per_stage(resnet18_deepened):
    """Stage s of the child is [block 0, copy, block 1, copy]: the parent's block 1 is the child's
    block 2; a copy holds its template's tensors with the last BN zeroed (scale and bias); in stage
    2-4 both copies are of block 1 (block 0 changes width)."""
    parent, _, g = resnet18_deepened
    c = g.module
    for moved, was in ((c.layer1[2], parent.layer1[1]), (c.layer3[2], parent.layer3[1]),
                       (c.layer4[0], parent.layer4[0])):
        mine, theirs = moved.state_dict(), was.state_dict()
        assert mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)
    assert torch.equal(c.layer2[0].downsample[0].weight, parent.layer2[0].downsample[0].weight)
    for copy_, template in ((c.layer1[1], parent.layer1[0]), (c.layer2[1], parent.layer2[1]),
                            (c.layer4[3], parent.layer4[1])):
        assert torch.equal(copy_.conv2.weight, template.conv2.weight)
        assert torch.equal(copy_.bn1.running_var, template.bn1.running_var)
        assert not copy_.bn2.weight.any() and not copy_.bn2.bias.any()
    assert int(parent.layer1[1].bn1.num_batches_tracked) == 2
    assert int(c.layer1[2].bn1.num_batches_tracked) == 2 and int(c.bn1.num_batches_tracked) == 2
    assert g.report.origins["layer1.2.conv1.weight"] == ("same", "layer1.1.conv1.weight")
    assert g.report.origins["layer1.1.bn2.weight"] == ("new", None)
    assert set(g.report.name_map["layer1.1.conv1.weight"]) == {f"layer1.{i}.conv1.weight" for i in (2, 3)}


def test_resnet_optimizer_is_carried_and_the_loss_at_the_growth_is_the_parents(resnet18_deepened):
    parent, opt, g = resnet18_deepened
    assert type(g.optimizer) is torch.optim.AdamW
    assert g.optimizer.param_groups[0]["lr"] == 1e-3 and g.optimizer.param_groups[0]["weight_decay"] == 0.05
    assert {id(p) for p in g.optimizer.param_groups[0]["params"]} == {id(p) for p in g.module.parameters()}
    zeroed = g.optimizer.state[g.module.layer1[1].bn2.weight]
    assert int(zeroed["step"]) == 0 and not zeroed["exp_avg"].any()
    x, y = _images(8, 3), _labels(8, 3)
    for train in (False, True):  # eval: running statistics; train: the batch's (the copies add 0)
        parent.train(train)
        g.module.train(train)
        with torch.no_grad():
            lp, lc = F.cross_entropy(parent(x), y), F.cross_entropy(g.module(x), y)
        assert abs(float(lc - lp)) <= 1e-5 * float(lp), train
    parent.eval()
    assert _identical_step(parent, opt, g) == set(dict(parent.named_parameters()))
    g.module.train()  # and it trains: real AdamW steps on one batch
    losses = []
    for _ in range(4):
        g.optimizer.zero_grad()
        loss = F.cross_entropy(g.module(x), y)
        loss.backward()
        g.optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def test_bottleneck_interior_widen_is_width_per_group_and_a_stage_widen_falls_back():
    """Widening conv1 and conv2 of every Bottleneck doubles its inner width: width_per_group 16 -> 32
    (wide_resnet50_2 is resnet50 with 128). Widening every channel group also widens the stem and
    the stages' streams, which no ResNet argument says: the child is the lowered module, as before."""
    parent = _resnet(1, 1, 1, 1, block=tvm.resnet.Bottleneck, width_per_group=16)
    opt = torch.optim.SGD(parent.parameters(), lr=0.05, momentum=0.9)
    _train(parent, opt, steps=1)
    x = _images(2, 1)
    passes = [get_pass("widen", node=f"layer{s}.0.conv{i}") for s in range(1, 5) for i in (1, 2)]
    g = nmt.grow(parent, x, passes, optimizer=opt)
    child = g.module
    assert type(child) is tvm.ResNet and child.base_width == 32
    assert g.report.config == {"width_per_group": [16, 32]}
    assert tuple(child.layer3[0].conv2.weight.shape) == (128, 128, 3, 3)
    _same_function(parent, child, x)
    buf = g.optimizer.state[child.layer1[0].conv1.weight]["momentum_buffer"]
    old = opt.state[parent.layer1[0].conv1.weight]["momentum_buffer"]
    assert buf.shape == (32, 64, 1, 1) and torch.equal(buf[:16], old)  # the producer's rows, gathered
    assert all(any(torch.equal(r, o) for o in old) for r in buf[16:])
    assert torch.equal(g.optimizer.state[child.fc.weight]["momentum_buffer"], opt.state[parent.fc.weight]
                       ["momentum_buffer"])

    g2 = nmt.grow(parent, x, "widen")
    assert not isinstance(g2.module, tvm.ResNet) and g2.report.returned_class != g.report.returned_class
    assert "'conv1.weight' is (128, 3, 7, 7)" in g2.report.fallback
    assert "stem and stage widths are fixed" in g2.report.fallback
    _same_function(parent, g2.module, x)


def test_resnet_paper_deepen_and_a_modified_resnet_fall_back_with_the_reason():
    """deepen's paper mode (the default on two-conv blocks) inserts identity blocks with a PReLU:
    lowered, as before. A ResNet whose maxpool was replaced (CIFAR style) is not what its arguments
    build: lowered too, never rebuilt into the model the arguments say. A subclass is not rebuilt."""
    parent = _resnet(1, 1, 1, 1)
    x = _images(2, 1)
    g = nmt.grow(parent, x, "deepen", level="1")
    assert not isinstance(g.module, tvm.ResNet)
    assert "no key of ResNet takes" in g.report.fallback and "mode='generic'" in g.report.fallback
    assert any("dup" in k for k in g.report.new)
    _same_function(parent, g.module, x)

    parent.maxpool = nn.Identity()
    g = nmt.grow(parent, x, [])
    assert not isinstance(g.module, tvm.ResNet)
    assert "changed after construction: (maxpool): Identity()" in g.report.fallback
    _same_function(parent, g.module, x)

    class MyResNet(tvm.ResNet):
        pass

    torch.manual_seed(0)
    mine = _randomised(MyResNet(tvm.resnet.BasicBlock, [1, 1, 1, 1], num_classes=10))
    g = nmt.grow(mine, x, [])
    assert not isinstance(g.module, tvm.ResNet) and g.report.fallback is None
    _same_function(mine, g.module, x)


# -- VisionTransformer -------------------------------------------------------------------------


def test_vit_deepen_comes_back_as_a_vit_of_more_layers_with_the_state_carried():
    """The patch conv's bias, trained then zeroed, is dropped by the exporter: the child's is the
    parent's tensor with its AdamW state (a parameter the graph does not hold, kept)."""
    parent = _vit()
    opt = torch.optim.AdamW(parent.parameters(), lr=1e-3)
    _train(parent, opt)
    with torch.no_grad():
        parent.conv_proj.bias.zero_()
    x = _images(2, 1)
    g = nmt.grow(parent, x, "deepen", optimizer=opt)
    child = g.module
    assert type(child) is tvm.VisionTransformer and len(child.encoder.layers) == 4
    assert g.report.config == {"num_layers": [2, 4]} and g.report.fallback is None
    assert g.report.unmapped == ["conv_proj.bias"]
    assert g.report.origins["conv_proj.bias"] == ("same", "conv_proj.bias")
    _same_function(parent, child, x)
    layers, was = child.encoder.layers, parent.encoder.layers
    mine, theirs = layers[2].state_dict(), was[1].state_dict()  # parent layer 1 is child layer 2
    assert mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)
    copy_ = layers[1]  # a copy of layer 0 whose attention and MLP outputs are zeroed
    assert torch.equal(copy_.self_attention.in_proj_weight, was[0].self_attention.in_proj_weight)
    assert not copy_.self_attention.out_proj.weight.any() and not copy_.mlp[3].weight.any()
    assert g.report.origins["encoder.layers.encoder_layer_2.self_attention.in_proj_weight"] == \
        ("same", "encoder.layers.encoder_layer_1.self_attention.in_proj_weight")
    # the in-projection is stored transposed in the graph: its moments are transposed there and back
    st = g.optimizer.state[layers[2].self_attention.in_proj_weight]
    assert torch.equal(st["exp_avg_sq"], opt.state[was[1].self_attention.in_proj_weight]["exp_avg_sq"])
    assert _identical_step(parent, opt, g) == set(dict(parent.named_parameters()))


@pytest.mark.parametrize("pass_name, config", [
    ("widen-mlp", {"mlp_dim": [64, 128]}),
    ("widen-hidden", {"hidden_dim": [32, 64], "mlp_dim": [64, 128], "num_heads": [2, 4]}),
])
def test_vit_widenings_are_config_changes(pass_name, config):
    """An untrained ViT: the zero biases torchvision initialises (patch conv, attention output) are
    dropped by the exporter and come back as zeros of the new width."""
    parent = _vit()
    x = _images(2, 1)
    g = nmt.grow(parent, x, pass_name)
    child = g.module
    assert type(child) is tvm.VisionTransformer and g.report.config == config
    assert (child.hidden_dim, child.mlp_dim) == (config.get("hidden_dim", [32, 32])[1], config["mlp_dim"][1])
    assert child.encoder.layers[0].self_attention.num_heads == config.get("num_heads", [2, 2])[1]
    assert "conv_proj.bias" in g.report.unmapped and not child.conv_proj.bias.any()
    _same_function(parent, child, x)


def test_vit_add_heads_is_no_config_change_and_falls_back():
    """add-heads grows the heads' count at their size (3 heads of 16 on a 32-wide stream):
    nn.MultiheadAttention cannot hold it, so the child is the lowered module and the report says why."""
    parent = _vit()
    x = _images(2, 1)
    g = nmt.grow(parent, x, "add-heads")
    assert not isinstance(g.module, tvm.VisionTransformer)
    assert g.report.returned_class == "torch.fx.graph_module.NetmorphModule"
    assert "3 heads of 16 on a 32 wide stream" in g.report.fallback
    assert "nn.MultiheadAttention ties the head size" in g.report.fallback
    assert g.report.to_dict()["fallback"] == g.report.fallback
    _same_function(parent, g.module, x)
