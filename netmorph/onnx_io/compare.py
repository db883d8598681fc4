"""Comparing ONNX protos up to what is not semantic (field presence, ``value_info`` order).

Used to prove that ONNX → IR → ONNX is lossless: two models are the same when their
normalised forms are equal. Normalising drops scalar fields that hold their default value
(protobuf ``optional`` fields record *presence*, which exporters set inconsistently, e.g.
``domain: ""``) and sorts ``value_info`` by name (its order carries no meaning). Everything
else, including the order of nodes, inputs, outputs, initializers and attributes, must match.
"""

from __future__ import annotations

import math
from typing import Any

from google.protobuf.message import Message

_UNORDERED = {"value_info"}  # repeated message fields whose order is not semantic


def normalise_proto(msg: Message) -> dict[str, Any]:
    """A plain-dict form of ``msg`` in which non-semantic differences are gone."""
    out: dict[str, Any] = {}
    for fd, val in msg.ListFields():
        if fd.is_repeated:
            if fd.type == fd.TYPE_MESSAGE:
                items = [normalise_proto(v) for v in val]
                if fd.name in _UNORDERED:
                    items.sort(key=lambda d: str(d.get("name", "")))
            else:
                items = list(val)
            if items:
                out[fd.name] = items
        elif fd.type == fd.TYPE_MESSAGE:
            out[fd.name] = normalise_proto(val)
        elif val != fd.default_value:
            out[fd.name] = val
    return out


def proto_differences(a: Message, b: Message, *, limit: int = 20) -> list[str]:
    """Paths (``graph.node[3].attribute[0].i``) where ``a`` and ``b`` differ once normalised.

    Empty when the two are equal (a NaN equals a NaN here); at most ``limit`` entries.
    """
    diffs: list[str] = []
    _diff(normalise_proto(a), normalise_proto(b), "", diffs, limit)
    return diffs


def _diff(x: Any, y: Any, path: str, diffs: list[str], limit: int) -> None:
    if len(diffs) >= limit:
        return
    if isinstance(x, dict) and isinstance(y, dict):
        for k in sorted(set(x) | set(y)):
            sub = f"{path}.{k}" if path else k
            if k not in x or k not in y:
                diffs.append(f"{sub}: only in {'second' if k not in x else 'first'}")
            else:
                _diff(x[k], y[k], sub, diffs, limit)
    elif isinstance(x, list) and isinstance(y, list):
        if len(x) != len(y):
            diffs.append(f"{path}: {len(x)} items vs {len(y)}")
            return
        for i, (u, v) in enumerate(zip(x, y, strict=True)):
            _diff(u, v, f"{path}[{i}]", diffs, limit)
    elif x != y and not (isinstance(x, float) and isinstance(y, float) and math.isnan(x) and math.isnan(y)):
        shown = [repr(z)[:60] for z in (x, y)]
        diffs.append(f"{path}: {shown[0]} vs {shown[1]}")
