"""Deterministic, valid Python attribute names for IR node and value names.

IR names may contain ``.``, ``/``, ``:`` (``/conv1/Conv``, ``onnx::Conv_41``); module paths
and buffer names may not. Names are cleaned in graph order and made unique with a numeric
suffix, so the same graph always gives the same names.
"""

from __future__ import annotations

import functools
import keyword
import re

import torch.fx as fx
from torch import nn

_BAD = re.compile(r"[^0-9A-Za-z_]+")


@functools.cache
def _reserved() -> frozenset[str]:
    """Attribute names a ``GraphModule`` already has (methods, ``meta``, ``training`` …)."""
    gm = fx.GraphModule(nn.Module(), fx.Graph())
    return frozenset(dir(gm)) | {"netmorph_names", "netmorph_bindings"}


class NameAuthority:
    """Hands out unique, valid attribute names on one module."""

    def __init__(self, reserved: set[str] | None = None):
        self._used: set[str] = set(reserved or ())

    def take(self, hint: str) -> str:
        """A fresh valid identifier derived from ``hint``."""
        base = _BAD.sub("_", hint).strip("_") or "node"
        if base[0].isdigit():
            base = "n_" + base
        if keyword.iskeyword(base) or base in _reserved():
            base += "_"
        name, i = base, 1
        while name in self._used:
            name = f"{base}_{i}"
            i += 1
        self._used.add(name)
        return name


def label(node) -> str:
    """How error messages name a node: its quoted name, or its first output when unnamed."""
    if node.name:
        return repr(node.name)
    out = node.outputs[0].name if node.outputs else "?"
    return f"(unnamed, output {out!r})"
