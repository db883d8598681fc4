"""Tiny random-weight builds of timm CNNs and hybrids (and torchvision's ShuffleNetV2) for the zoo tests.

Each is the architecture's own timm module at the smallest configuration that keeps its units
(one or two blocks per stage, 8-64 channels), with norms re-randomised so a wrong morph shows.
"""

from __future__ import annotations

import dataclasses
import sys

import torch
from cnn_models import REAL_TORCHVISION, torchvision_models
from torch import nn

_TIMM = []


def timm():
    """``timm``, imported after :func:`cnn_models.torchvision_models` (which timm needs)."""
    if not _TIMM:
        torchvision_models()
        real = torch.library.register_fake
        torch.library.register_fake = lambda *a, **k: (lambda f: f)  # as torchvision_models does
        # timm imports torchvision: hand it the real one even where a test module hid it
        saved = {k: v for k, v in sys.modules.items() if k.split(".")[0] == "torchvision"}
        sys.modules.update(REAL_TORCHVISION)
        try:
            import timm as t
        finally:
            torch.library.register_fake = real
            for k in [k for k in sys.modules if k.split(".")[0] == "torchvision"]:
                del sys.modules[k]
            sys.modules.update(saved)
        _TIMM.append(t)
    return _TIMM[0]


def randomised(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random norm statistics and affine parameters, random layer scales (zero-init hides bugs)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 1 and ("gamma" in name or "layer_scale" in name or "scale" in name):
                p.copy_(torch.rand(p.shape, generator=g) + 0.5)
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.2)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.2)
    return model.eval()


def seresnext():
    timm()
    from timm.models.resnet import Bottleneck, ResNet

    return ResNet(Bottleneck, [1, 1, 1, 1], cardinality=4, base_width=4, num_classes=10,
                  block_args={"attn_layer": "se"})


def ghostnet():
    """Three GhostNet stages (ghost modules, a strided dw unit, an SE unit) at half width."""
    timm()
    from timm.models.ghostnet import GhostNet

    cfgs = [[[3, 16, 16, 0, 1]], [[3, 48, 24, 0, 2]], [[5, 72, 40, 0.25, 2]], [[3, 120, 40, 0.25, 1]]]
    return GhostNet(cfgs, num_classes=10, width=0.5)


def _csp(variant: str, **stages):
    timm()
    from timm.models import cspnet

    cfg = cspnet.model_cfgs[variant]
    cfg = dataclasses.replace(cfg, stem=dataclasses.replace(cfg.stem, out_chs=8),
                              stages=dataclasses.replace(cfg.stages, **stages))
    return cspnet.CspNet(cfg, num_classes=10)


def cspresnet():
    return _csp("cspresnet50", depth=(1, 1, 1, 1), out_chs=(16, 32, 64, 128))


def cspdarknet():
    return _csp("cspdarknet53", depth=(1, 1, 1, 1, 1), out_chs=(8, 16, 32, 64, 128))


def dla():
    timm()
    from timm.models.dla import DLA, DlaBasic

    return DLA(levels=(1, 1, 1, 2, 2, 1), channels=(8, 16, 16, 32, 64, 128), block=DlaBasic, num_classes=10)


def repvgg():
    timm()
    from timm.models.byobnet import ByobNet, ByoModelCfg, _rep_vgg_bcfg

    cfg = ByoModelCfg(blocks=_rep_vgg_bcfg(d=(1, 2, 2, 1), wf=(0.25, 0.25, 0.25, 0.5)), stem_type="rep",
                      stem_chs=16)
    return ByobNet(cfg, num_classes=10)


def fastvit():
    return timm().create_model("fastvit_t8", layers=(1, 1, 1, 1), embed_dims=(16, 32, 64, 128),
                               num_classes=10)


def shufflenet_v2():
    return torchvision_models().shufflenet_v2_x0_5(weights=None, num_classes=10)


def efficientnet_v2():
    timm()
    from timm.models.efficientnet import _gen_efficientnetv2_s

    return _gen_efficientnetv2_s("efficientnetv2_rw_t", channel_multiplier=0.25, depth_multiplier=0.25,
                                 rw=False, num_classes=10)


def levit():
    return timm().create_model("levit_128s", embed_dim=(32, 48, 64), key_dim=8, num_heads=(2, 3, 4),
                               depth=(1, 1, 1), num_classes=10, distilled=False, img_size=64)


HYBRIDS = {
    "seresnext": seresnext, "ghostnet": ghostnet, "cspresnet": cspresnet, "cspdarknet": cspdarknet,
    "dla": dla, "repvgg": repvgg, "fastvit": fastvit, "shufflenet_v2": shufflenet_v2,
    "efficientnet_v2": efficientnet_v2, "levit": levit,
}
"""name -> builder (random weights; call :func:`randomised` on the result)."""
