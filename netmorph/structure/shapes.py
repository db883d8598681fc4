"""Shapes that static inference leaves unknown, measured once in ONNX Runtime.

Some exports compute reshape targets from ``Shape`` arithmetic that ONNX inference cannot follow
(ShuffleNet's channel shuffle), so every value after it has unknown channels. A morph needs the
channel count of the values it touches: :func:`fill_unknown_shapes` runs the graph once on a
random batch with the values as extra outputs and writes the measured shapes into their types
(the batch axis stays symbolic where it was). ``onnxruntime`` is imported only when needed.
"""

from __future__ import annotations

import numpy as np

from ..ir import Graph, TensorType, Value


def _unknown(v: Value) -> bool:
    t = v.type
    return t is None or t.shape is None or any(not isinstance(d, int) for d in t.shape[1:])


def fill_unknown_shapes(graph: Graph, values: list[Value] | None = None) -> int:
    """Measure and set the shapes of ``values`` (default: every node output) whose channel or
    spatial dims are unknown; returns how many were set. The graph's structure is unchanged."""
    cands = [o for n in graph.nodes for o in n.outputs] if values is None else list(values)
    todo = [v for v in cands if _unknown(v) and (v.type is None or v.type.elem_type)]
    if not todo:
        return 0
    import onnxruntime as ort

    from ..onnx_io import graph_session

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        sess = graph_session(graph, extra_outputs=[v.name for v in todo], options=so)
    except Exception:  # noqa: BLE001 - an op ORT cannot run: the shapes stay unknown (a help, not a need)
        return 0
    rng = np.random.default_rng(0)
    feed = {}
    for v in graph.inputs:
        if v.is_parameter:
            continue
        shape = [d if isinstance(d, int) else 1 for d in (v.type.shape or ())]
        dt = v.type.dtype
        feed[v.name] = (rng.standard_normal(shape).astype(dt) if np.issubdtype(dt, np.floating)
                        else np.zeros(shape, dt))
    try:
        outs = sess.run([v.name for v in todo], feed)
    except Exception:  # noqa: BLE001 - e.g. inputs whose valid range random data misses
        return 0
    for v, arr in zip(todo, outs, strict=True):
        shape = list(arr.shape)
        if v.type is not None and v.type.shape is not None and len(v.type.shape) == len(shape) and shape:
            shape[0] = v.type.shape[0] if not isinstance(v.type.shape[0], int) else shape[0]
        v.type = TensorType(v.type.elem_type if v.type is not None else
                            TensorType.from_numpy(arr).elem_type, tuple(shape))
    return len(todo)
