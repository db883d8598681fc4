"""Shapes that static inference leaves unknown, measured in ONNX Runtime.

Some exports compute reshape targets from ``Shape`` arithmetic that ONNX inference cannot follow
(ShuffleNet's channel shuffle), so every value after it has unknown channels. A morph needs the
channel count of the values it touches: :func:`fill_unknown_shapes` runs the graph on random
inputs with the values as extra outputs and writes the measured sizes into their types.

A measured size is written only where it does not depend on the input: the graph runs twice, with
every symbolic input dim (batch, sequence length, image size) at two different sizes, and a dim
that differs between the runs keeps what the graph had (a symbolic ``'4*N'``, or unknown). ONNX
Runtime's optimiser trusts these annotations: a size measured at one batch and written where the
batch enters (``[3, 4*N, ...]`` as ``[3, 4, ...]``) would make the child fail at every other batch.
``onnxruntime`` is imported only when needed.
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
    symbolic = any(not isinstance(d, int) for v in graph.inputs if not v.is_parameter
                   for d in (v.type.shape or ()))
    runs = []
    for size in MEASURE_SIZES if symbolic else MEASURE_SIZES[:1]:
        try:
            runs.append(sess.run([v.name for v in todo], _feed(graph, size)))
        except Exception:  # noqa: BLE001 - e.g. inputs whose valid range random data misses
            return 0
    for v, *arrs in zip(todo, *runs, strict=True):
        v.type = _measured(v, arrs)
    return len(todo)


MEASURE_SIZES = (2, 3)
"""The sizes every symbolic input dim takes in the two measuring runs."""


def _feed(graph: Graph, size: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(size)
    feed = {}
    for v in graph.inputs:
        if v.is_parameter:
            continue
        shape = [d if isinstance(d, int) else size for d in (v.type.shape or ())]
        dt = v.type.dtype
        feed[v.name] = (rng.standard_normal(shape).astype(dt) if np.issubdtype(dt, np.floating)
                        else np.zeros(shape, dt))
    return feed


def _measured(v: Value, arrs: list[np.ndarray]) -> TensorType:
    """``v``'s type with the sizes equal in every run; the others stay as they were or unknown."""
    elem = v.type.elem_type if v.type is not None else TensorType.from_numpy(arrs[0]).elem_type
    if len({a.ndim for a in arrs}) != 1:
        return v.type if v.type is not None else TensorType(elem, None)
    old = v.type.shape if v.type is not None and v.type.shape is not None else None
    if old is not None and len(old) != arrs[0].ndim:
        old = None
    dims = []
    for i, sizes in enumerate(zip(*(a.shape for a in arrs), strict=True)):
        was = old[i] if old is not None else None
        if isinstance(was, int) or len(set(sizes)) > 1:
            dims.append(was)  # known, or computed from the input: kept as the graph has it
        else:
            dims.append(sizes[0])
    return TensorType(elem, tuple(dims))


# -- declared shapes at given input sizes -------------------------------------------------------
def symbol_sizes(graph: Graph, feeds: dict[str, np.ndarray]) -> dict[str, int]:
    """The size each symbolic input dim takes in ``feeds`` (by the inputs' declared shapes); a
    symbol given two sizes, or a rank that disagrees, is left out."""
    env: dict[str, int] = {}
    clash: set[str] = set()
    for v in graph.inputs:
        arr = feeds.get(v.name)
        if arr is None or v.type is None or v.type.shape is None or len(v.type.shape) != arr.ndim:
            continue
        for d, size in zip(v.type.shape, arr.shape, strict=True):
            if isinstance(d, str):
                if env.setdefault(d, int(size)) != int(size):
                    clash.add(d)
    return {k: s for k, s in env.items() if k not in clash}


def declared_shape(v: Value, env: dict[str, int]) -> tuple[int, ...] | None:
    """``v``'s declared shape with its symbols at the sizes ``env`` gives them, dims such as
    ``'12*N'`` or ``'N*T'`` (what the dynamo exporter writes) evaluated; ``None`` when a dim is
    unknown or names a symbol ``env`` has no size for."""
    t = v.type
    if t is None or t.shape is None:
        return None
    out = []
    for d in t.shape:
        size = d if isinstance(d, int) else _evaluate(d, env) if isinstance(d, str) else None
        if size is None or size < 0:
            return None
        out.append(int(size))
    return tuple(out)


def _evaluate(expr: str, env: dict[str, int]) -> int | None:
    """An integer expression of symbols (``+ - * // %``, parentheses), or ``None``."""
    import ast

    if len(expr) > 200:
        return None
    try:
        tree = ast.parse(expr.replace(" ", ""), mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None

    def ev(n):
        if isinstance(n, ast.Expression):
            return ev(n.body)
        if isinstance(n, ast.Constant) and type(n.value) is int:
            return n.value
        if isinstance(n, ast.Name):
            return env[n.id]
        if isinstance(n, ast.BinOp):
            a, b = ev(n.left), ev(n.right)
            ops = {ast.Add: lambda: a + b, ast.Sub: lambda: a - b, ast.Mult: lambda: a * b,
                   ast.FloorDiv: lambda: a // b, ast.Mod: lambda: a % b}
            return ops[type(n.op)]()
        raise KeyError(type(n).__name__)

    try:
        value = ev(tree)
    except (KeyError, ZeroDivisionError, RecursionError):
        return None
    return value if isinstance(value, int) else None
