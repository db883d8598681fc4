"""The IR: ``Graph`` of ``Node`` s connected by SSA ``Value`` s.

Links are kept in sync both ways: a value knows its producer and its uses, a node knows its
inputs and outputs, so a rewrite is a couple of calls, not index bookkeeping. Names are
unique by construction (the graph is the name authority). Anything the IR does not model is
kept as the original ONNX protos and written back untouched.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import networkx as nx
import numpy as np
import onnx
from onnx import helper

from ..errors import NetmorphError
from .parameter import Parameter
from .types import TensorType


class IRError(NetmorphError):
    """A graph is malformed or a rewrite would make it so."""


class Value:
    """An SSA value: produced once (by a node, or a graph input / parameter), used many times."""

    __slots__ = (
        "_name",
        "graph",
        "type",
        "type_proto",
        "producer",
        "output_index",
        "_uses",
        "const",
        "doc_string",
        "metadata_props",
    )

    def __init__(self, graph: Graph, name: str, type: TensorType | None = None):
        self.graph = graph
        self._name = name
        self.type = type
        self.type_proto: onnx.TypeProto | None = None  # non-tensor types, kept verbatim
        self.producer: Node | None = None
        self.output_index = -1
        self._uses: list[tuple[Node, int]] = []
        self.const: Parameter | None = None
        self.doc_string = ""
        self.metadata_props: list[tuple[str, str]] = []

    @property
    def name(self) -> str:
        return self._name

    def uses(self) -> list[tuple[Node, int]]:
        """``(node, input_index)`` pairs that read this value, in graph order of insertion."""
        return list(self._uses)

    def consumers(self) -> list[Node]:
        seen: dict[int, Node] = {}
        for n, _ in self._uses:
            seen.setdefault(id(n), n)
        return list(seen.values())

    @property
    def is_graph_input(self) -> bool:
        return any(v is self for v in self.graph.inputs)

    @property
    def is_graph_output(self) -> bool:
        return any(v is self for v in self.graph.outputs)

    @property
    def is_parameter(self) -> bool:
        return self.const is not None

    def replace_all_uses_with(self, other: Value, *, include_graph_outputs: bool = False) -> None:
        """Make every reader of this value read ``other`` instead.

        A graph output is rerouted only with ``include_graph_outputs=True`` (the graph's
        interface would change otherwise, silently).
        """
        if other is self:
            return
        for node, idx in list(self._uses):
            node.set_input(idx, other)
        if include_graph_outputs:
            g = self.graph
            for i, v in enumerate(g.outputs):
                if v is self:
                    g.outputs[i] = other

    def __repr__(self) -> str:
        return f"%{self._name}: {self.type}"


class Node:
    """One operator application. Attributes are kept as ONNX ``AttributeProto`` s."""

    __slots__ = (
        "graph",
        "name",
        "op_type",
        "domain",
        "overload",
        "_inputs",
        "outputs",
        "attributes",
        "doc_string",
        "metadata_props",
    )

    def __init__(
        self,
        graph: Graph,
        op_type: str,
        name: str,
        *,
        domain: str = "",
        overload: str = "",
    ):
        self.graph = graph
        self.op_type = op_type
        self.name = name
        self.domain = domain
        self.overload = overload
        self._inputs: list[Value | None] = []
        self.outputs: list[Value] = []
        self.attributes: dict[str, onnx.AttributeProto] = {}
        self.doc_string = ""
        self.metadata_props: list[tuple[str, str]] = []

    # -- inputs -------------------------------------------------------------------------
    @property
    def inputs(self) -> tuple[Value | None, ...]:
        return tuple(self._inputs)

    def set_input(self, index: int, value: Value | None) -> None:
        old = self._inputs[index]
        if old is not None:
            old._uses.remove((self, index))
        self._inputs[index] = value
        if value is not None:
            value._uses.append((self, index))

    def append_input(self, value: Value | None) -> None:
        self._inputs.append(None)
        self.set_input(len(self._inputs) - 1, value)

    def _detach_inputs(self) -> None:
        for i in range(len(self._inputs)):
            self.set_input(i, None)

    # -- attributes ---------------------------------------------------------------------
    def attr(self, name: str, default: Any = None) -> Any:
        """The Python value of attribute ``name`` (``default`` when absent)."""
        a = self.attributes.get(name)
        return default if a is None else helper.get_attribute_value(a)

    def set_attr(self, name: str, value: Any) -> None:
        self.attributes[name] = helper.make_attribute(name, value)

    # -- convenience --------------------------------------------------------------------
    @property
    def output(self) -> Value:
        if len(self.outputs) != 1:
            raise IRError(f"node {self.name!r} ({self.op_type}) has {len(self.outputs)} outputs")
        return self.outputs[0]

    @property
    def has_subgraphs(self) -> bool:
        """True when an attribute holds a graph (``If`` branches, ``Loop`` / ``Scan`` bodies)."""
        return any(a.type in _GRAPH_ATTRS for a in self.attributes.values())

    def captured_names(self) -> set[str]:
        """Names of outer values that this node's subgraphs read (implicit inputs).

        ONNX subgraphs may read any value of the enclosing graph by name; such reads are not
        in :attr:`inputs`. The IR honours them in :meth:`Graph.check`, :meth:`Graph.toposort`,
        :meth:`Graph.remove_node` and :meth:`Graph.rename_value`.
        """
        free: set[str] = set()
        for a in self.attributes.values():
            for sub in attribute_subgraphs(a):
                free |= _free_names(sub, frozenset())
        return free

    def param(self, index: int) -> np.ndarray | None:
        """The array of input ``index`` when it is a parameter, else ``None``."""
        if index >= len(self._inputs) or self._inputs[index] is None:
            return None
        c = self._inputs[index].const
        return None if c is None else c.array

    def __repr__(self) -> str:
        ins = ", ".join("_" if v is None else f"%{v.name}" for v in self._inputs)
        outs = ", ".join(f"%{v.name}" for v in self.outputs)
        return f"{outs} = {self.op_type}[{self.name}]({ins})"


class Graph:
    """A computation graph plus the model-level data around it (opsets, metadata).

    ``nodes`` is kept in topological order by the rewrite API. Everything ONNX carries that
    the IR does not interpret (functions, training info, metadata, unknown value_info …) is
    held in ``extras`` and written back untouched.
    """

    def __init__(self, name: str = "netmorph", opset_imports: Mapping[str, int] | None = None):
        self.name = name
        self.doc_string = ""
        self.inputs: list[Value] = []
        self.outputs: list[Value] = []
        self.nodes: list[Node] = []
        self.opset_imports: dict[str, int] = dict(opset_imports or {"": 17})
        self._values: dict[str, Value] = {}
        self._node_names: set[str] = set()
        self._reserved_names: set[str] = set()  # defined inside subgraphs: never reused
        self._params: list[Value] = []  # initializers, in file order
        self.extras: dict[str, Any] = {}
        self.ir_version: int = onnx.IR_VERSION
        self.producer_name = "netmorph"
        self.producer_version = ""
        self.model_domain = ""
        self.model_version = 0
        self.model_doc_string = ""
        self.metadata_props: list[tuple[str, str]] = []

    # -- name authority -----------------------------------------------------------------
    def unique_value_name(self, hint: str) -> str:
        """``hint``, or ``hint.1``, ``hint.2`` … : the first name no value (here or inside a
        subgraph) has."""
        taken = self._values
        reserved = self._reserved_names
        if hint and hint not in taken and hint not in reserved:
            return hint
        base = hint or "v"
        for i in itertools.count(1):
            cand = f"{base}.{i}"
            if cand not in taken and cand not in reserved:
                return cand
        raise AssertionError  # pragma: no cover

    def unique_node_name(self, hint: str) -> str:
        if hint and hint not in self._node_names:
            return hint
        base = hint or "node"
        for i in itertools.count(1):
            cand = f"{base}.{i}"
            if cand not in self._node_names:
                return cand
        raise AssertionError  # pragma: no cover

    # -- lookups ------------------------------------------------------------------------
    def value(self, name: str) -> Value:
        try:
            return self._values[name]
        except KeyError:
            raise KeyError(f"no value named {name!r} in graph {self.name!r}") from None

    def has_value(self, name: str) -> bool:
        return name in self._values

    def values(self) -> Iterator[Value]:
        return iter(self._values.values())

    def node(self, name: str) -> Node:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(f"no node named {name!r} in graph {self.name!r}")

    def find_nodes(self, op_type: str | None = None) -> list[Node]:
        return [n for n in self.nodes if op_type is None or n.op_type == op_type]

    @property
    def parameters(self) -> list[Value]:
        """Values that hold constants (ONNX initializers), in file order."""
        return list(self._params)

    def parameter_count(self) -> int:
        return sum(int(np.prod(v.const.shape, dtype=np.int64)) for v in self._params)

    # -- construction -------------------------------------------------------------------
    def _new_value(self, name: str, type: TensorType | None) -> Value:
        if name in self._values:
            raise IRError(f"value name {name!r} is already used in graph {self.name!r}")
        v = Value(self, name, type)
        self._values[name] = v
        return v

    def add_input(self, name: str, type: TensorType) -> Value:
        v = self._new_value(name, type)
        self.inputs.append(v)
        return v

    def add_parameter(self, name_hint: str, array: np.ndarray | Parameter) -> Value:
        """Add a constant tensor; the name is ``name_hint`` made unique."""
        param = array if isinstance(array, Parameter) else Parameter(array)
        v = self._new_value(self.unique_value_name(name_hint), param.type)
        v.const = param
        self._params.append(v)
        return v

    def set_parameter(self, value: Value, array: np.ndarray | Parameter) -> None:
        """Give an existing parameter new contents (same name; the type may change)."""
        if value.const is None:
            raise IRError(f"value {value.name!r} is not a parameter")
        param = array if isinstance(array, Parameter) else Parameter(array)
        value.const = param
        value.type = param.type

    def create_node(
        self,
        op_type: str,
        inputs: Sequence[Value | None],
        attributes: Mapping[str, Any] | None = None,
        *,
        name: str = "",
        num_outputs: int = 1,
        output_names: Sequence[str] | None = None,
        output_types: Sequence[TensorType | None] | None = None,
        domain: str = "",
    ) -> Node:
        """A new node, not yet placed in ``nodes``: place it with ``insert_before/after``."""
        node = Node(self, op_type, self.unique_node_name(name or op_type.lower()), domain=domain)
        self._node_names.add(node.name)
        for v in inputs:
            if v is not None and v.graph is not self:
                raise IRError(f"value {v.name!r} belongs to another graph")
            node.append_input(v)
        for k, a in (attributes or {}).items():
            node.attributes[k] = a if isinstance(a, onnx.AttributeProto) else helper.make_attribute(k, a)
        if output_names is not None:
            num_outputs = len(output_names)
        for i in range(num_outputs):
            hint = output_names[i] if output_names else (
                node.name if num_outputs == 1 else f"{node.name}.out{i}"
            )
            t = output_types[i] if output_types else None
            v = self._new_value(self.unique_value_name(hint), t)
            v.producer, v.output_index = node, i
            node.outputs.append(v)
        return node

    def _index(self, node: Node) -> int:
        for i, n in enumerate(self.nodes):
            if n is node:
                return i
        raise IRError(f"node {node.name!r} is not placed in graph {self.name!r}")

    def insert_before(self, anchor: Node | None, *nodes: Node) -> None:
        """Place ``nodes`` (in order) before ``anchor`` (``None``: at the end)."""
        i = len(self.nodes) if anchor is None else self._index(anchor)
        self.nodes[i:i] = list(nodes)

    def insert_after(self, anchor: Node | None, *nodes: Node) -> None:
        """Place ``nodes`` (in order) after ``anchor`` (``None``: at the start)."""
        i = 0 if anchor is None else self._index(anchor) + 1
        self.nodes[i:i] = list(nodes)

    def insert_on(
        self,
        value: Value,
        op_type: str,
        extra_inputs: Sequence[Value | None] = (),
        attributes: Mapping[str, Any] | None = None,
        *,
        name: str = "",
        output_type: TensorType | None = None,
        domain: str = "",
        reroute_graph_output: bool = True,
    ) -> Node:
        """Insert a one-output node that reads ``value`` and takes over all its readers.

        ``value -> X`` becomes ``value -> new -> X``. The new output gets ``value``'s type
        unless ``output_type`` is given. If ``value`` is a graph output the new value becomes
        the graph output in its place (keeping the interface's name is the caller's choice,
        see :meth:`rename_value`).
        """
        uses = value.uses()
        node = self.create_node(
            op_type,
            [value, *extra_inputs],
            attributes,
            name=name,
            output_types=[output_type if output_type is not None else value.type],
            domain=domain,
        )
        for reader, idx in uses:
            reader.set_input(idx, node.output)
        if reroute_graph_output:
            for i, v in enumerate(self.outputs):
                if v is value:
                    self.outputs[i] = node.output
        anchor = value.producer
        if anchor is None:
            self.insert_after(None, node)
        else:
            self.insert_after(anchor, node)
        return node

    def replace_node(self, old: Node, new_nodes: Sequence[Node], new_outputs: Sequence[Value]) -> None:
        """Replace ``old`` by ``new_nodes`` (already created, in topological order).

        Every reader of ``old.outputs[i]`` reads ``new_outputs[i]`` afterwards, graph outputs
        included; then ``old`` is removed.
        """
        if len(new_outputs) != len(old.outputs):
            raise IRError(
                f"replacing {old.name!r}: {len(old.outputs)} outputs, {len(new_outputs)} given"
            )
        self.insert_before(old, *new_nodes)
        for o, n in zip(old.outputs, new_outputs, strict=True):
            o.replace_all_uses_with(n, include_graph_outputs=True)
        self.remove_node(old)

    def remove_node(self, node: Node) -> None:
        """Remove a node whose outputs nobody reads any more."""
        captured = self._captured_by()
        for o in node.outputs:
            if o._uses or o.is_graph_output:
                users = ", ".join(n.name for n, _ in o._uses) or "the graph outputs"
                raise IRError(f"cannot remove {node.name!r}: its output {o.name!r} is read by {users}")
            if o.name in captured:
                raise IRError(
                    f"cannot remove {node.name!r}: its output {o.name!r} is read inside the "
                    f"subgraph of {captured[o.name]!r}"
                )
        del self.nodes[self._index(node)]
        node._detach_inputs()
        for o in node.outputs:
            del self._values[o.name]
        self._node_names.discard(node.name)

    def remove_unused_parameters(self) -> int:
        """Drop parameters nobody reads (subgraphs included); returns how many were dropped."""
        keep, dropped = [], 0
        captured = self._captured_by()
        for v in self._params:
            if v._uses or v.is_graph_output or v.is_graph_input or v.name in captured:
                keep.append(v)
            else:
                del self._values[v.name]
                dropped += 1
        self._params = keep
        return dropped

    def rename_value(self, value: Value, new_name: str) -> None:
        if new_name == value.name:
            return
        if new_name in self._values or new_name in self._reserved_names:
            raise IRError(f"value name {new_name!r} is already used")
        captured = self._captured_by()
        if value.name in captured:
            raise IRError(
                f"cannot rename {value.name!r}: the subgraph of {captured[value.name]!r} reads it by name"
            )
        del self._values[value.name]
        value._name = new_name
        self._values[new_name] = value

    def _captured_by(self) -> dict[str, str]:
        """Outer value name -> name of a node whose subgraph reads it."""
        out: dict[str, str] = {}
        for n in self.nodes:
            if n.has_subgraphs:
                for name in n.captured_names():
                    out.setdefault(name, n.name)
        return out

    # -- whole-graph operations ---------------------------------------------------------
    def clone(self) -> Graph:
        """A structural copy that shares the (read-only) parameters and attribute protos."""
        g = Graph(self.name, self.opset_imports)
        for k in (
            "doc_string", "ir_version", "producer_name", "producer_version", "model_domain",
            "model_version", "model_doc_string",
        ):
            setattr(g, k, getattr(self, k))
        g.metadata_props = list(self.metadata_props)
        g.extras = dict(self.extras)
        g._node_names = set(self._node_names)
        g._reserved_names = set(self._reserved_names)
        vmap: dict[int, Value] = {}

        def copy_value(v: Value) -> Value:
            nv = g._new_value(v.name, v.type)
            nv.type_proto, nv.const = v.type_proto, v.const
            nv.doc_string, nv.metadata_props = v.doc_string, list(v.metadata_props)
            vmap[id(v)] = nv
            return nv

        for v in self._values.values():
            if v.producer is None:
                copy_value(v)
        g.inputs = [vmap[id(v)] for v in self.inputs]
        g._params = [vmap[id(v)] for v in self._params]
        for n in self.nodes:
            nn = Node(g, n.op_type, n.name, domain=n.domain, overload=n.overload)
            nn.attributes = dict(n.attributes)
            nn.doc_string, nn.metadata_props = n.doc_string, list(n.metadata_props)
            for v in n._inputs:
                nn.append_input(None if v is None else vmap[id(v)])
            for i, o in enumerate(n.outputs):
                no = copy_value(o)
                no.producer, no.output_index = nn, i
                nn.outputs.append(no)
            g.nodes.append(nn)
        g.outputs = [vmap[id(v)] for v in self.outputs]
        return g

    def to_networkx(self) -> nx.MultiDiGraph:
        """A networkx view: one vertex per node (keyed by node name), one edge per value use.

        Edge data: ``value`` (the value name). Graph inputs and parameters are not vertices.
        Outer values read inside a node's subgraphs count as uses (see
        :meth:`Node.captured_names`).
        """
        g = nx.MultiDiGraph()
        for n in self.nodes:
            g.add_node(n.name, op_type=n.op_type)
        for n in self.nodes:
            for v in self._reads(n):
                if v.producer is not None:
                    g.add_edge(v.producer.name, n.name, value=v.name)
        return g

    def _reads(self, n: Node) -> list[Value]:
        """The values ``n`` reads: its inputs, then the outer values its subgraphs capture."""
        vals = [v for v in n._inputs if v is not None]
        if n.has_subgraphs:
            vals += [self._values[k] for k in sorted(n.captured_names()) if k in self._values]
        return vals

    def toposort(self) -> None:
        """Reorder ``nodes`` topologically (stable: keeps the current order where it can)."""
        order = {id(n): i for i, n in enumerate(self.nodes)}
        dg = nx.DiGraph()
        for n in self.nodes:
            dg.add_node(id(n))
            for v in self._reads(n):
                if v.producer is not None:
                    dg.add_edge(id(v.producer), id(n))
        try:
            ids = list(nx.lexicographical_topological_sort(dg, key=lambda k: order[k]))
        except nx.NetworkXUnfeasible:
            raise IRError(f"graph {self.name!r} has a cycle") from None
        by_id = {id(n): n for n in self.nodes}
        self.nodes = [by_id[i] for i in ids]

    def check(self) -> None:
        """Raise :class:`IRError` if an invariant is broken.

        Invariants: every value has one producer (SSA) and is registered under its name;
        node names are unique; ``nodes`` is in topological order (so the graph is acyclic);
        no node reads a value that is not a graph input, a parameter or an earlier node's
        output (nor does a subgraph read such a value by name); use lists and input lists
        agree both ways; graph outputs exist; every parameter's type matches its array.
        """
        known: set[int] = set()
        for v in self.inputs:
            if v.producer is not None:
                raise IRError(f"graph input {v.name!r} has a producer")
            known.add(id(v))
        for v in self._params:
            if v.const is None:
                raise IRError(f"parameter {v.name!r} has no data")
            if v.type is not None and v.type.shape != v.const.shape:
                raise IRError(f"parameter {v.name!r}: type {v.type} but data shape {v.const.shape}")
            known.add(id(v))
        names: set[str] = set()
        for n in self.nodes:
            if n.graph is not self:
                raise IRError(f"node {n.name!r} belongs to another graph")
            if n.name and n.name in names and not self.extras.get("duplicate_node_names"):
                raise IRError(f"two nodes are named {n.name!r}")
            names.add(n.name)
            for i, v in enumerate(n._inputs):
                if v is None:
                    continue
                if id(v) not in known:
                    where = "a later node" if v.producer is not None else "nothing"
                    raise IRError(
                        f"node {n.name!r} ({n.op_type}) input {i} {v.name!r} is produced by "
                        f"{where} (not topologically ordered, or dangling)"
                    )
                if (n, i) not in v._uses:
                    raise IRError(f"use list of {v.name!r} misses {n.name!r} input {i}")
            if n.has_subgraphs:
                for name in sorted(n.captured_names()):
                    v = self._values.get(name)
                    if v is None or id(v) not in known:
                        raise IRError(
                            f"node {n.name!r} ({n.op_type}): its subgraph reads {name!r}, which is "
                            "not defined before it"
                        )
            for i, o in enumerate(n.outputs):
                if o.producer is not n or o.output_index != i:
                    raise IRError(f"output {o.name!r} of {n.name!r} has a wrong producer link")
                if id(o) in known:
                    raise IRError(f"value {o.name!r} is produced twice")
                known.add(id(o))
        for name, v in self._values.items():
            if v.name != name:
                raise IRError(f"value registered as {name!r} is named {v.name!r}")
            for user, idx in v._uses:
                if idx >= len(user._inputs) or user._inputs[idx] is not v:
                    raise IRError(f"stale use of {v.name!r} by {user.name!r}")
            if v.producer is not None and id(v) not in known:
                raise IRError(f"value {v.name!r} is produced by a node not in the graph")
        for v in self.outputs:
            if id(v) not in known:
                raise IRError(f"graph output {v.name!r} is not produced")

    def __repr__(self) -> str:
        return (
            f"Graph({self.name!r}, {len(self.inputs)} inputs, {len(self.nodes)} nodes, "
            f"{len(self._params)} parameters)"
        )

    def pretty(self) -> str:
        lines = [f"graph {self.name} ("]
        lines += [f"  in  {v!r}" for v in self.inputs]
        lines += [f"  {n!r}" for n in self.nodes]
        lines += [f"  out {v!r}" for v in self.outputs]
        return "\n".join(lines + [")"])



_GRAPH_ATTRS = (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)


def attribute_subgraphs(a: onnx.AttributeProto) -> list[onnx.GraphProto]:
    """The graphs an attribute holds (none unless it is a GRAPH / GRAPHS attribute)."""
    if a.type == onnx.AttributeProto.GRAPH:
        return [a.g]
    if a.type == onnx.AttributeProto.GRAPHS:
        return list(a.graphs)
    return []


def _free_names(gp: onnx.GraphProto, bound: frozenset[str]) -> set[str]:
    """Names read inside ``gp`` (nested subgraphs included) that ``gp`` does not define."""
    local = set(bound) | {v.name for v in gp.input} | {t.name for t in gp.initializer}
    local |= {t.values.name for t in gp.sparse_initializer}
    free: set[str] = set()
    for n in gp.node:
        free.update(i for i in n.input if i and i not in local)
        for a in n.attribute:
            for sub in attribute_subgraphs(a):
                free |= _free_names(sub, frozenset(local))
        local.update(o for o in n.output if o)
    return free


def subgraph_defined_names(gp: onnx.GraphProto) -> set[str]:
    """Every name ``gp`` and its nested subgraphs define (inputs, initializers, outputs)."""
    names = {v.name for v in gp.input} | {t.name for t in gp.initializer}
    for n in gp.node:
        names.update(o for o in n.output if o)
        for a in n.attribute:
            for sub in attribute_subgraphs(a):
                names |= subgraph_defined_names(sub)
    return names
