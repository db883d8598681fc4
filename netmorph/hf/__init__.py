"""Grow Hugging Face ``transformers`` checkpoints into checkpoints of the same class.

    import netmorph.hf as nmh

    g = nmh.grow(model, "deepen", optimizer=opt)     # verified in ONNX Runtime and by its own forward
    g.model.config.n_layer                           # the updated config; type(g.model) is type(model)
    nmh.write_folder("grown/", g.model, g.report, g.optimizer)

``netmorph grow-hf DIR --pass deepen -o OUT`` does the same on a model folder. See ``docs/hf.md``.
"""

from __future__ import annotations

from .families import FAMILIES
from .folder import FolderError, load_folder, load_optimizer, write_folder
from .grow import HFGrown, check_forward, grow

__all__ = ["FAMILIES", "FolderError", "HFGrown", "check_forward", "grow", "load_folder", "load_optimizer",
           "write_folder"]
