"""The state of one lowering: the fx graph being built, its modules, and where weights live.

Converters (``netmorph.lowering.ops_*``) read their inputs through this object and add fx nodes
and modules through it; it keeps the name map (IR node → module path) and the *bindings*
(which module tensor holds which graph parameter) that :func:`netmorph.lowering.write_back`
reads later.
"""

from __future__ import annotations

import operator
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.fx as fx
from torch import nn

from ..errors import LoweringError
from ..ir import Graph, Node, TensorType, Value, infer_types
from .modules import Parameter
from .names import NameAuthority, label
from .ranks import value_rank
from .values import Const, Lowered, Sym


class Binding(NamedTuple):
    """One module tensor that holds (a view of) one graph parameter.

    ``origin`` is the parameter's name; ``node`` (its position in ``graph.nodes``) and
    ``input_index`` the IR node input that reads it, ``shape`` the shape that input sees;
    ``module``/``attr`` the module path and its parameter or buffer name; ``transpose``
    whether the module holds the 2-D transpose.
    """

    origin: str
    node: int
    input_index: int
    shape: tuple[int, ...]
    module: str
    attr: str
    transpose: bool


def torch_dtype(np_dtype: np.dtype) -> torch.dtype:
    return torch.from_numpy(np.zeros(0, dtype=np_dtype)).dtype


def node_key(node: Node) -> str:
    """The key of ``node`` in ``netmorph_names``: its name, or its first output's name if unnamed."""
    return node.name or (node.outputs[0].name if node.outputs else node.op_type)


class LoweringContext:
    """Builds one ``torch.fx.Graph`` plus the root module holding its submodules and buffers."""

    def __init__(self, graph: Graph, dtype: torch.dtype):
        self.graph = graph
        self.dtype = dtype
        self.opset = int(graph.opset_imports.get("", graph.opset_imports.get("ai.onnx", 1)))
        self.fx = fx.Graph()
        self.root = nn.Module()
        self.names = NameAuthority()
        self.env: dict[str, Lowered] = {}
        self.node_modules: dict[str, str] = {}
        self.node_index: dict[int, int] = {id(n): i for i, n in enumerate(graph.nodes)}
        self.bindings: list[Binding] = []
        self.linear_outputs: set[str] = set()  # IR values produced by a MatMul lowered to nn.Linear
        self._pending: dict[int, list[tuple]] = {}
        self._buffers: dict[str, str] = {}
        self._inferred: dict[str, TensorType] | None = None

    # -- reading inputs -----------------------------------------------------------------
    def get(self, v: Value | None) -> Lowered | None:
        if v is None:
            return None
        try:
            return self.env[v.name]
        except KeyError:
            raise LoweringError(f"value {v.name!r} is read before it is produced") from None

    def input(self, node: Node, index: int) -> Lowered | None:
        """The lowered input ``index`` of ``node`` (``None`` when absent)."""
        return self.get(node.inputs[index]) if index < len(node.inputs) else None

    def const(self, node: Node, index: int, what: str) -> Const:
        """Input ``index`` as a constant, or a :class:`LoweringError` saying it must be one."""
        c = self.input(node, index)
        if isinstance(c, Sym) and c.is_static:
            c = Const(np.asarray(c.items if not c.scalar else c.items[0], dtype=np.int64))
        if not isinstance(c, Const):
            raise LoweringError(
                f"{node.op_type} node {label(node)}: {what} (input {index}) must be a constant"
            )
        return c

    def ints(self, node: Node, index: int, what: str) -> list[int] | None:
        """A constant integer input as a list (``None`` when the input is absent)."""
        if self.input(node, index) is None:
            return None
        return [int(i) for i in np.asarray(self.const(node, index, what).array).reshape(-1)]

    def type_of(self, v: Value) -> TensorType | None:
        if v.type is not None and v.type.shape is not None:
            return v.type
        if self._inferred is None:
            g = self.graph.clone()
            try:
                infer_types(g, overwrite=True)
                self._inferred = {x.name: x.type for x in g.values() if x.type is not None}
            except Exception:  # noqa: BLE001 - inference is a best effort here
                self._inferred = {}
        return self._inferred.get(v.name) or v.type

    def rank(self, node: Node, index: int) -> int:
        """The rank of input ``index``; a :class:`LoweringError` when it is not known."""
        c = self.input(node, index)
        if isinstance(c, Const):
            return c.array.ndim
        if isinstance(c, Sym):
            return 0 if c.scalar else 1 if c.cols is None else 2
        r = value_rank(self, node.inputs[index])
        if r is None:
            raise LoweringError(
                f"{node.op_type} node {label(node)}: the rank of input {node.inputs[index].name!r} "
                "is unknown (run netmorph.ir.infer_types on the graph first)"
            )
        return r

    def static_shape(self, node: Node, index: int) -> tuple | None:
        c = self.input(node, index)
        if isinstance(c, Const):
            return c.array.shape
        t = self.type_of(node.inputs[index])
        return None if t is None else t.shape

    # -- turning values into fx arguments -----------------------------------------------
    def operand(self, x: Lowered, *, other_rank: int | None = None) -> Any:
        """``x`` as an argument of a tensor op: an fx node, a Python scalar, or a buffer."""
        if isinstance(x, fx.Node):
            return x
        if isinstance(x, Sym):
            items = list(x.items)
            return self.call(torch.tensor, items[0] if x.scalar else items, dtype=torch.int64)
        a = x.array
        if a.size == 1 and (a.ndim == 0 or (other_rank is not None and a.ndim <= other_rank)):
            return a.reshape(()).item()  # broadcasting it would not change the other's shape
        return self.buffer(x)

    def buffer(self, c: Const, hint: str = "const") -> fx.Node:
        """A registered buffer holding ``c`` (floats in the lowering dtype)."""
        key = f"{id(c.array)}:{hint}"
        name = self._buffers.get(key)
        if name is None:
            t = torch.from_numpy(np.array(c.array, copy=True))
            if t.is_floating_point():
                t = t.to(self.dtype)
            name = self.names.take(hint if hint != "const" else f"const_{c.origin or 'tensor'}")
            self.root.register_buffer(name, t)
            self._buffers[key] = name
        return self.fx.get_attr(name)

    # -- building fx nodes --------------------------------------------------------------
    def call(self, fn, *args, name: str | None = None, **kwargs) -> fx.Node:
        return self.fx.create_node("call_function", fn, args, kwargs, name=name)

    def method(self, method: str, *args, name: str | None = None, **kwargs) -> fx.Node:
        return self.fx.create_node("call_method", method, args, kwargs, name=name)

    def size(self, x: fx.Node, dim: int) -> fx.Node:
        return self.method("size", x, dim)

    def arith(self, op, a, b):
        """``op(a, b)`` on ints now, or as an fx node when either is a run-time int."""
        if isinstance(a, fx.Node) or isinstance(b, fx.Node):
            return self.call(op, a, b)
        return op(a, b)

    # -- modules and their weights ------------------------------------------------------
    def load(self, module: nn.Module, attr: str, node: Node, index: int, *, transpose: bool = False) -> None:
        """Fill ``module.<attr>`` (parameter or buffer) from constant input ``index`` of ``node``.

        Records a binding so the trained values can be written back to the graph parameter.
        A constant that is not a graph parameter (computed by folding) is loaded frozen
        (``requires_grad=False``) and not written back.
        """
        c = self.const(node, index, f"input {attr!r}")
        a = np.asarray(c.array)
        if transpose:
            a = a.T
        target = getattr(module, attr)
        t = torch.from_numpy(np.array(a, copy=True)).reshape(target.shape)
        with torch.no_grad():
            target.data = t.to(self.dtype if target.is_floating_point() else target.dtype)
        if c.origin is not None:
            self._pending.setdefault(id(module), []).append(
                (c.origin, self.node_index[id(node)], index, tuple(c.array.shape), attr, transpose)
            )
        elif isinstance(target, nn.Parameter):
            target.requires_grad_(False)

    def weight(self, node: Node, index: int) -> fx.Node:
        """Constant input ``index`` (a graph parameter) as a trainable tensor, written back later.

        For parameters read as plain tensors (a class token, a position table being sliced).
        """
        c = self.const(node, index, "weight")
        m = Parameter(tuple(c.array.shape))
        self.load(m, "weight", node, index)
        return self.call_module(node, m, suffix=f"input{index}")

    def call_module(self, node: Node, module: nn.Module, *args: Any, suffix: str | None = None) -> fx.Node:
        """Register ``module`` under a name derived from ``node`` and call it.

        With ``suffix`` the module is a helper of the node (``<node>_<suffix>``) and not the
        module that ``netmorph_names`` maps the node to.
        """
        key = node_key(node)
        path = self.names.take(key if suffix is None else f"{key}_{suffix}")
        self.root.add_module(path, module)
        if suffix is None:
            self.node_modules[key] = path
        for origin, nname, index, shape, attr, transpose in self._pending.pop(id(module), []):
            self.bindings.append(Binding(origin, nname, index, shape, path, attr, transpose))
        out_name = node.outputs[0].name if node.outputs and suffix is None else path
        return self.fx.create_node("call_module", path, args, {}, name=out_name)


ARITH = {"Add": operator.add, "Sub": operator.sub, "Mul": operator.mul, "Div": operator.floordiv}
"""Integer arithmetic on shape entries."""
