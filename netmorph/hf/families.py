"""Per-family rules that turn a grown graph's parameters back into a ``transformers`` checkpoint.

One entry per ``config.model_type``; adding a family is data, not code:

- ``layers``: a regular expression over ``state_dict`` keys with two groups, the layer index and
  the key's role inside the layer (``transformer.h.3.attn.c_attn.weight`` -> ``3``,
  ``attn.c_attn.weight``); keys it does not match are outside the layers (embeddings, final norm);
- ``layer_key``: how to write the key of role ``{role}`` in layer ``{i}``;
- ``config``: config field -> how the child's value is read: ``("layers",)`` the number of layers,
  ``("dim", role, axis)`` a dimension of a layer parameter (the same in every layer, else the
  child cannot be written as one config), ``("same",)`` unchanged;
- ``vocab`` / ``positions``: the config fields that bound example token ids and their length.
"""

from __future__ import annotations

FAMILIES: dict[str, dict] = {
    "gpt2": {
        "layers": r"^transformer\.h\.(\d+)\.(.+)$",
        "layer_key": "transformer.h.{i}.{role}",
        "config": {"n_layer": ("layers",), "n_inner": ("dim", "mlp.c_fc.weight", 1),
                   "n_embd": ("dim", "ln_1.weight", 0)},
        "vocab": "vocab_size",
        "positions": "n_positions",
    },
    # the same layout rules for Llama-style checkpoints (RMSNorm, gated MLP, grouped KV heads);
    # growing them needs their recognition by the transformer passes
    "llama": {
        "layers": r"^model\.layers\.(\d+)\.(.+)$",
        "layer_key": "model.layers.{i}.{role}",
        "config": {"num_hidden_layers": ("layers",), "intermediate_size": ("dim", "mlp.gate_proj.weight", 0),
                   "hidden_size": ("dim", "input_layernorm.weight", 0)},
        "vocab": "vocab_size",
        "positions": "max_position_embeddings",
    },
}
