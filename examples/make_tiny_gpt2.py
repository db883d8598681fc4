"""Write a tiny random-weight GPT-2 folder (config.json + model.safetensors) to try `netmorph grow-hf`.

    python examples/make_tiny_gpt2.py gpt2-tiny

Any folder that ``save_pretrained`` wrote works the same; this one needs no download.
"""

from __future__ import annotations

import sys

# isort: off
import netmorph.hf  # noqa: F401  (first: makes transformers importable beside a mismatched torchvision)
import torch
from transformers import GPT2Config, GPT2LMHeadModel
# isort: on


def main(out: str) -> None:
    config = GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=100, n_positions=32, bos_token_id=0,
                        eos_token_id=0, attn_implementation="eager")
    model = GPT2LMHeadModel(config)
    torch.manual_seed(0)
    with torch.no_grad():  # random norms too, as a trained checkpoint has (fresh ones are all 1 / 0)
        for name, p in model.named_parameters():
            if ".ln_" in name or name.startswith("transformer.ln_f"):
                p.copy_(torch.randn_like(p) * 0.2 + (1.0 if name.endswith("weight") else 0.0))
    model.save_pretrained(out)
    print(f"wrote {out}/ (GPT-2, 2 layers, hidden 32)")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "gpt2-tiny")
