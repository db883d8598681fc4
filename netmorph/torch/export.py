"""A torch module as an IR graph, and which IR parameter holds each of its tensors.

Two sources:

- a module :func:`netmorph.lower` made and :func:`netmorph.torch.grow` handed out (it remembers
  the graph it was lowered from): :func:`netmorph.write_back` puts its current weights into that
  graph, and its binding table names the IR parameter of every module tensor; no export;
- any other ``nn.Module``: exported with ``torch.onnx.export`` in eval-mode semantics, the dynamo
  exporter first (``optimize=False``, so BatchNorm stays a ``BatchNormalization`` node with its
  running statistics and does not fold into the conv), the TorchScript exporter as a fallback
  (``do_constant_folding=False``, ``TrainingMode.EVAL``). Both name initializers after the
  ``state_dict`` keys; the TorchScript exporter merges equal initializers behind ``Identity``
  nodes, which :func:`_untie_aliases` undoes so each torch tensor has an IR parameter of its own.

Every mapped tensor is checked against the IR parameter (same shape, same values): an exporter
that rewrote a weight (transposed, folded) is reported, never silently mis-mapped.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import warnings
import weakref
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from onnx import numpy_helper
from torch import nn

from ..errors import NetmorphError
from ..ir import Graph, Value
from ..onnx_io import from_onnx

EXPORTERS = ("auto", "dynamo", "torchscript")
PARAMETRIC_OPS = frozenset({
    "Conv", "ConvTranspose", "BatchNormalization", "Gemm", "MatMul", "PRelu", "LayerNormalization",
    "InstanceNormalization", "GroupNormalization",
})

EXPORTER_NOISE = (
    # torch's exporter registers its torchvision ops (nms, roi_align) and logs one warning per op
    # when torchvision is absent: a model that uses none of them is not concerned
    ("torch.onnx._internal.exporter._registration", "torchvision is not installed"),
)
"""(logger, message prefix) of exporter log records that say nothing about the user's module."""

_GRAPHS: weakref.WeakKeyDictionary[nn.Module, Graph] = weakref.WeakKeyDictionary()
"""Lowered modules handed out by netmorph.torch -> the graph they were lowered from."""


class ExportError(NetmorphError):
    """The module cannot be turned into a graph netmorph can grow (the message says why)."""


@dataclass(frozen=True)
class TensorSlot:
    """Where one module tensor lives in the IR: parameter ``ir`` (IR layout) seen as ``shape``.

    ``transpose``: the module holds the 2-D transpose of the IR parameter (``Gemm transB=0``).
    """

    ir: str
    shape: tuple[int, ...]
    transpose: bool = False

    def to_ir(self, a: np.ndarray, ir_shape: tuple[int, ...]) -> np.ndarray:
        """A module-layout array as an array of the IR parameter's layout."""
        a = np.asarray(a)
        if self.transpose:
            a = a.reshape(self.shape[::-1]).T
        return a.reshape(ir_shape)

    def from_ir(self, a: np.ndarray, torch_shape: tuple[int, ...]) -> np.ndarray:
        """An IR-layout array in the module tensor's layout."""
        a = np.asarray(a).reshape(self.shape)
        if self.transpose:
            a = a.T
        return a.reshape(torch_shape)


@dataclass
class Captured:
    """A module as a graph: ``graph``, ``slots`` (state_dict key -> :class:`TensorSlot`), how."""

    graph: Graph
    slots: dict[str, TensorSlot]
    source: str
    unmapped: list[str] = field(default_factory=list)
    """``state_dict`` keys with no IR parameter (unused by ``forward``, or folded away)."""


def first_line(e: BaseException) -> str:
    """The first line of an exception's message (its type when the message is empty)."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def remember(module: nn.Module, graph: Graph) -> None:
    """Let :func:`capture` find ``graph`` for ``module`` later (no export needed)."""
    _GRAPHS[module] = graph


def lowered_slots(module: nn.Module) -> dict[str, TensorSlot]:
    """``state_dict`` key -> :class:`TensorSlot` of a module made by :func:`netmorph.lower`."""
    bindings = getattr(module, "netmorph_bindings", None)
    if not isinstance(bindings, list):
        raise ExportError("the module has no netmorph binding table (not made by netmorph.lower)")
    slots: dict[str, TensorSlot] = {}
    for origin, _node, _index, shape, path, attr, transpose in bindings:
        slots.setdefault(f"{path}.{attr}", TensorSlot(origin, tuple(shape), bool(transpose)))
    return slots


def capture(module: nn.Module, example_inputs: tuple[Any, ...], *, exporter: str = "auto",
            seq_max: int | None = None) -> Captured:
    """``module`` (its current weights and BN statistics) as a :class:`Captured` graph.

    ``seq_max``: the dynamo export keeps axis 1 of every input symbolic too, up to ``seq_max``
    (token sequences: a position table stays a parameter instead of a slice folded at the
    example's length).

    The module's train/eval mode is restored afterwards; it is not otherwise modified.

    Raises
    ------
    ExportError
        No exporter gave a usable graph: each failed, or its graph has a parameter that does not
        hold the module's tensor (the message gives each exporter's first error line).
    """
    if exporter not in EXPORTERS:
        raise ExportError(f"exporter {exporter!r} is not one of {', '.join(EXPORTERS)}")
    graph = _GRAPHS.get(module)
    if graph is not None and exporter == "auto":
        from ..lowering import write_back

        return Captured(write_back(graph, module), lowered_slots(module), "lowered")
    order = ("dynamo", "torchscript") if exporter == "auto" else (exporter,)
    errors = []
    was_training = module.training
    module.eval()
    try:
        for name in order:
            try:
                return _captured(module, from_onnx(_export(module, example_inputs, name, seq_max)), name)
            except Exception as e:  # noqa: BLE001 - exporters raise many types; try the next one
                errors.append(f"{name}: {first_line(e)}")
    finally:
        module.train(was_training)
    raise ExportError("torch.onnx.export failed (" + "; ".join(errors) + ")")


def has_batchnorm(module: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in module.modules())


class _DropMessages(logging.Filter):
    def __init__(self, prefix: str):
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefix)


@contextlib.contextmanager
def quiet_exporter():
    """Drop the exporter's log records listed in :data:`EXPORTER_NOISE` (only those) meanwhile."""
    filters = [(logging.getLogger(name), _DropMessages(prefix)) for name, prefix in EXPORTER_NOISE]
    for logger, f in filters:
        logger.addFilter(f)
    try:
        yield
    finally:
        for logger, f in filters:
            logger.removeFilter(f)


def _export(module: nn.Module, example_inputs: tuple[Any, ...], exporter: str, seq_max: int | None = None):
    """One export. Constant folding is on unless the module has BatchNorms (folding fuses them
    into the convs in eval mode); transformer recognition needs the folded shape arithmetic."""
    import onnx

    fold = not has_batchnorm(module)
    with warnings.catch_warnings(), quiet_exporter():
        warnings.simplefilter("ignore")
        tensors = [i for i, x in enumerate(example_inputs) if isinstance(x, torch.Tensor) and x.ndim > 0]
        if exporter == "dynamo":  # the batch dimension stays symbolic: the child runs at any batch size
            batch = torch.export.Dim("batch", min=2, max=4096)
            axes = {0: batch}
            if seq_max is not None:
                axes[1] = torch.export.Dim("seq", min=2, max=seq_max)
            shapes = tuple(None if i not in tensors else dict(axes) if example_inputs[i].ndim > 1
                           else {0: batch} for i in range(len(example_inputs)))
            program = torch.onnx.export(module, example_inputs, dynamo=True, optimize=fold, verbose=False,
                                        dynamic_shapes=shapes)
            return program.model_proto
        names = [f"input_{i}" for i in range(len(example_inputs))]
        buf = io.BytesIO()
        torch.onnx.export(module, example_inputs, buf, dynamo=False, do_constant_folding=fold,
                          training=torch.onnx.TrainingMode.EVAL, input_names=names,
                          dynamic_axes={names[i]: {0: "N"} for i in tensors})
        return onnx.load_from_string(buf.getvalue())


def _captured(module: nn.Module, graph: Graph, source: str) -> Captured:
    state = module.state_dict(keep_vars=True)
    _untie_aliases(graph, set(state))
    _untie_deduplicated(graph, state)
    _drop_zero_biases(graph)
    slots: dict[str, TensorSlot] = {}
    unmapped: list[str] = []
    for key, t in state.items():
        if not graph.has_value(key) or graph.value(key).const is None:
            unmapped.append(key)
            continue
        ir = graph.value(key).const
        a = t.detach().cpu().numpy()
        if tuple(ir.shape) != tuple(a.shape) or not np.array_equal(ir.array, a):
            raise ExportError(
                f"the {source} exporter changed {key!r} (IR parameter of shape {tuple(ir.shape)} does "
                f"not hold the module's {tuple(a.shape)} tensor); cannot map its state"
            )
        slots[key] = TensorSlot(key, tuple(a.shape))
    unmapped = _match_by_value(graph, state, slots, unmapped)
    _name_nodes_after_modules(graph, {s.ir: key for key, s in slots.items()})
    return Captured(graph, slots, source, unmapped)


def _match_by_value(graph: Graph, state: dict[str, torch.Tensor], slots: dict[str, TensorSlot],
                    unmapped: list[str]) -> list[str]:
    """Find tensors an exporter stored under another name: equal values, or the 2-D transpose
    (a folded ``Linear`` weight read by ``MatMul``). Returns the keys still unmapped."""
    used = {s.ir for s in slots.values()}
    free = [v for v in graph.parameters if v.name not in used]
    left = []
    for key in unmapped:
        a = state[key].detach().cpu().numpy()
        slot = None
        for v in free:
            ir = v.const
            if tuple(ir.shape) == a.shape and np.array_equal(ir.array, a):
                slot = TensorSlot(v.name, tuple(a.shape))
            elif a.ndim == 2 and tuple(ir.shape) == a.shape[::-1] and np.array_equal(ir.array, a.T):
                slot = TensorSlot(v.name, tuple(ir.shape), transpose=True)
            if slot is not None:
                free.remove(v)
                break
        if slot is None:
            left.append(key)
        else:
            slots[key] = slot
    return left


def _untie_aliases(graph: Graph, keys: set[str]) -> None:
    """``Identity(p)`` outputs named after a ``state_dict`` key become parameters of their own.

    The TorchScript exporter stores equal tensors once (two fresh BatchNorms' gammas are both
    ones) and reads the copy through an ``Identity`` named after the other key.
    """
    for node in list(graph.nodes):
        if node.op_type != "Identity" or len(node.inputs) != 1 or node.inputs[0] is None:
            continue
        src, out = node.inputs[0], node.output
        if src.const is None or out.name not in keys or out.is_graph_output:
            continue
        name = out.name
        graph.rename_value(out, graph.unique_value_name(f"{name}.alias"))
        own = graph.add_parameter(name, src.const)
        if own.name != name:  # pragma: no cover - the name was just freed
            raise ExportError(f"cannot untie exported parameter {name!r}")
        out.replace_all_uses_with(own)
        graph.remove_node(node)
    graph.remove_unused_parameters()


_FX_ARG = re.compile(r"%([pb]_[A-Za-z0-9_]+)")


def _untie_deduplicated(graph: Graph, state: dict[str, torch.Tensor]) -> None:
    """Give back each module tensor the dynamo exporter's optimizer merged into an equal one.

    The optimizer stores equal initializers once (every fresh LayerNorm's weight is all ones), so
    ``h.1.ln_2`` reads the initializer named ``h.0.ln_1.weight``. Which tensor a node really reads
    is in its own ``pkg.torch.onnx.fx_node`` record (the FX placeholders ``p_<key>`` / ``b_<key>``
    of the aten call): a parameter input named after another key than the one among this node's
    own arguments that holds its value is re-pointed to a parameter of its own, named after that
    key (the data flow decides; value equality only tells apart this one node's arguments).
    """
    mangled = {("p_" if isinstance(t, nn.Parameter) else "b_") + k.replace(".", "_"): k
               for k, t in state.items()}
    arrays: dict[str, np.ndarray] = {}

    def array(key: str) -> np.ndarray:
        if key not in arrays:
            arrays[key] = state[key].detach().cpu().numpy()
        return arrays[key]

    for node in list(graph.nodes):
        fx = dict(node.metadata_props).get("pkg.torch.onnx.fx_node")
        if not fx:
            continue
        own = [mangled[a] for a in dict.fromkeys(_FX_ARG.findall(fx)) if a in mangled]
        if not own:
            continue
        for i, v in enumerate(node.inputs):
            if v is None or v.const is None or v.name in own or v.name not in state:
                continue  # its own tensor already, or not a tensor merged under another key
            ir = v.const.array
            hits = [k for k in own if array(k).shape == ir.shape and np.array_equal(array(k), ir)]
            if len(hits) > 1:  # equal arguments of one call: the one of the same kind (.weight / .bias)
                hits = [k for k in hits if k.rsplit(".", 1)[-1] == v.name.rsplit(".", 1)[-1]]
            if len(hits) != 1:
                continue
            key = hits[0]
            mine = graph.value(key) if graph.has_value(key) else graph.add_parameter(key, v.const)
            if mine.const is None or mine.name != key:
                continue  # the name is a computed value's: leave it to the value matcher
            node.set_input(i, mine)


def _name_nodes_after_modules(graph: Graph, keys: dict[str, str]) -> None:
    """Name each node reading the tensor ``<path>.<attr>`` ``<path>`` (``node_conv2d`` -> ``stem.0``).

    ``keys`` maps IR parameter names to the ``state_dict`` keys they hold.

    The lowered child's modules are then named after the user's (``stem_0``, a split conv's
    halves ``body_0_a`` / ``body_0_b``). Names stay unique; a node whose path is taken keeps its own.
    """
    taken = {n.name for n in graph.nodes}
    for node in graph.nodes:
        if node.op_type not in PARAMETRIC_OPS:
            continue
        reads = [keys[v.name] for v in node.inputs if v is not None and v.name in keys]
        if not reads or "." not in reads[0]:
            continue
        path = reads[0].rsplit(".", 1)[0]
        if path in taken:
            continue
        taken.discard(node.name)
        graph._node_names.discard(node.name)  # the IR has no rename_node; keep its name set in sync
        node.name = path
        graph._node_names.add(path)
        taken.add(path)


def _constant_array(v: Value | None) -> np.ndarray | None:
    """The value of ``v`` when it is a parameter or a ``Constant`` node's tensor output."""
    if v is None:
        return None
    if v.const is not None:
        return v.const.array
    prod = v.producer
    if prod is not None and prod.op_type == "Constant" and "value" in prod.attributes:
        return numpy_helper.to_array(prod.attributes["value"].t)
    return None


def _drop_zero_biases(graph: Graph) -> None:
    """Remove the all-zero bias the dynamo exporter builds for a ``bias=False`` conv.

    Unoptimised dynamo exports give such a conv a computed bias ``Expand(CastLike(0, x), …)``;
    the passes need a conv's bias to be a parameter or absent, and the user's module has none.
    """
    changed = False
    for node in graph.find_nodes("Conv"):
        b = node.inputs[2] if len(node.inputs) > 2 else None
        if b is None or b.const is not None or b.producer is None or b.producer.op_type != "Expand":
            continue
        src = b.producer.inputs[0]
        if src is not None and src.producer is not None and src.producer.op_type == "CastLike":
            src = src.producer.inputs[0]
        zero = _constant_array(src)
        if zero is None or zero.size != 1 or np.any(zero != 0):
            continue
        node.set_input(2, None)
        changed = True
    while changed:  # the Expand / CastLike / Shape / Constant chains nobody reads now
        changed = False
        for n in reversed(graph.nodes):
            if n.op_type in ("Expand", "CastLike", "Shape", "Constant") and all(
                    not o.uses() and not o.is_graph_output for o in n.outputs):
                graph.remove_node(n)
                changed = True
