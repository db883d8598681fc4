"""Constant folding: a node whose inputs are all known is evaluated once, while lowering.

Uses ONNX's own reference implementation (``onnx.reference``) on a one-node model, so the
folded value follows the ONNX specification exactly, for any standard op.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper
from onnx.reference import ReferenceEvaluator

from ..errors import LoweringError
from ..ir import Node
from .names import label
from .values import Const

# Ops whose output holds the input's elements in the same order: a parameter seen through
# them is still that parameter (trained values can be written back through them).
ORDER_PRESERVING = frozenset({"Identity", "Reshape", "Squeeze", "Unsqueeze", "Flatten"})

# Never folded: random or stateful ops.
NOT_FOLDABLE = frozenset({
    "RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial",
    "Bernoulli", "Dropout",
})


def fold_node(node: Node, inputs: list[Const | None], opset: int) -> list[Const]:
    """Evaluate ``node`` on constant ``inputs``; one :class:`Const` per output."""
    names = [f"i{k}" if c is not None else "" for k, c in enumerate(inputs)]
    outs = [f"o{k}" for k in range(len(node.outputs))]
    proto = helper.make_node(node.op_type, names, outs, domain=node.domain or "")
    proto.attribute.extend(node.attributes.values())
    ins = [
        helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(c.array.dtype), c.array.shape)
        for n, c in zip(names, inputs, strict=True) if c is not None
    ]
    outs_vi = [helper.make_tensor_value_info(o, onnx.TensorProto.UNDEFINED, None) for o in outs]
    model = helper.make_model(
        helper.make_graph([proto], "fold", ins, outs_vi),
        opset_imports=[helper.make_opsetid("", opset)],
    )
    feeds = {n: c.array for n, c in zip(names, inputs, strict=True) if c is not None}
    try:
        results = ReferenceEvaluator(model).run(None, feeds)
    except Exception as e:  # noqa: BLE001 - the reference evaluator raises many types
        raise LoweringError(
            f"{node.op_type} node {label(node)}: cannot evaluate it on its constant inputs ({e})"
        ) from None
    origin = inputs[0].origin if node.op_type in ORDER_PRESERVING and inputs and inputs[0] else None
    return [Const(np.asarray(r), origin if k == 0 else None) for k, r in enumerate(results)]
