"""Per-family rules that turn a grown graph's parameters back into a ``transformers`` checkpoint.

One entry per ``config.model_type``; adding a family is data, not code:

- ``layers``: a regular expression over ``state_dict`` keys with two groups, the layer index and
  the key's role inside the layer (``transformer.h.3.attn.c_attn.weight`` -> ``3``,
  ``attn.c_attn.weight``); keys it does not match are outside the layers (embeddings, final norm);
  three groups (stage, layer, role) number the layers of each stage apart (torchvision's ResNet,
  :mod:`netmorph.torch.classes`, whose rules also use ``("stage_layers",)`` and ``("scale", role,
  axis)``: see :func:`netmorph.hf.mapping.config_changes`);
- ``layer_key``: how to write the key of role ``{role}`` in layer ``{i}`` (of stage ``{stage}``);
- ``config``: config field -> how the child's value is read: ``("layers",)`` the number of layers,
  ``("dim", role, axis)`` a dimension of a layer parameter (the same in every layer, else the
  child cannot be written as one config), ``("structure", attribute)`` what the transformer
  recognition reads off the grown graph (``heads``, ``kv_heads``, ``head_size``: the data flow of
  the attention, not a tensor's size); a field the parent's config leaves ``None`` (derived, as
  GPT-2's ``n_inner``) stays ``None`` while the child's value equals the parent's;
- ``tied``: the config field saying the output head shares the token embedding, and the two keys;
- ``vocab`` / ``positions``: the config fields that bound example token ids and their length;
- ``position_table``: positions are a learned table (GPT-2's ``wpe``): the export keeps the
  sequence length symbolic so the table stays a tensor (folded at one length it could not be
  written back). Rotary families export at one length: the class computes its own tables.

Every tensor is then checked against the shape a model of the new config gives it: a growth that
is not a config change of the class (GPT-2 ``add-heads``: heads × head size ≠ ``n_embd``) is
refused with that reason.
"""

from __future__ import annotations

_LLAMA_STYLE = {
    "layers": r"^model\.layers\.(\d+)\.(.+)$",
    "layer_key": "model.layers.{i}.{role}",
    "config": {"num_hidden_layers": ("layers",), "intermediate_size": ("dim", "mlp.gate_proj.weight", 0),
               "hidden_size": ("dim", "input_layernorm.weight", 0),
               "num_attention_heads": ("structure", "heads"),
               "num_key_value_heads": ("structure", "kv_heads"),
               "head_dim": ("structure", "head_size")},
    "tied": ("tie_word_embeddings", "model.embed_tokens.weight", "lm_head.weight"),
    "vocab": "vocab_size",
    "positions": "max_position_embeddings",
}

FAMILIES: dict[str, dict] = {
    "gpt2": {
        "layers": r"^transformer\.h\.(\d+)\.(.+)$",
        "layer_key": "transformer.h.{i}.{role}",
        "config": {"n_layer": ("layers",), "n_inner": ("dim", "mlp.c_fc.weight", 1),
                   "n_embd": ("dim", "ln_1.weight", 0), "n_head": ("structure", "heads")},
        "tied": ("tie_word_embeddings", "transformer.wte.weight", "lm_head.weight"),
        "vocab": "vocab_size",
        "positions": "n_positions",
        "position_table": True,  # a learned table: exported with a symbolic length, it stays a tensor
    },
    # Llama-style decoders (RMSNorm, SwiGLU, rotary, grouped KV heads): one layout, three classes
    "llama": _LLAMA_STYLE,
    "qwen2": _LLAMA_STYLE,
    "mistral": _LLAMA_STYLE,
}
