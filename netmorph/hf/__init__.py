"""Grow Hugging Face ``transformers`` checkpoints into checkpoints of the same class.

    import netmorph.hf as nmh

    g = nmh.grow(model, "deepen", optimizer=opt)     # verified in ONNX Runtime and by its own forward
    g.model.config.n_layer                           # the updated config; type(g.model) is type(model)
    nmh.write_folder("grown/", g.model, g.report, g.optimizer)

``netmorph grow-hf DIR --pass deepen -o OUT`` does the same on a model folder. See ``docs/hf.md``.
"""

from __future__ import annotations

import sys


def _hide_a_broken_torchvision() -> None:
    """``transformers`` imports torchvision whenever it is installed; a torchvision wheel built for
    another torch raises ``RuntimeError`` at import (``operator torchvision::nms does not exist``),
    which breaks every model class. netmorph needs none of it: such a build is treated as absent."""
    if "torchvision" in sys.modules:
        return
    try:
        import torchvision  # noqa: F401
    except ImportError:
        pass
    except Exception:  # noqa: BLE001 - RuntimeError / OSError from its compiled extension
        for k in [k for k in sys.modules if k.split(".")[0] == "torchvision"]:
            del sys.modules[k]
        sys.modules["torchvision"] = None  # type: ignore[assignment]  # find_spec -> None: absent


_hide_a_broken_torchvision()

from .families import FAMILIES  # noqa: E402
from .folder import FolderError, load_folder, load_optimizer, write_folder  # noqa: E402
from .grow import HFGrown, check_forward, grow  # noqa: E402

__all__ = ["FAMILIES", "FolderError", "HFGrown", "check_forward", "grow", "load_folder", "load_optimizer",
           "write_folder"]
