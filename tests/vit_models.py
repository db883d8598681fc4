"""timm ViT / DeiT / Swin and tied-embedding GPT-2 / Llama, tiny, random weights, exported once per process.

The ViTs carry the traps of issue 19: 3 heads (the fused ``[B, T, 3, H, D]`` split holds two 3s),
a head size equal to the token-grid length (16), and (``vit-square``) an MLP as wide as the stream.
``gpt2-tied`` (hidden 64, heads of 16) and ``llama-tied`` tie their unembedding to the token
table. Norms, class / distillation
tokens and heads are randomised (fresh ones would hide a misordered clone).
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path

import torch
from torch import nn

IMAGE = 32
VITS = ("vit", "vit-square", "deit")


def _randomised(model: nn.Module, seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.LayerNorm):
                m.weight.copy_(1 + 0.3 * torch.randn(m.weight.shape, generator=g))
                m.bias.copy_(0.3 * torch.randn(m.bias.shape, generator=g))
        for name, p in model.named_parameters():
            if name.split(".")[0] in ("cls_token", "dist_token", "head", "head_dist"):
                p.copy_(0.3 * torch.randn(p.shape, generator=g))
    return model.eval()


def build(kind: str) -> tuple[nn.Module, torch.Tensor]:
    from hybrid_models import timm

    torch.manual_seed(0)
    if kind in ("vit", "vit-square", "deit"):
        name = "deit_tiny_distilled_patch16_224" if kind == "deit" else "vit_tiny_patch16_224"
        m = timm().create_model(name, pretrained=False, img_size=IMAGE, patch_size=8, depth=2, embed_dim=48,
                                num_heads=3, mlp_ratio=1.0 if kind == "vit-square" else 2.0, num_classes=10)
        return _randomised(m), torch.randn(2, 3, IMAGE, IMAGE)
    if kind == "swin":
        m = timm().create_model("swin_tiny_patch4_window7_224", pretrained=False, img_size=IMAGE,
                                patch_size=2, window_size=4, embed_dim=16, depths=(1, 1), num_heads=(2, 4),
                                num_classes=10)
        return _randomised(m), torch.randn(2, 3, IMAGE, IMAGE)
    import transformer_models as tm

    if kind == "gpt2-tied":
        from transformers import GPT2Config, GPT2LMHeadModel

        cfg = GPT2Config(vocab_size=tm.VOCAB, n_embd=64, n_layer=2, n_head=4, n_positions=16, n_inner=128,
                         resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, use_cache=False,
                         attn_implementation="eager", initializer_range=tm.PEAKED, tie_word_embeddings=True)
        m = GPT2LMHeadModel(cfg)
        assert m.lm_head.weight is m.transformer.wte.weight
        return tm.randomised(tm.HFWrap(m)), torch.randint(0, tm.VOCAB, (2, tm.SEQ))
    if kind == "llama-tied":
        m = tm.llama_style("llama", tie=True)
        assert m.model.lm_head.weight is m.model.model.embed_tokens.weight
        return m, torch.randint(0, tm.VOCAB, (2, tm.SEQ))
    raise ValueError(kind)


_CACHE: dict[tuple[str, str], Path] = {}
_DIR: list[Path] = []


def exported(kind: str, exporter: str = "torchscript") -> Path:
    """``kind`` exported (TorchScript at opset 17, or dynamo at 18), once per process."""
    key = (kind, exporter)
    if key in _CACHE:
        return _CACHE[key]
    if not _DIR:
        _DIR.append(Path(tempfile.mkdtemp(prefix="netmorph-vit-")))
        atexit.register(shutil.rmtree, _DIR[0], True)
    path = _DIR[0] / f"{kind}-{exporter}.onnx"
    model, x = build(kind)
    tokens = x.dtype == torch.int64
    axes = {0: "N", 1: "T"} if tokens else {0: "N"}
    with torch.no_grad():
        if exporter == "torchscript":
            torch.onnx.export(model, (x,), str(path), dynamo=False, input_names=["x"], output_names=["y"],
                              opset_version=17, dynamic_axes={"x": axes, "y": {0: "N"}})
        else:
            dims = {i: torch.export.Dim(n, min=1 if not tokens else 2, max=16) for i, n in axes.items()}
            torch.onnx.export(model, (x,), str(path), dynamo=True, input_names=["x"], output_names=["y"],
                              opset_version=18, dynamic_shapes={"ids" if tokens else "x": dims},
                              optimize=True)
    _CACHE[key] = path
    return path


def inputs(kind: str, rng) -> list:
    """Two batch sizes (images), or two batch sizes at two lengths (token ids)."""
    import numpy as np

    if kind in (*VITS, "swin"):
        return [rng.standard_normal((b, 3, IMAGE, IMAGE)).astype(np.float32) for b in (3, 1)]
    return [rng.integers(0, 50, (b, t)).astype(np.int64) for b, t in ((3, 6), (2, 5))]
