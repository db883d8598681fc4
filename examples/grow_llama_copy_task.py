r"""Grow a tiny Llama (2 -> 4 layers, hidden 64 -> 128) in the middle of training; it keeps learning.

A ``LlamaForCausalLM`` built from its config (vocab 16, 4 heads in 2 KV groups, head size 16,
SwiGLU 96, random weights) learns a copy task (predict the previous token, sequences of 8) with
AdamW. After ``--before`` steps ``netmorph.torch.grow`` applies ``deepen`` (LLaMA Pro's identity
blocks) and ``widen-hidden`` (HyperCloning: hidden 64 -> 128, heads 4 -> 8, KV groups 2 -> 4,
head size and rotary unchanged), each verified in ONNX Runtime, and hands back a model of **the
same class** with the new config and an AdamW whose moments were carried. Nothing else in the
loop changes::

    python examples/grow_llama_copy_task.py            # prints the loss curve as JSON

The JSON gives the training losses before and after the growth, the held-out loss just before and
just after it (equal: the growth preserves the function), the config change and the time it took.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

# isort: off
import netmorph.hf  # noqa: F401  (first: makes transformers importable beside a mismatched torchvision)
import torch
import torch.nn.functional as F
from transformers import LlamaConfig, LlamaForCausalLM
# isort: on

from netmorph.passes import get_pass

import netmorph.torch as nmt

VOCAB, SEQ = 16, 8


def tiny_llama(seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=32,
                      attn_implementation="eager", use_cache=False, initializer_range=0.02,
                      bos_token_id=0, eos_token_id=0, pad_token_id=0)
    return LlamaForCausalLM(cfg)


def batch(g: torch.Generator, n: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """Token sequences and their targets: each position predicts the token before it."""
    x = torch.randint(1, VOCAB, (n, SEQ), generator=g)
    return x, torch.cat([torch.zeros(n, 1, dtype=x.dtype), x[:, :-1]], 1)


def loss_of(model, x, y) -> torch.Tensor:
    logits = model(input_ids=x).logits
    return F.cross_entropy(logits[:, 1:].reshape(-1, VOCAB), y[:, 1:].reshape(-1))


def held_out(model) -> float:
    x, y = batch(torch.Generator().manual_seed(99), n=64)
    was = model.training
    model.eval()
    with torch.no_grad():
        out = float(loss_of(model, x, y))
    model.train(was)
    return out


def train(model, opt, steps: int, g: torch.Generator) -> list[float]:
    model.train()
    losses = []
    for _ in range(steps):
        x, y = batch(g)
        loss = loss_of(model, x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(round(loss.item(), 5))
    return losses


def run(before: int = 40, after: int = 30, seed: int = 0, lr: float = 3e-3) -> dict:
    """Train ``before`` steps, grow, train ``after`` steps; the curve and what the growth did."""
    model = tiny_llama(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed + 1)
    start = held_out(model)
    curve_before = train(model, opt, before, g)
    loss_before_growth = held_out(model)
    example = batch(torch.Generator().manual_seed(seed + 2), n=2)[0]
    t = time.perf_counter()
    grown = nmt.grow(model, example, ["deepen", get_pass("widen-hidden", factor=2)], optimizer=opt, seed=seed)
    grow_s = time.perf_counter() - t
    child, child_opt = grown.module, grown.optimizer
    loss_after_growth = held_out(child)
    curve_after = train(child, child_opt, after, g)
    cfg, new = model.config, child.config
    fields = ("num_hidden_layers", "hidden_size", "intermediate_size", "num_attention_heads",
              "num_key_value_heads")
    return {
        "model": type(child).__name__, "same_class": type(child) is type(model),
        "config": {k: [getattr(cfg, k), getattr(new, k)] for k in fields},
        "held_out_loss": {"start": round(start, 5), "before_growth": round(loss_before_growth, 5),
                          "after_growth": round(loss_after_growth, 5), "end": round(held_out(child), 5)},
        "train_loss_before": curve_before, "train_loss_after": curve_after,
        "carried_state": sum(1 for p in child.parameters()
                             if p in child_opt.state and float(child_opt.state[p]["step"]) > 0),
        "parameters": [sum(p.numel() for p in m.parameters()) for m in (model, child)],
        "grow_s": round(grow_s, 2),
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", type=int, default=40, help="training steps before the growth")
    ap.add_argument("--after", type=int, default=30, help="training steps after it")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    torch.set_num_threads(1)  # a tiny model: one thread is faster on a shared machine
    json.dump(run(a.before, a.after, a.seed), sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
