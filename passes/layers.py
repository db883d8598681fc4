"""Graph-building helpers shared by the passes: conv geometry, identity BN / PReLU nodes.

No numerics beyond constant tensors (ones, zeros): the morph arithmetic is in
:mod:`netmorph.solvers`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import PreconditionError
from ..ir import Graph, Node, TensorType, Value

BN_EPS = 1e-5
FLOAT32 = np.dtype(np.float32)


def find_node(graph: Graph, name: str, op_type: str | None = None) -> Node:
    """The node called ``name`` (of ``op_type`` when given), or a :class:`PreconditionError`."""
    try:
        node = graph.node(name)
    except KeyError:
        raise PreconditionError(f"no node named {name!r} in the graph") from None
    if op_type is not None and node.op_type != op_type:
        raise PreconditionError(f"node {name!r} is a {node.op_type}, not a {op_type}")
    return node


def find_value(graph: Graph, name: str) -> Value:
    if not graph.has_value(name):
        raise PreconditionError(f"no value named {name!r} in the graph")
    return graph.value(name)


def channels_of(value: Value, what: str) -> int:
    """The channel count of an NCHW ``value`` (its type must say it)."""
    t = value.type
    if t is None or t.shape is None or len(t.shape) != 4:
        raise PreconditionError(f"{what}: value {value.name!r} is not a 4-D (NCHW) tensor (type {t})")
    c = t.shape[1]
    if not isinstance(c, int):
        raise PreconditionError(f"{what}: value {value.name!r} has an unknown channel count ({t})")
    return c


@dataclass(frozen=True)
class ConvGeometry:
    """What a pass needs to know about a 2-D conv node (validated)."""

    node: Node
    weight: np.ndarray
    bias: np.ndarray | None
    kernel: int
    strides: tuple[int, int]

    @property
    def cout(self) -> int:
        return self.weight.shape[0]

    @property
    def cin(self) -> int:
        return self.weight.shape[1]


def conv_geometry(node: Node) -> ConvGeometry:
    """Validate that ``node`` is a plain 2-D 'same'-padded conv with constant weights."""
    where = f"conv {node.name!r}"
    if node.op_type != "Conv":
        raise PreconditionError(f"node {node.name!r} is a {node.op_type}, not a Conv")
    w = node.param(1)
    if w is None:
        raise PreconditionError(f"{where}: its weight is computed, not a parameter")
    if w.ndim != 4:
        raise PreconditionError(f"{where}: only 2-D convs are supported (weight rank {w.ndim})")
    group = int(node.attr("group", 1))
    if group != 1:
        kind = "depthwise" if group == w.shape[0] and w.shape[1] == 1 else "grouped"
        raise PreconditionError(f"{where} is a {kind} conv (group={group}); only group=1 is supported")
    kh, kw = w.shape[2], w.shape[3]
    if kh != kw or kh % 2 == 0:
        raise PreconditionError(f"{where}: kernel {kh}x{kw} is not square and odd")
    dil = tuple(node.attr("dilations", [1, 1]))
    if any(d != 1 for d in dil):
        raise PreconditionError(f"{where}: dilated convs (dilations={list(dil)}) are not supported")
    auto_pad = node.attr("auto_pad", b"NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else str(auto_pad)
    pads = list(node.attr("pads", [0, 0, 0, 0]))
    same = (kh - 1) // 2
    if auto_pad not in ("NOTSET", "") or pads != [same] * 4:
        raise PreconditionError(
            f"{where}: padding must be explicit 'same' padding {[same] * 4} "
            f"(pads={pads}, auto_pad={auto_pad})"
        )
    b = node.param(2)
    if len(node.inputs) > 2 and node.inputs[2] is not None and b is None:
        raise PreconditionError(f"{where}: its bias is computed, not a parameter")
    strides = tuple(int(s) for s in node.attr("strides", [1, 1]))
    return ConvGeometry(node, w, b, kh, strides)  # type: ignore[arg-type]


def default_factor_sizes(kernel: int) -> tuple[int, int]:
    """Factor kernel sizes for a ``kernel``: 1x1 -> 1+1, 3x3 and 5x5 -> 3+3, 7x7 -> 3+5 ..."""
    if kernel == 1:
        return 1, 1
    if kernel <= 5:
        return 3, 3
    return 3, kernel - 2


def conv_node(graph: Graph, x: Value, weight: np.ndarray, bias: np.ndarray | None, *, name: str,
              strides: tuple[int, int] = (1, 1), out_type: TensorType | None = None) -> Node:
    """A 'same'-padded 2-D conv node reading ``x`` (not yet placed)."""
    k = weight.shape[2]
    p = (k - 1) // 2
    ins = [x, graph.add_parameter(f"{name}.weight", weight)]
    if bias is not None:
        ins.append(graph.add_parameter(f"{name}.bias", bias))
    attrs = {
        "kernel_shape": [k, k], "pads": [p, p, p, p], "strides": list(strides),
        "dilations": [1, 1], "group": 1,
    }
    return graph.create_node("Conv", ins, attrs, name=name, output_types=[out_type])


def identity_bn_node(graph: Graph, x: Value, channels: int, *, name: str,
                     dtype: np.dtype = FLOAT32) -> Node:
    """BatchNormalization that is the identity in inference: gamma 1, beta 0, mean 0, var 1-eps.

    In training mode a BatchNorm normalises by the batch statistics instead, so it is the
    identity only in inference (which is where the child is verified).
    """
    ins = [
        x,
        graph.add_parameter(f"{name}.scale", np.ones(channels, dtype)),
        graph.add_parameter(f"{name}.bias", np.zeros(channels, dtype)),
        graph.add_parameter(f"{name}.mean", np.zeros(channels, dtype)),
        graph.add_parameter(f"{name}.var", np.full(channels, 1.0 - BN_EPS, dtype)),
    ]
    return graph.create_node(
        "BatchNormalization", ins, {"epsilon": BN_EPS, "momentum": 0.9}, name=name,
        output_types=[x.type],
    )


def identity_prelu_node(graph: Graph, x: Value, channels: int, *, name: str,
                        dtype: np.dtype = FLOAT32) -> Node:
    """PReLU with slope 1 (shape (C, 1, 1)): the identity until training bends it."""
    slope = graph.add_parameter(f"{name}.slope", np.ones((channels, 1, 1), dtype))
    return graph.create_node("PRelu", [x, slope], name=name, output_types=[x.type])


def insert_chain_after(graph: Graph, value: Value, nodes: list[Node], out: Value) -> None:
    """Place ``nodes`` right after ``value``'s producer and move ``value``'s readers to ``out``.

    The readers are those ``value`` had before ``nodes`` were created; new nodes that read
    ``value`` keep reading it. A graph output ``value`` is replaced by ``out``.
    """
    new_ids = {id(n) for n in nodes}
    for reader, idx in value.uses():
        if id(reader) not in new_ids:
            reader.set_input(idx, out)
    if value.is_graph_output:
        # keep the model's interface: the output name moves to the new value
        name = value.name
        graph.rename_value(value, graph.unique_value_name(f"{name}.pre"))
        graph.rename_value(out, name)
        for i, v in enumerate(graph.outputs):
            if v is value:
                graph.outputs[i] = out
    if value.producer is None:
        graph.insert_after(None, *nodes)
    else:
        graph.insert_after(value.producer, *nodes)
