"""ONNX ``ModelProto`` ⇄ IR ``Graph``, lossless for what the IR does not interpret."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import onnx
from onnx import helper

from ..errors import NetmorphError
from ..ir.graph import Graph, IRError, Node, Value, attribute_subgraphs, subgraph_defined_names
from ..ir.parameter import Parameter
from ..ir.types import TensorType


class OnnxFormatError(NetmorphError):
    """The ONNX model cannot be taken in (corrupt, unsupported construct, unsafe)."""


# Model fields the IR keeps verbatim (copied back on export).
_MODEL_EXTRAS = ("functions", "training_info", "configuration")
_GRAPH_EXTRAS = ("quantization_annotation", "metadata_props")


def _set_type(v: Value, tp: onnx.TypeProto) -> None:
    """Type ``v`` from ``tp``; the proto itself is kept when ``TensorType`` cannot say it all.

    Non-tensor types (sequences, optionals …) live only in ``type_proto``. Tensor types that
    carry more than ``TensorType`` models (denotations) keep their proto too; it is written
    back as long as ``v.type`` still describes the same tensor type.
    """
    tt = TensorType.from_type_proto(tp)
    if tt is None:
        v.type_proto = tp
        return
    v.type = tt
    if tt.to_type_proto() != tp:
        v.type_proto = tp


def _read_value_info(v: Value, vi: onnx.ValueInfoProto, *, replace: bool = False) -> None:
    """Copy the documentation fields of ``vi`` onto ``v`` (its type is set separately).

    Empty fields of ``vi`` leave ``v``'s alone unless ``replace``.
    """
    if vi.doc_string or replace:
        v.doc_string = vi.doc_string
    props = [(p.key, p.value) for p in getattr(vi, "metadata_props", ())]
    if props or replace:
        v.metadata_props = props


def from_onnx(model: onnx.ModelProto, *, arrays: Mapping[str, np.ndarray] | None = None) -> Graph:
    """Build an IR graph from ``model`` without copying its weights.

    Initializers keep their ``TensorProto`` (the graph keeps a reference to ``model``'s
    tensors; do not mutate ``model`` afterwards). ``arrays``: the data of initializers that
    ``model`` holds elsewhere (read-only arrays, by name; see
    :func:`netmorph.onnx_io.read_model_proto`), used as they are. Raises
    :class:`OnnxFormatError` for sparse initializers and for graphs that are not valid SSA.
    """
    if not isinstance(model, onnx.ModelProto):
        raise TypeError(f"expected onnx.ModelProto, got {type(model).__name__}")
    try:
        return _build_graph(model, arrays or {})
    except IRError as e:  # duplicate names and the like: the file is at fault, not the caller
        raise OnnxFormatError(str(e)) from None


def _build_graph(model: onnx.ModelProto, arrays: Mapping[str, np.ndarray]) -> Graph:
    gp = model.graph
    if len(gp.sparse_initializer):
        raise OnnxFormatError(
            f"sparse initializers are not supported ({gp.sparse_initializer[0].values.name!r}); "
            "densify them first (onnx.numpy_helper.to_array + a dense initializer)"
        )
    g = Graph(gp.name, {o.domain: o.version for o in model.opset_import})
    g.doc_string = gp.doc_string
    g.ir_version = model.ir_version
    g.producer_name = model.producer_name
    g.producer_version = model.producer_version
    g.model_domain = model.domain
    g.model_version = model.model_version
    g.model_doc_string = model.doc_string
    g.metadata_props = [(p.key, p.value) for p in model.metadata_props]
    g.extras["opset_order"] = [o.domain for o in model.opset_import]
    for field in _MODEL_EXTRAS:
        items = getattr(model, field, ())
        if len(items):
            g.extras[field] = list(items)
    for field in _GRAPH_EXTRAS:
        items = getattr(gp, field, ())
        if len(items):
            g.extras["graph." + field] = list(items)

    init_names = set()
    for t in gp.initializer:
        if t.name in init_names:
            raise OnnxFormatError(f"two initializers are named {t.name!r}")
        init_names.add(t.name)
    for vi in [*gp.input, *gp.output]:
        if vi.type.HasField("tensor_type") and any(
                d.HasField("dim_value") and d.dim_value < 0 for d in vi.type.tensor_type.shape.dim):
            shape = vi.type.tensor_type.shape.dim
            dims = [d.dim_value if d.HasField("dim_value") else d.dim_param for d in shape]
            raise OnnxFormatError(f"graph input/output {vi.name!r} has a negative dimension {dims}")
    for vi in gp.input:
        if vi.name in init_names:
            continue  # an initializer listed as input (IR < 4 style); handled below
        v = g._new_value(vi.name, None)
        _set_type(v, vi.type)
        _read_value_info(v, vi)
        g.inputs.append(v)
    inputs_with_init = {vi.name: vi for vi in gp.input if vi.name in init_names}
    for t in gp.initializer:
        v = g._new_value(t.name, None)
        arr = arrays.get(t.name)
        v.const = Parameter(proto=t) if arr is None else Parameter(arr)
        v.type = v.const.type
        g._params.append(v)
    # Graph inputs that are also initializers stay inputs, in their original order.
    if inputs_with_init:
        g.inputs = []
        for vi in gp.input:
            v = g.value(vi.name)
            if vi.name in inputs_with_init:
                _read_value_info(v, vi)
            g.inputs.append(v)
        g.extras["inputs_with_initializer"] = True

    for np_ in gp.node:
        node_name = np_.name
        node = Node(g, np_.op_type, node_name, domain=np_.domain, overload=getattr(np_, "overload", ""))
        if node_name:
            if node_name in g._node_names:
                g.extras.setdefault("duplicate_node_names", True)
            g._node_names.add(node_name)
        node.doc_string = np_.doc_string
        node.metadata_props = [(p.key, p.value) for p in getattr(np_, "metadata_props", ())]
        for a in np_.attribute:
            node.attributes[a.name] = a
            for sub in attribute_subgraphs(a):
                g._reserved_names |= subgraph_defined_names(sub)
        for name in np_.input:
            if name == "":
                node.append_input(None)
                continue
            if not g.has_value(name):
                raise OnnxFormatError(
                    f"node {node_name or np_.op_type!r} reads {name!r}, which no earlier node, "
                    "graph input or initializer produces (graph not topologically sorted?)"
                )
            node.append_input(g.value(name))
        for i, name in enumerate(np_.output):
            if name == "":
                # An omitted optional output: give it an internal, unique name.
                name = g.unique_value_name(f"{node_name or np_.op_type}.unused{i}")
                g.extras.setdefault("omitted_outputs", set()).add(name)
            if g.has_value(name):
                raise OnnxFormatError(f"value {name!r} is produced twice (not SSA)")
            v = g._new_value(name, None)
            v.producer, v.output_index = node, i
            node.outputs.append(v)
        g.nodes.append(node)
    for vi in gp.value_info:
        v = g._values.get(vi.name)
        if v is not None and v.producer is not None:
            _set_type(v, vi.type)
            _read_value_info(v, vi)
        elif v is not None:
            # value_info about a graph input or an initializer: kept verbatim, written back
            # while the value exists (retyped if a pass changed it).
            g.extras.setdefault("kept_value_info", []).append(vi)
        else:  # about a name that is not a value here (a subgraph's, or stale): kept, reserved
            g.extras.setdefault("orphan_value_info", []).append(vi)
            g._reserved_names.add(vi.name)
    for vi in gp.output:
        if not g.has_value(vi.name):
            raise OnnxFormatError(f"graph output {vi.name!r} is not produced by anything")
        v = g.value(vi.name)
        g.outputs.append(v)
        if v.producer is None:
            # an input or initializer passed straight through: its output entry may say
            # something else than its input entry, so it is kept as written
            g.extras.setdefault("passthrough_outputs", {})[vi.name] = vi
            continue
        if vi.type.WhichOneof("value") is not None:
            _set_type(v, vi.type)
        _read_value_info(v, vi, replace=True)  # the graph-output entry is what is written back
    outputs = {v.name for v in g.outputs if v.producer is not None}
    for vi in gp.value_info:  # value_info that repeats a graph output: kept as written
        if vi.name in outputs:
            g.extras.setdefault("kept_value_info", []).append(vi)
    try:
        g.check()
    except IRError as e:
        raise OnnxFormatError(str(e)) from None
    return g


def _value_info(v: Value) -> onnx.ValueInfoProto:
    vi = onnx.ValueInfoProto()
    vi.name = v.name
    kept = v.type_proto
    if kept is not None and (v.type is None or TensorType.from_type_proto(kept) == v.type):
        vi.type.CopyFrom(kept)
    elif v.type is not None:
        vi.type.CopyFrom(v.type.to_type_proto())
    if v.doc_string:
        vi.doc_string = v.doc_string
    for k, val in v.metadata_props:
        p = vi.metadata_props.add()
        p.key, p.value = k, val
    return vi


def _kept_value_info(g: Graph) -> list[onnx.ValueInfoProto]:
    """Stored value_info entries (of inputs, parameters, graph outputs) still to be written.

    An entry is dropped once its value is gone, or when the value became an intermediate
    (which gets a generated entry); it is retyped if a pass changed the value's type.
    """
    out = []
    for vi in g.extras.get("kept_value_info", ()):
        v = g._values.get(vi.name)
        if v is None or (v.producer is not None and not v.is_graph_output):
            continue
        out.append(_current(vi, v))
    return out


def _current(vi: onnx.ValueInfoProto, v: Value) -> onnx.ValueInfoProto:
    """``vi`` as stored, or retyped when ``v``'s type now contradicts it."""
    t = TensorType.from_type_proto(vi.type)
    if t is not None and v.type is not None and not t.compatible(v.type):
        return _retyped(vi, v.type)
    return vi


def _retyped(vi: onnx.ValueInfoProto, t: TensorType) -> onnx.ValueInfoProto:
    new = onnx.ValueInfoProto()
    new.CopyFrom(vi)
    new.type.CopyFrom(t.to_type_proto())
    return new


def graph_proto_without_initializers(g: Graph) -> onnx.GraphProto:
    """The ``GraphProto`` of ``g`` with every field but ``initializer`` filled."""
    gp = onnx.GraphProto()
    gp.name = g.name
    if g.doc_string:
        gp.doc_string = g.doc_string
    omitted = g.extras.get("omitted_outputs", set())
    for n in g.nodes:
        np_ = gp.node.add()
        np_.op_type = n.op_type
        if n.name:
            np_.name = n.name
        if n.domain:
            np_.domain = n.domain
        if n.overload:
            np_.overload = n.overload
        if n.doc_string:
            np_.doc_string = n.doc_string
        np_.input.extend("" if v is None else v.name for v in n.inputs)
        np_.output.extend("" if o.name in omitted else o.name for o in n.outputs)
        np_.attribute.extend(n.attributes.values())
        for k, val in n.metadata_props:
            p = np_.metadata_props.add()
            p.key, p.value = k, val
    gp.input.extend(_value_info(v) for v in g.inputs)
    passthrough = g.extras.get("passthrough_outputs", {})
    gp.output.extend(
        _current(passthrough[v.name], v) if v.producer is None and v.name in passthrough else _value_info(v)
        for v in g.outputs
    )
    interface = {id(v) for v in g.inputs} | {id(v) for v in g.outputs}
    for n in g.nodes:
        for o in n.outputs:
            if id(o) not in interface and o.name not in omitted and (
                o.type is not None or o.type_proto is not None
            ):
                gp.value_info.append(_value_info(o))
    gp.value_info.extend(_kept_value_info(g))
    gp.value_info.extend(g.extras.get("orphan_value_info", ()))
    for field in _GRAPH_EXTRAS:
        items = g.extras.get("graph." + field)
        if items:
            getattr(gp, field).extend(items)
    return gp


def model_shell(g: Graph) -> onnx.ModelProto:
    """The ``ModelProto`` of ``g`` without its graph."""
    m = onnx.ModelProto()
    m.ir_version = g.ir_version
    order = g.extras.get("opset_order", [])
    domains = [d for d in order if d in g.opset_imports] + [
        d for d in g.opset_imports if d not in order
    ]
    for d in domains:
        m.opset_import.append(helper.make_opsetid(d, g.opset_imports[d]))
    if g.producer_name:
        m.producer_name = g.producer_name
    if g.producer_version:
        m.producer_version = g.producer_version
    if g.model_domain:
        m.domain = g.model_domain
    if g.model_version:
        m.model_version = g.model_version
    if g.model_doc_string:
        m.doc_string = g.model_doc_string
    for k, val in g.metadata_props:
        p = m.metadata_props.add()
        p.key, p.value = k, val
    for field in _MODEL_EXTRAS:
        items = g.extras.get(field)
        if items:
            getattr(m, field).extend(items)
    return m


def to_onnx(g: Graph) -> onnx.ModelProto:
    """A complete ``ModelProto`` for ``g`` (weights inline).

    For large models prefer :func:`netmorph.save`, which streams weights to disk without
    building this in-memory copy.
    """
    m = model_shell(g)
    m.graph.CopyFrom(graph_proto_without_initializers(g))
    m.graph.initializer.extend(v.const.to_proto(v.name) for v in g.parameters)
    return m
