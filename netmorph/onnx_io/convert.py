"""ONNX ``ModelProto`` ⇄ IR ``Graph``, lossless for what the IR does not interpret."""

from __future__ import annotations

import onnx
from onnx import helper

from ..errors import NetmorphError
from ..ir.graph import Graph, IRError, Node, Value
from ..ir.parameter import Parameter
from ..ir.types import TensorType


class OnnxFormatError(NetmorphError):
    """The ONNX model cannot be taken in (corrupt, unsupported construct, unsafe)."""


# Model fields the IR keeps verbatim (copied back on export).
_MODEL_EXTRAS = ("functions", "training_info", "configuration")
_GRAPH_EXTRAS = ("quantization_annotation", "metadata_props")


def _set_type(v: Value, tp: onnx.TypeProto) -> None:
    tt = TensorType.from_type_proto(tp)
    if tt is not None:
        v.type = tt
    else:
        v.type_proto = tp


def from_onnx(model: onnx.ModelProto) -> Graph:
    """Build an IR graph from ``model`` without copying its weights.

    Initializers keep their ``TensorProto`` (the graph keeps a reference to ``model``'s
    tensors; do not mutate ``model`` afterwards). Raises :class:`OnnxFormatError` for sparse
    initializers and for graphs that are not valid SSA.
    """
    if not isinstance(model, onnx.ModelProto):
        raise TypeError(f"expected onnx.ModelProto, got {type(model).__name__}")
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
    for vi in gp.input:
        if vi.name in init_names:
            continue  # an initializer listed as input (IR < 4 style); handled below
        v = g._new_value(vi.name, None)
        _set_type(v, vi.type)
        v.doc_string = vi.doc_string
        g.inputs.append(v)
    inputs_with_init = {vi.name: vi for vi in gp.input if vi.name in init_names}
    for t in gp.initializer:
        v = g._new_value(t.name, None)
        v.const = Parameter(proto=t)
        v.type = v.const.type
        g._params.append(v)
    # Graph inputs that are also initializers stay inputs, in their original order.
    if inputs_with_init:
        g.inputs = []
        for vi in gp.input:
            v = g.value(vi.name)
            if vi.name in inputs_with_init:
                v.doc_string = vi.doc_string
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
        if g.has_value(vi.name):
            v = g.value(vi.name)
            _set_type(v, vi.type)
            v.doc_string = vi.doc_string
        else:
            g.extras.setdefault("orphan_value_info", []).append(vi)
    for vi in gp.output:
        if not g.has_value(vi.name):
            raise OnnxFormatError(f"graph output {vi.name!r} is not produced by anything")
        v = g.value(vi.name)
        if vi.type.WhichOneof("value") is not None:
            _set_type(v, vi.type)
        v.doc_string = vi.doc_string or v.doc_string
        g.outputs.append(v)
    try:
        g.check()
    except IRError as e:
        raise OnnxFormatError(str(e)) from None
    return g


def _value_info(v: Value) -> onnx.ValueInfoProto:
    vi = onnx.ValueInfoProto()
    vi.name = v.name
    if v.type is not None:
        vi.type.CopyFrom(v.type.to_type_proto())
    elif v.type_proto is not None:
        vi.type.CopyFrom(v.type_proto)
    if v.doc_string:
        vi.doc_string = v.doc_string
    return vi


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
    gp.output.extend(_value_info(v) for v in g.outputs)
    interface = {id(v) for v in g.inputs} | {id(v) for v in g.outputs}
    for n in g.nodes:
        for o in n.outputs:
            if id(o) not in interface and o.name not in omitted and (
                o.type is not None or o.type_proto is not None
            ):
                gp.value_info.append(_value_info(o))
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
