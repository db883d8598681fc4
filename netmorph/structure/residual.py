"""Residual units, found in any graph: ``out = Add(branch(x), shortcut(x))``.

A residual unit is a single-entry region: an entry activation ``x`` that forks, a *shortcut*
(a short chain of one-input nodes from ``x``: nothing (identity), a scalar ``Mul`` (``r·Id``),
a projection conv / linear (+ norm), a pooling + conv) and a *branch* (every node between ``x``
and the other operand of the ``Add``). The branch may hold anything: depthwise and grouped
convs, SE gates, decomposed SiLU / GELU / HardSwish, LayerNorm, transposes, attention. Values
the branch reads that do not come from ``x`` (an attention mask, a position table) are *side
inputs*; in a CNN there are none. No branch value is read outside the unit (single exit).

The finder is generic on purpose: CNN stages (:mod:`.stages`) and pre-LN transformer layers
(attention and MLP: two residual units on the residual stream) use the same matcher.

>>> units = find_residual_units(graph)
>>> [u.describe() for u in units]

Cost: one :class:`~netmorph.structure.activations.ActivationView` (linear), then per ``Add`` a
walk over its own branch only, so a whole graph costs O(nodes) for well-formed units.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..ir import Graph, Node, Value
from .activations import ActivationView
from .constants import constant_array
from .ops import JOIN_OPS, LAYER_OPS, PRODUCER_OPS, TRANSPARENT_OPS

PROJECTION_OPS = PRODUCER_OPS
MAX_SHORTCUT = 6


@dataclass
class ResidualUnit:
    """One residual join and the region it closes.

    Attributes
    ----------
    add : Node
        The join (an ``Add`` with two activation operands).
    entry : Value
        ``x``, the value both paths start from.
    branch : list of Node
        The branch's nodes in graph order (``branch_output`` is the last one's output).
    branch_output : Value
        The ``Add`` operand computed by the branch.
    shortcut : list of Node
        The shortcut's nodes, first to last (empty for the identity).
    shortcut_kind : str
        ``"identity"``, ``"scaled"`` (``r·Id``), ``"projection"`` (holds a conv / linear) or
        ``"other"`` (e.g. pooling only).
    residual_ratio : float or None
        ``r`` of an ``r·Id`` shortcut, ``1.0`` for the identity, else ``None``.
    side_inputs : list of Value
        Activations read by the branch that do not come from ``entry`` (masks …).
    """

    add: Node
    entry: Value
    branch: list[Node]
    branch_output: Value
    shortcut: list[Node] = field(default_factory=list)
    shortcut_kind: str = "identity"
    residual_ratio: float | None = 1.0
    side_inputs: list[Value] = field(default_factory=list)
    terms: list[Value] = field(default_factory=list)
    """Every value summed with the shortcut when the join is a sum of several branches
    (``x + attn(LN(x)) + mlp(LN(x))``: a parallel transformer layer); empty for one branch."""

    @property
    def branch_outputs(self) -> list[Value]:
        """The values that must be zero for the unit to be the identity (one per summed branch)."""
        return list(self.terms) or [self.branch_output]

    @property
    def name(self) -> str:
        return self.add.name

    @property
    def output(self) -> Value:
        return self.add.outputs[0]

    @property
    def nodes(self) -> list[Node]:
        """Branch, shortcut and join."""
        return [*self.branch, *self.shortcut, self.add]

    def ops(self) -> list[str]:
        return [n.op_type for n in self.branch]

    def describe(self) -> str:
        """``add_name: x -> [Conv BatchNormalization Relu ...] + identity``."""
        short = self.shortcut_kind if self.shortcut_kind != "scaled" else f"{self.residual_ratio:g}·Id"
        side = f", side inputs {[v.name for v in self.side_inputs]}" if self.side_inputs else ""
        return (f"{self.add.name}: {self.entry.name} -> {len(self.branch)}-node branch "
                f"({'-'.join(_short_ops(self.branch))}) + {short}{side}")

    def to_dict(self) -> dict:
        return {
            "add": self.add.name, "entry": self.entry.name, "output": self.output.name,
            "branch": [n.name for n in self.branch], "shortcut": [n.name for n in self.shortcut],
            "shortcut_kind": self.shortcut_kind, "residual_ratio": self.residual_ratio,
            "side_inputs": [v.name for v in self.side_inputs],
        }


def _short_ops(nodes: list[Node], limit: int = 12) -> list[str]:
    ops = [n.op_type for n in nodes]
    return ops if len(ops) <= limit else [*ops[: limit - 2], "…", ops[-1]]


def find_residual_units(graph: Graph, view: ActivationView | None = None) -> list[ResidualUnit]:
    """Every residual unit of ``graph``, in graph order of their joins.

    ``Add`` nodes that are not residual joins (a bias add, ``x + x³`` inside a GELU, a join of
    two unrelated paths) are skipped; :func:`match_residual` says why for one node.
    """
    view = view or ActivationView(graph)
    out = []
    for n in view.nodes:
        if n.op_type in JOIN_OPS:
            m = match_residual(n, view)
            if isinstance(m, ResidualUnit):
                out.append(m)
    return out


def match_residual(add: Node, view: ActivationView, *, entry: Value | None = None) -> ResidualUnit | str:
    """The :class:`ResidualUnit` closed by ``add``, or a sentence saying why it is none.

    Without ``entry`` the fork is found (CNN units: either operand may be the shortcut). With
    ``entry`` (a residual stream: a transformer layer), the shortcut is the identity from
    ``entry``, and ``add`` may close a sum of several branches (parallel attention + MLP,
    ``(x + a) + m`` or ``x + (a + m)``); every reading of a transformer layer is one call:

    - pre-LN ``x + f(LN(x))``: ``match_residual(add, view, entry=x)``, the branch opens with the norm;
    - post-LN ``LN(x + f(x))``: the same call; the norm is the one reader of ``unit.output``;
    - parallel: the same call; ``unit.terms`` holds the attention and MLP outputs.
    """
    if entry is not None:
        return _match_stream(add, view, entry)
    ins = view.inputs(add)
    if add.op_type not in JOIN_OPS or len(ins) != 2 or ins[0] is ins[1]:
        return f"{add.name!r} ({add.op_type}) is not an Add of two different activations"
    tried = []
    for i in (0, 1):
        chain, x = _shortcut_chain(ins[i], view)
        if x is None:
            continue
        other = ins[1 - i]
        branch = _branch(x, other, view)
        if isinstance(branch, str):
            tried.append(branch)
            continue
        nodes, side = branch
        tried.append((chain, x, other, nodes, side))
    cands = [t for t in tried if not isinstance(t, str)]
    if not cands:
        reasons = "; ".join(t for t in tried if isinstance(t, str))
        return (f"{add.name!r}: neither operand is a short chain from a value the other depends on"
                + (f" ({reasons})" if reasons else ""))
    # both operands may be chains from the same fork (conv-bn vs conv-bn-relu-conv-bn): the
    # lighter one is the shortcut
    chain, x, other, nodes, side = min(cands, key=lambda t: _weight(t[0]))
    if not any(n.op_type in LAYER_OPS for n in nodes):
        return f"{add.name!r}: its branch from {x.name!r} holds no layer (conv, linear, norm)"
    escape = _escaping(nodes, other, add, view)
    if escape is not None:
        return escape
    kind, r = _shortcut_kind(chain, view)
    nodes.sort(key=lambda n: view.position[id(n)])
    return ResidualUnit(add, x, nodes, other, list(reversed(chain)), kind, r, side)


def _match_stream(add: Node, view: ActivationView, x: Value) -> ResidualUnit | str:
    """``add`` as ``x + Σ branch_i(x)`` (a sum of Adds whose inner sums are read only inside it)."""
    if add.op_type not in JOIN_OPS:
        return f"{add.name!r} ({add.op_type}) is not an Add"
    terms: list[Value] = []
    sums: list[Node] = []
    stack = [add]
    while stack:
        n = stack.pop()
        sums.append(n)
        ins = view.inputs(n)
        if len(ins) != 2:
            return f"{n.name!r} is not an Add of two activations"
        for v in ins:
            p = v.producer
            if v is not x and p is not None and p.op_type in JOIN_OPS and len(view.inputs(p)) == 2 \
                    and view.readers(v) == [n] and not v.is_graph_output:
                stack.append(p)
            else:
                terms.append(v)
    if sum(v is x for v in terms) != 1:
        return f"{add.name!r}: {x.name!r} is not one term of the sum it closes"
    terms = [v for v in terms if v is not x]
    nodes: dict[int, Node] = {id(n): n for n in sums[1:]}
    side: list[Value] = []
    for t in terms:
        b = _branch(x, t, view)
        if isinstance(b, str):
            return f"{add.name!r}: {b}"
        nodes.update((id(n), n) for n in b[0])
        side += [v for v in b[1] if all(v is not s for s in side)]
    branch = sorted(nodes.values(), key=lambda n: view.position[id(n)])
    if not any(n.op_type in LAYER_OPS for n in branch):
        return f"{add.name!r}: its branch from {x.name!r} holds no layer (conv, linear, norm)"
    ids = {id(n) for n in branch} | {id(add)}
    for n in branch:
        for o in n.outputs:
            if o.is_graph_output or any(id(r) not in ids for r in view.readers(o)):
                return f"{add.name!r}: value {o.name!r} of its branch is read outside the unit"
    unit = ResidualUnit(add, x, branch, terms[0], [], "identity", 1.0, side)
    if len(terms) > 1:
        unit.terms = terms
    return unit


def _weight(chain: list[Node]) -> tuple[int, int, int]:
    """Layers, then the largest kernel, then nodes: the lighter side of a fork is the shortcut."""
    kernel = max((int(np.prod(n.attr("kernel_shape") or [1])) for n in chain if n.op_type == "Conv"),
                 default=0)
    return (sum(n.op_type in PROJECTION_OPS for n in chain), kernel, len(chain))


def _shortcut_chain(v: Value, view: ActivationView) -> tuple[list[Node], Value | None]:
    """Walk back from ``v`` over one-input nodes to a fork; ``(nodes last-first, fork)``.

    ``fork`` is ``None`` when the walk meets a node with several activation inputs first, or
    runs longer than a shortcut does.
    """
    chain: list[Node] = []
    while True:
        if len(view.readers(v)) > 1 or v.producer is None:
            return chain, v
        p = v.producer
        ins = view.inputs(p)
        if len(ins) != 1 or len(chain) >= MAX_SHORTCUT:
            return chain, None
        chain.append(p)
        v = ins[0]


def _branch(x: Value, out: Value, view: ActivationView) -> tuple[list[Node], list[Value]] | str:
    """Nodes between ``x`` and ``out`` (backwards search stopping at ``x``), and side inputs."""
    seen: dict[int, Node] = {}
    stack = [out]
    side: list[Value] = []
    side_ids: set[int] = set()
    reached = False
    while stack:
        v = stack.pop()
        if v is x:
            reached = True
            continue
        p = v.producer
        if p is None:
            if id(v) not in side_ids:
                side_ids.add(id(v))
                side.append(v)
            continue
        if id(p) in seen:
            continue
        seen[id(p)] = p
        stack.extend(view.inputs(p))
    if not reached:
        return f"{out.name!r} does not depend on {x.name!r}"
    # nodes reachable from x inside the searched set form the branch; the rest compute side inputs
    inside: set[int] = set()
    frontier = [x]
    while frontier:
        v = frontier.pop()
        for r in view.readers(v):
            if id(r) in seen and id(r) not in inside:
                inside.add(id(r))
                frontier.extend(o for o in r.outputs)
    nodes = [seen[i] for i in inside]
    for n in nodes:
        for v in view.inputs(n):
            p = v.producer
            if v is not x and (p is None or id(p) not in inside) and id(v) not in side_ids:
                side_ids.add(id(v))
                side.append(v)
    side = [v for v in side if v.producer is None or id(v.producer) not in inside]
    return nodes, side


def _escaping(nodes: list[Node], out: Value, add: Node, view: ActivationView) -> str | None:
    ids = {id(n) for n in nodes}
    for n in nodes:
        for o in n.outputs:
            for r in view.readers(o):
                if id(r) not in ids and not (o is out and r is add):
                    return (f"{add.name!r}: value {o.name!r} of its branch is also read by {r.name!r} "
                            f"({r.op_type}) outside the unit")
            if o.is_graph_output:
                return f"{add.name!r}: value {o.name!r} of its branch is a graph output"
    return None


def _shortcut_kind(chain: list[Node], view: ActivationView) -> tuple[str, float | None]:
    core = [n for n in chain if n.op_type not in TRANSPARENT_OPS]
    if not core:
        return "identity", 1.0
    if len(core) == 1 and core[0].op_type == "Mul":
        consts = [v for v in core[0].inputs if v is not None and not view.is_activation(v)]
        arr = constant_array(consts[0], transpose=False, cast=True) if len(consts) == 1 else None
        if arr is not None and arr.size == 1:
            val = arr.reshape(())
            return "scaled", float(str(val)) if val.dtype == np.float32 else float(val)
    if any(n.op_type in PROJECTION_OPS for n in core):
        return "projection", None
    return "other", None
