"""ONNX padding attributes (``pads``, ``auto_pad``) for convolutions and pools."""

from __future__ import annotations

import math

from ..errors import LoweringError
from ..ir import Node
from .names import label


def resolve_pads(node: Node, spatial: tuple | None, kernel: list[int], strides: list[int],
                 dilations: list[int]) -> tuple[list[int], list[int]]:
    """The (begin, end) padding per spatial dim, with ``auto_pad`` resolved."""
    k = len(kernel)
    auto = node.attr("auto_pad", b"NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else str(auto)
    if auto in ("NOTSET", ""):
        pads = list(node.attr("pads", [0] * (2 * k)))
        if len(pads) != 2 * k:
            raise LoweringError(f"{node.op_type} node {label(node)}: pads {pads} do not fit {k} spatial dims")
        return pads[:k], pads[k:]
    if auto == "VALID":
        return [0] * k, [0] * k
    if auto not in ("SAME_UPPER", "SAME_LOWER"):
        raise LoweringError(f"{node.op_type} node {label(node)}: auto_pad {auto!r} is not supported")
    begins, ends = [], []
    for i in range(k):
        span = (kernel[i] - 1) * dilations[i] + 1
        if strides[i] == 1:
            total = span - 1
        else:
            size = None if spatial is None else spatial[i]
            if not isinstance(size, int):
                raise LoweringError(
                    f"{node.op_type} node {label(node)}: auto_pad {auto} with stride {strides[i]} needs "
                    "a static spatial input size"
                )
            total = max((math.ceil(size / strides[i]) - 1) * strides[i] + span - size, 0)
        small, big = total // 2, total - total // 2
        begins.append(small if auto == "SAME_UPPER" else big)
        ends.append(big if auto == "SAME_UPPER" else small)
    return begins, ends


def torch_pad_list(begins: list[int], ends: list[int]) -> list[int]:
    """The ``F.pad`` argument (last dim first) for per-dim begin/end pads."""
    out: list[int] = []
    for b, e in zip(reversed(begins), reversed(ends), strict=True):
        out += [b, e]
    return out
