"""A model at a glance: interface, op counts, parameters, opsets (for ``netmorph inspect``)."""

from __future__ import annotations

from collections import Counter
from typing import Any

from ..ir import Graph, TensorType


def _type_dict(t: TensorType | None) -> dict[str, Any]:
    if t is None:
        return {"type": "non-tensor", "elem_type": None, "shape": None}
    shape = None if t.shape is None else list(t.shape)
    return {"type": repr(t), "elem_type": repr(t).split("[")[0], "shape": shape}


def op_key(domain: str, op_type: str) -> str:
    """``Conv`` for the default ONNX domain, ``com.microsoft.FusedConv`` otherwise."""
    return op_type if domain in ("", "ai.onnx") else f"{domain}.{op_type}"


def describe_model(graph: Graph) -> dict[str, Any]:
    """A JSON-ready description of ``graph``.

    Keys: ``name``, ``ir_version``, ``producer``, ``opset`` (domain -> version, the default
    domain as ``"ai.onnx"``), ``inputs`` / ``outputs`` (name, type, elem_type, shape; graph
    inputs that are initializers are left out), ``nodes`` (count), ``ops`` (op -> count,
    most frequent first), ``parameters`` (number of scalars in initializers),
    ``parameter_tensors``, ``parameter_bytes``.
    """
    ops = Counter(op_key(n.domain, n.op_type) for n in graph.nodes)
    producer = " ".join(p for p in (graph.producer_name, graph.producer_version) if p)
    return {
        "name": graph.name,
        "ir_version": graph.ir_version,
        "producer": producer,
        "opset": {(d or "ai.onnx"): v for d, v in graph.opset_imports.items()},
        "inputs": [{"name": v.name, **_type_dict(v.type)} for v in graph.inputs if v.const is None],
        "outputs": [{"name": v.name, **_type_dict(v.type)} for v in graph.outputs],
        "nodes": len(graph.nodes),
        "ops": dict(sorted(ops.items(), key=lambda kv: (-kv[1], kv[0]))),
        "parameters": graph.parameter_count(),
        "parameter_tensors": len(graph.parameters),
        "parameter_bytes": sum(v.const.nbytes for v in graph.parameters),
    }


def _bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError  # pragma: no cover


def format_description(d: dict[str, Any]) -> str:
    """The text ``netmorph inspect`` prints for a :func:`describe_model` dict."""
    opset = ", ".join(f"{k} {v}" for k, v in d["opset"].items())
    lines = [f"model: {d['name']} (ir {d['ir_version']}, opset {opset}"
             + (f", producer {d['producer']})" if d["producer"] else ")")]
    for kind in ("inputs", "outputs"):
        lines.append(f"{kind}:")
        width = max((len(x["name"]) for x in d[kind]), default=0)
        lines += [f"  {x['name'].ljust(width)}  {x['type']}" for x in d[kind]]
    lines.append(f"ops ({d['nodes']} nodes): " + ", ".join(f"{k} {v}" for k, v in d["ops"].items()))
    size = _bytes(d["parameter_bytes"])
    lines.append(f"parameters: {d['parameters']:,} in {d['parameter_tensors']} tensors ({size})")
    return "\n".join(lines)
