"""Small transformer models built in code and exported to ONNX, for the transformer tests.

Every builder returns ``(module, example_inputs, input_names, dynamic axes)``; :func:`export`
writes an ONNX file with either exporter. Token models take int64 ids; all models have a
dynamic batch dim, token models a dynamic sequence dim too.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

VOCAB = 50
SEQ = 6  # differs from every width and head size of the test models (shape constants stay unambiguous)


class Encoder(nn.Module):
    """Token embedding + learned positions + ``nn.TransformerEncoder`` + a mean-pooled classifier."""

    def __init__(self, norm_first: bool, layers: int = 2, d: int = 32, heads: int = 4, ff: int = 64):
        super().__init__()
        self.tok = nn.Embedding(VOCAB, d)
        self.pos = nn.Parameter(torch.randn(1, 16, d) * 0.1)
        layer = nn.TransformerEncoderLayer(d, heads, ff, dropout=0.0, batch_first=True,
                                           norm_first=norm_first, activation="gelu")
        self.enc = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d) if norm_first else nn.Identity()
        self.head = nn.Linear(d, 10)

    def forward(self, ids):
        h = self.tok(ids) + self.pos[:, : ids.shape[1]]
        return self.head(self.norm(self.enc(h)).mean(1))


class GPTBlock(nn.Module):
    """A hand-written pre-LN decoder block: fused QKV, causal mask from the sequence length."""

    def __init__(self, d: int = 32, heads: int = 4, ff: int = 128):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.fc, self.out = nn.Linear(d, ff), nn.Linear(ff, d)
        self.heads = heads

    def forward(self, x):
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(d, dim=2)
        q, k, v = (z.reshape(b, t, self.heads, d // self.heads).transpose(1, 2) for z in (q, k, v))
        att = q @ k.transpose(-2, -1) / math.sqrt(d // self.heads)
        mask = torch.tril(torch.ones(t, t, dtype=torch.bool, device=x.device))
        att = att.masked_fill(~mask, float("-inf")).softmax(-1)
        y = (att @ v).transpose(1, 2).reshape(b, t, d)
        x = x + self.proj(y)
        return x + self.out(torch.nn.functional.gelu(self.fc(self.ln2(x))))


class GPT(nn.Module):
    """Two :class:`GPTBlock` s between a token/position embedding and a tied-free LM head."""

    def __init__(self, layers: int = 2, d: int = 32):
        super().__init__()
        self.tok, self.pos = nn.Embedding(VOCAB, d), nn.Embedding(16, d)
        self.blocks = nn.ModuleList(GPTBlock(d) for _ in range(layers))
        self.ln = nn.LayerNorm(d)
        self.head = nn.Linear(d, VOCAB, bias=False)

    def forward(self, ids):
        pos = torch.arange(ids.shape[1], device=ids.device)
        h = self.tok(ids) + self.pos(pos)
        for b in self.blocks:
            h = b(h)
        return self.head(self.ln(h))


def _torchvision_broken() -> bool:
    """Whether ``import torchvision`` fails for another reason than its absence (a CUDA build of
    torchvision next to a CPU torch cannot load its C extension)."""
    try:
        import torchvision  # noqa: F401
    except ImportError:
        return False
    except Exception:  # noqa: BLE001 - RuntimeError/OSError from the extension
        return True
    return False


TORCHVISION_BROKEN = _torchvision_broken()
if TORCHVISION_BROKEN:  # transformers imports torchvision when it is installed: hide the broken one
    sys.modules["torchvision"] = None  # type: ignore[assignment]


class ViTLayer(nn.Module):
    """torchvision's ``EncoderBlock``: pre-LN ``nn.MultiheadAttention`` and a GELU MLP."""

    def __init__(self, d: int, heads: int, mlp: int):
        super().__init__()
        self.ln_1 = nn.LayerNorm(d, eps=1e-6)
        self.self_attention = nn.MultiheadAttention(d, heads, batch_first=True)
        self.ln_2 = nn.LayerNorm(d, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(d, mlp), nn.GELU(), nn.Linear(mlp, d))

    def forward(self, x):
        y = self.ln_1(x)
        y, _ = self.self_attention(y, y, y, need_weights=False)
        x = x + y
        return x + self.mlp(self.ln_2(x))


class ViT(nn.Module):
    """torchvision's ``VisionTransformer`` layout (conv patches, class token, learned positions,
    pre-LN encoder, final LN, linear head on the class token), for where torchvision cannot load."""

    def __init__(self, image_size, patch_size, num_layers, num_heads, hidden_dim, mlp_dim, num_classes=10):
        super().__init__()
        self.patch_size, self.hidden_dim = patch_size, hidden_dim
        self.conv_proj = nn.Conv2d(3, hidden_dim, patch_size, stride=patch_size)
        self.class_token = nn.Parameter(torch.zeros(1, 1, hidden_dim))
        n = (image_size // patch_size) ** 2 + 1
        self.pos_embedding = nn.Parameter(torch.empty(1, n, hidden_dim).normal_(std=0.02))
        self.layers = nn.Sequential(*(ViTLayer(hidden_dim, num_heads, mlp_dim) for _ in range(num_layers)))
        self.ln = nn.LayerNorm(hidden_dim, eps=1e-6)
        self.head = nn.Linear(hidden_dim, num_classes)

    def forward(self, x):
        x = self.conv_proj(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.class_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embedding
        return self.head(self.ln(self.layers(x))[:, 0])


def vit(layers: int = 2, hidden: int = 32, heads: int = 4, mlp: int = 64, image: int = 32, patch: int = 8):
    """torchvision's ``VisionTransformer`` (through ``cnn_models.torchvision_models``, which loads
    ``torchvision.models`` even where its C++ ops do not match this torch), else the same layout
    in :class:`ViT`."""
    try:
        from cnn_models import torchvision_models

        tvm = torchvision_models()
    except Exception:  # noqa: BLE001 - no usable torchvision at all
        return ViT(image, patch, layers, heads, hidden, mlp)
    return tvm.VisionTransformer(image_size=image, patch_size=patch, num_layers=layers, num_heads=heads,
                                 hidden_dim=hidden, mlp_dim=mlp, num_classes=10)


def randomised(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random LayerNorm gamma/beta, class token and head (fresh ones are 1 / 0 / zeros, which would
    hide a wrongly ordered clone or a dead output)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.LayerNorm):
                m.weight.copy_(1 + 0.3 * torch.randn(m.weight.shape, generator=g))
                if m.bias is not None:
                    m.bias.copy_(0.3 * torch.randn(m.bias.shape, generator=g))
        for name, p in model.named_parameters():
            if "class_token" in name or name.startswith("heads.") or name.startswith("head."):
                p.copy_(0.3 * torch.randn(p.shape, generator=g))
    return model.eval()


# transformers initialises weights with std 0.02, which makes attention almost uniform in a tiny
# random model: a wrong head split would then go unnoticed. Larger weights give peaked attention.
PEAKED = 0.3


class HFWrap(nn.Module):
    """A ``transformers`` model returning its logits tensor only."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, ids):
        return self.model(input_ids=ids).logits


def bert(layers: int = 2):
    from transformers import BertConfig, BertForSequenceClassification

    cfg = BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=layers, num_attention_heads=4,
                     intermediate_size=64, max_position_embeddings=16, num_labels=3,
                     hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, attn_implementation="eager",
                     initializer_range=PEAKED)
    return HFWrap(BertForSequenceClassification(cfg))


def gpt2(layers: int = 2):
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=layers, n_head=4, n_positions=16, n_inner=64,
                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, use_cache=False,
                     attn_implementation="eager", initializer_range=PEAKED)
    return HFWrap(GPT2LMHeadModel(cfg))


# Llama-style decoders (RMSNorm, gated MLP, rotary, grouped-query attention): 6 query heads in 2 KV
# groups (3 per group) of size 8 at hidden 48, MLP 80 -- every width, head count, group count and
# group size differs, so a wrong head or group split changes the function.
LLAMA_STYLE = ("llama", "qwen2", "mistral", "gemma")


def llama_style(kind: str, layers: int = 2, hidden: int = 48, heads: int = 6, kv_heads: int = 2,
                head_dim: int = 8, mlp: int = 80, vocab: int = VOCAB, tie: bool | None = None,
                init: float = PEAKED):
    """A tiny ``transformers`` causal LM of family ``kind`` (eager attention, no cache), built from
    its config object; RMSNorm weights randomised (fresh ones are all 1, which hides a misordered
    clone and makes the exporter share one array between all norms)."""
    import transformers as tf

    config, model = {"llama": (tf.LlamaConfig, tf.LlamaForCausalLM),
                     "qwen2": (tf.Qwen2Config, tf.Qwen2ForCausalLM),
                     "mistral": (tf.MistralConfig, tf.MistralForCausalLM),
                     "gemma": (tf.GemmaConfig, tf.GemmaForCausalLM)}[kind]
    extra = {"sliding_window": None} if kind == "mistral" else {}
    if tie is not None:
        extra["tie_word_embeddings"] = tie
    cfg = config(vocab_size=vocab, hidden_size=hidden, intermediate_size=mlp, num_hidden_layers=layers,
                 num_attention_heads=heads, num_key_value_heads=kv_heads, head_dim=head_dim,
                 max_position_embeddings=64, attn_implementation="eager", use_cache=False,
                 initializer_range=init, **extra)
    m = HFWrap(model(cfg))
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in m.named_parameters():
            if "norm" in name:
                p.add_(0.3 * torch.randn(p.shape, generator=g))
    return m.eval()


def build(kind: str) -> tuple[nn.Module, torch.Tensor]:
    """The module and an example input of model ``kind``."""
    torch.manual_seed(0)
    ids = torch.randint(0, VOCAB, (2, SEQ))
    if kind == "encoder-post":
        return randomised(Encoder(norm_first=False)), ids
    if kind == "encoder-pre":
        return randomised(Encoder(norm_first=True)), ids
    if kind == "gpt":
        return randomised(GPT()), ids
    if kind == "vit":
        return randomised(vit()), torch.randn(2, 3, 32, 32)
    if kind == "bert":
        return randomised(bert()), ids
    if kind == "gpt2":
        return randomised(gpt2()), ids
    if kind in LLAMA_STYLE:
        return llama_style(kind), ids
    if kind in PARALLEL:
        return parallel_lm(kind), ids
    raise ValueError(kind)


def export(kind: str, path: Path, exporter: str = "torchscript", opset: int | None = None) -> Path:
    """Export model ``kind`` to ``path`` with the TorchScript or the dynamo exporter.

    The default opset is 17 for TorchScript and 18 for dynamo (its own: converting its
    opset-18 ``Split`` down to 17 gives an invalid model).
    """
    opset = opset or (17 if exporter == "torchscript" else 18)
    model, x = build(kind)
    tokens = x.dtype == torch.int64
    axes = {0: "N", 1: "T"} if tokens else {0: "N"}
    with torch.no_grad(), _no_fastpath():
        if exporter == "torchscript":
            torch.onnx.export(model, (x,), str(path), dynamo=False, input_names=["x"], output_names=["y"],
                              opset_version=opset, dynamic_axes={"x": axes, "y": {0: "N"}})
        else:
            dims = {i: torch.export.Dim(n, min=2, max=16) for i, n in axes.items()}
            torch.onnx.export(model, (x,), str(path), dynamo=True, input_names=["x"], output_names=["y"],
                              opset_version=opset, dynamic_shapes={"ids" if tokens else "x": dims},
                              optimize=True)
    return path


class _no_fastpath:
    """Turn off ``nn.MultiheadAttention``'s fused eval path (exported as an op ONNX lacks)."""

    def __enter__(self):
        self.was = torch.backends.mha.get_fastpath_enabled()
        torch.backends.mha.set_fastpath_enabled(False)

    def __exit__(self, *exc):
        torch.backends.mha.set_fastpath_enabled(self.was)


_CACHE: dict[tuple, Path] = {}
_DIR: Path | None = None


def exported(kind: str, exporter: str = "torchscript", opset: int | None = None) -> Path:
    """:func:`export`, once per process (tests share the files; they never modify them)."""
    global _DIR
    key = (kind, exporter, opset)
    if key not in _CACHE:
        if _DIR is None:
            import atexit
            import shutil
            import tempfile

            _DIR = Path(tempfile.mkdtemp(prefix="netmorph-transformers-"))
            atexit.register(shutil.rmtree, _DIR, True)
        _CACHE[key] = export(kind, _DIR / f"{kind}-{exporter}-{opset}.onnx", exporter, opset)
    return _CACHE[key]


def has_transformers() -> bool:
    try:
        import transformers  # noqa: F401
    except ImportError:
        return False
    return True


MODELS = [("encoder-post", "torchscript"), ("encoder-post", "dynamo"), ("encoder-pre", "torchscript"),
          ("encoder-pre", "dynamo"), ("gpt", "torchscript"), ("gpt", "dynamo"), ("vit", "torchscript"),
          ("vit", "dynamo"), ("bert", "torchscript"), ("bert", "dynamo"), ("gpt2", "dynamo"),
          *((k, "dynamo") for k in LLAMA_STYLE)]
"""Every (model, exporter) pair the transformer tests run. GPT-2 and the Llama-style decoders of
transformers 5 use ``aten::diff``, which the TorchScript exporter cannot export."""


def need(kind: str) -> None:
    """Fail (never skip) a test of a ``transformers`` model when the package is not installed: the
    ``[test]`` extra installs it, so a missing one is a broken install, not a reason to test less."""
    import pytest

    if kind in ("bert", "gpt2", *LLAMA_STYLE, *PARALLEL, *ENCODERS) and not has_transformers():
        pytest.fail("transformers is not installed: pip install -e '.[test]'")


def rel_error(a, b) -> float:
    """``max |a - b| / max |b|``: the error relative to the output's scale."""
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12))


# The TorchScript exporter traces nn.MultiheadAttention's reshapes with the example's sequence
# length baked in: those exports run at one length only (ONNX Runtime itself refuses others).
FIXED_LENGTH = {("encoder-post", "torchscript"), ("encoder-pre", "torchscript"), ("vit", "torchscript"),
                ("vit", "dynamo")}


def inputs(kind: str, exporter: str, rng, batch: int = 3) -> list:
    """Inputs to run model ``kind`` on: valid token ids at two batch sizes and two sequence lengths
    where the export allows them (images have one size), else two batch sizes."""
    import numpy as np

    if kind == "vit":
        return [rng.standard_normal((b, 3, 32, 32)).astype(np.float32) for b in (batch, 1)]
    if (kind, exporter) in FIXED_LENGTH:
        return [rng.integers(0, VOCAB, (b, SEQ)).astype(np.int64) for b in (batch, 1)]
    return [rng.integers(0, VOCAB, (b, t)).astype(np.int64) for b, t in ((batch, SEQ), (2, 5))]


def fuse_rms_norms(src: Path, dst: Path, op: str) -> Path:
    """``src`` with every RMSNorm written out (``Pow(x, 2) → ReduceMean → Add(eps) → Sqrt →
    Reciprocal → Mul(x, ·) → Mul(w)``) replaced by one ``op`` node (``RMSNormalization``, opset 23,
    or ORT's ``SimplifiedLayerNormalization``): the other two encodings of the same model."""
    import onnx
    from onnx import helper, numpy_helper

    m = onnx.load(str(src))
    nodes = list(m.graph.node)
    readers: dict[str, list] = {}
    for n in nodes:
        for i in n.input:
            readers.setdefault(i, []).append(n)
    consts = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}

    def only(name, op_type):
        r = readers.get(name, [])
        return r[0] if len(r) == 1 and r[0].op_type == op_type else None

    drop, out = set(), []
    for n in nodes:
        if n.op_type != "Pow" or float(consts.get(n.input[1], np.zeros(2)).reshape(-1)[0]) != 2.0:
            continue
        mean = only(n.output[0], "ReduceMean")
        add = mean and only(mean.output[0], "Add")
        sqrt = add and only(add.output[0], "Sqrt")
        inv = sqrt and only(sqrt.output[0], "Reciprocal")
        mul = inv and only(inv.output[0], "Mul")
        scale = mul and only(mul.output[0], "Mul")
        if scale is None:
            continue
        eps = float(next(consts[x] for x in add.input if x in consts).reshape(-1)[0])
        w = next(x for x in scale.input if x != mul.output[0])
        fused = helper.make_node(op, [n.input[0], w], [scale.output[0]], name=f"{scale.name}_rms", axis=-1,
                                 epsilon=eps)
        drop.update(id(x) for x in (n, mean, add, sqrt, inv, mul, scale))
        out.append((scale, fused))
    repl = {id(a): b for a, b in out}
    kept = [repl.get(id(n), n) for n in nodes if id(n) not in drop or id(n) in repl]
    del m.graph.node[:]
    m.graph.node.extend(kept)
    del m.graph.value_info[:]
    if op == "RMSNormalization":
        for o in m.opset_import:
            if o.domain in ("", "ai.onnx"):
                o.version = 23
    onnx.save(m, str(dst))
    return dst


# -- parallel blocks and encoders with an attention mask (issue 19) ------------------------------
# Parallel layers: attention and MLP read the layer input (through one norm, or two: GPT-NeoX) and
# add into one residual, x + attn(LN(x)) + mlp(LN'(x)). Hidden 32, 4 heads x 8, MLP 64 (Falcon's
# MLP is 4 x hidden = 128), 2 layers, vocab 50.
PARALLEL = ("gpt-neox", "phi", "falcon", "gpt-j")


def parallel_lm(kind: str, layers: int = 2):
    """A tiny ``transformers`` causal LM with parallel layers (eager attention, no cache), from its
    config object; LayerNorm parameters randomised (fresh equal ones would let the exporter merge
    GPT-NeoX's two norms into one node)."""
    import transformers as tf

    common = {"vocab_size": VOCAB, "attn_implementation": "eager", "use_cache": False,
              "initializer_range": PEAKED}
    if kind == "gpt-neox":
        m = tf.GPTNeoXForCausalLM(tf.GPTNeoXConfig(
            hidden_size=32, num_hidden_layers=layers, num_attention_heads=4, intermediate_size=64,
            max_position_embeddings=64, use_parallel_residual=True, rotary_pct=0.5, **common))
    elif kind == "phi":
        m = tf.PhiForCausalLM(tf.PhiConfig(
            hidden_size=32, num_hidden_layers=layers, num_attention_heads=4, intermediate_size=64,
            max_position_embeddings=64, **common))
    elif kind == "falcon":
        m = tf.FalconForCausalLM(tf.FalconConfig(
            hidden_size=32, num_hidden_layers=layers, num_attention_heads=4, parallel_attn=True,
            new_decoder_architecture=False, multi_query=False, bias=True, **common))
    elif kind == "gpt-j":
        m = tf.GPTJForCausalLM(tf.GPTJConfig(
            n_embd=32, n_layer=layers, n_head=4, n_inner=64, n_positions=64, rotary_dim=4, **common))
    else:
        raise ValueError(kind)
    return randomised(HFFullMask(m))


class HFMasked(nn.Module):
    """A ``transformers`` encoder called with ``input_ids``, ``attention_mask`` (and
    ``token_type_ids`` when ``types``), returning its logits (or, for a base model, its last
    hidden state)."""

    def __init__(self, model, types: bool):
        super().__init__()
        self.model, self.types = model, types

    def forward(self, ids, mask, types=None):
        kw = {"token_type_ids": types} if self.types else {}
        out = self.model(input_ids=ids, attention_mask=mask, **kw)
        return out.logits if hasattr(out, "logits") else out.last_hidden_state


ENCODERS = ("bert-mask", "distilbert-mask", "roberta-mask", "albert-mask", "distilbert-body")
"""Encoders exported with their mask inputs: BERT (ids, attention_mask, token_type_ids),
DistilBERT (ids, attention_mask; ``-body``: the base model, whose output is the hidden stream),
RoBERTa and ALBERT (ids, attention_mask)."""


def masked_encoder(kind: str, layers: int = 2) -> nn.Module:
    """A tiny ``transformers`` encoder of ``kind`` (one of :data:`ENCODERS`) from its config object."""
    import transformers as tf

    drop = {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
    common = {"vocab_size": VOCAB, "attn_implementation": "eager", "initializer_range": PEAKED}
    if kind == "bert-mask":
        m = tf.BertForSequenceClassification(tf.BertConfig(
            hidden_size=32, num_hidden_layers=layers, num_attention_heads=4, intermediate_size=64,
            max_position_embeddings=16, num_labels=3, **drop, **common))
        return randomised(HFMasked(m, types=True))
    if kind in ("distilbert-mask", "distilbert-body"):
        cfg = tf.DistilBertConfig(dim=32, n_layers=layers, n_heads=4, hidden_dim=64,
                                  max_position_embeddings=16, num_labels=3, dropout=0.0,
                                  attention_dropout=0.0, seq_classif_dropout=0.0, **common)
        body = kind == "distilbert-body"
        m = tf.DistilBertModel(cfg) if body else tf.DistilBertForSequenceClassification(cfg)
        return randomised(HFMasked(m, types=False))
    if kind == "roberta-mask":
        m = tf.RobertaForSequenceClassification(tf.RobertaConfig(
            hidden_size=32, num_hidden_layers=layers, num_attention_heads=4, intermediate_size=64,
            max_position_embeddings=24, num_labels=3, pad_token_id=1, **drop, **common))
        return randomised(HFMasked(m, types=False))
    if kind == "albert-mask":
        m = tf.AlbertForSequenceClassification(tf.AlbertConfig(
            embedding_size=16, hidden_size=32, num_hidden_layers=layers, num_attention_heads=4,
            intermediate_size=64, max_position_embeddings=16, num_labels=3, **drop, **common))
        return randomised(HFMasked(m, types=False))
    raise ValueError(kind)


def masked_inputs(kind: str, rng, batch: int, length: int) -> dict[str, np.ndarray]:
    """Valid feeds of an encoder of :data:`ENCODERS`: ids (RoBERTa: ≥ 2, its positions count the
    non-padding ids from 2), a 0/1 attention mask with a padded tail on one row and at least one
    kept token per row, token types 0/1 (BERT)."""
    low = 2 if kind == "roberta-mask" else 0
    ids = rng.integers(low, VOCAB, (batch, length)).astype(np.int64)
    mask = (rng.random((batch, length)) < 0.8).astype(np.int64)
    mask[:, 0] = 1
    mask[0, length // 2:] = 0
    feeds = {"ids": ids, "mask": mask}
    if kind == "bert-mask":
        feeds["types"] = rng.integers(0, 2, (batch, length)).astype(np.int64)
    return feeds


def exported_masked(kind: str, exporter: str = "torchscript") -> Path:
    """:func:`export_masked`, once per process (in the directory :func:`exported` uses)."""
    global _DIR
    key = (kind, exporter, "masked")
    if key not in _CACHE:
        if _DIR is None:
            import atexit
            import shutil
            import tempfile

            _DIR = Path(tempfile.mkdtemp(prefix="netmorph-transformers-"))
            atexit.register(shutil.rmtree, _DIR, True)
        _CACHE[key] = export_masked(kind, _DIR / f"{kind}-{exporter}-masked.onnx", exporter)
    return _CACHE[key]


def export_masked(kind: str, path: Path, exporter: str = "torchscript") -> Path:
    """Export encoder ``kind`` with its mask inputs (``ids``, ``mask``, ``types``), batch and length
    dynamic; output ``y``."""
    torch.manual_seed(0)
    model = masked_encoder(kind)
    feeds = masked_inputs(kind, np.random.default_rng(0), 2, SEQ)
    names = list(feeds)
    args = tuple(torch.from_numpy(feeds[n]) for n in names)
    with torch.no_grad():
        if exporter == "torchscript":
            axes = {n: {0: "N", 1: "T"} for n in names}
            torch.onnx.export(model, args, str(path), dynamo=False, input_names=names, output_names=["y"],
                              opset_version=17, dynamic_axes={**axes, "y": {0: "N"}})
        else:
            n_, t_ = torch.export.Dim("N", min=2, max=16), torch.export.Dim("T", min=2, max=16)
            torch.onnx.export(model, args, str(path), dynamo=True, input_names=names, output_names=["y"],
                              opset_version=18, dynamic_shapes={n: {0: n_, 1: t_} for n in names},
                              optimize=True)
    return path


class HFFullMask(nn.Module):
    """A ``transformers`` causal LM called with an all-ones ``attention_mask`` made from the ids:
    with a mask given, transformers 5 does not look for packed sequences (``aten::diff``), so the
    TorchScript exporter (seconds, not the dynamo exporter's tens of seconds) exports it."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, ids):
        return self.model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits


def lowers_and_trains(graph, feeds: dict[str, np.ndarray], reference: np.ndarray) -> None:
    """``graph`` lowers to torch, matches ``reference`` (its ONNX Runtime output on ``feeds``, given
    in the graph's input order) to 1e-5 relative, and one AdamW step moves most of its weights."""
    import netmorph

    gm = netmorph.lower(graph)
    args = [torch.from_numpy(a) for a in feeds.values()]
    with torch.no_grad():
        assert rel_error(gm(*args).numpy(), reference) <= 1e-5
    gm.train()
    before = {n: p.detach().clone() for n, p in gm.named_parameters()}
    opt = torch.optim.AdamW(gm.parameters(), lr=1e-3)
    loss = gm(*args).float().logsumexp(-1).mean()
    loss.backward()
    opt.step()
    assert torch.isfinite(loss)
    moved = sum(not torch.equal(p, before[n]) for n, p in gm.named_parameters())
    assert moved >= len(before) // 2


def grown_shape(before, name: str) -> tuple[int, int, int, int]:
    """``(layers, heads, hidden, MLP)`` a transformer recognised as ``before`` has after pass ``name``
    with the tests' options (deepen L -> 2L, widen-mlp x2, add-heads +2, widen-hidden x2)."""
    layers, heads, hidden, mlp = len(before.layers), before.heads, before.hidden, before.mlp
    return {"deepen": (2 * layers, heads, hidden, mlp),
            "widen-mlp": (layers, heads, hidden, 2 * mlp),
            "add-heads": (layers, heads + 2, hidden, mlp),
            "widen-hidden": (layers, 2 * heads, 2 * hidden, 2 * mlp)}[name]
