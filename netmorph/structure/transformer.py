"""Transformer recognition: layers as two residual units (attention, MLP) on the residual stream.

The residual stream is the chain of cut values of the data flow (:class:`~netmorph.structure.
dataflow.DataFlow`, whose dominator segments are reused here with any single data input:
token ids or images). A segment closed by ``Add(entry, branch(entry))`` is a residual unit;
its branch holds a ``Softmax`` (attention) or not (MLP). A layer is an attention unit then an
MLP unit, either pre-LN (each branch starts with a LayerNorm of the stream: ``x + f(LN(x))``)
or post-LN (a LayerNorm follows each Add: ``LN(x + f(x))``).

Linear layers are found in every export form: ``MatMul`` by a 2-D weight (+ ``Add`` of a
bias) and ``Gemm`` (either ``transB``). Head counts come from the rank-4 (or rank-3,
batch × heads folded) attention scores, whose shape is probed once in ONNX Runtime on a small
input, because exporters compute the head split at run time.

Each half of a layer is a :class:`Sublayer` around the one residual unit that
:func:`~netmorph.structure.residual.match_residual` reads (the matcher CNN stages and DynamicNet
levels use), on the one data-flow view (``DataFlow(graph, images=False)``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import StructureError
from ..ir import Graph, Node, Value
from .channels import kept_axis
from .dataflow import DataFlow, Segment
from .residual import match_residual

NORM_OPS = {"LayerNormalization", "SimplifiedLayerNormalization", "RMSNormalization"}
"""Normalisation nodes over the last axis (one node each); RMSNorm written out is read by
:func:`rms_norm_at`. (Op-table entry: which ops are norms.)"""
RMS_OPS = {"SimplifiedLayerNormalization", "RMSNormalization"}
ACTIVATION_OPS = {"Sigmoid", "Tanh", "Erf", "Gelu", "Relu", "Softplus", "HardSwish", "HardSigmoid"}
"""Elementwise activations a gated MLP's gate may pass through (op-table entry)."""


@dataclass
class Linear:
    """A linear layer as exported: ``MatMul`` (+ bias ``Add``) or ``Gemm``.

    ``weight`` is the graph parameter; ``in_axis`` / ``out_axis`` its input and output feature
    axes (``MatMul`` and ``Gemm(transB=0)``: 0 / 1; ``Gemm(transB=1)`` and ``MatMul`` by a
    ``Transpose`` of the parameter: 1 / 0). ``output`` is the value after the bias.
    ``weight_node``: the ``Transpose`` reading the parameter when the ``MatMul`` reads it through
    one (a large tied unembedding the exporter did not fold: GPT-2's ``lm_head`` = ``wte``).
    """

    node: Node
    weight: Value
    bias: Value | None
    bias_node: Node | None
    in_axis: int
    out_axis: int
    bias_index: int = 2  # the bias's input index in ``bias_node`` (or in the Gemm)
    weight_node: Node | None = None

    @property
    def weight_site(self) -> tuple[Node, int]:
        """``(node, input index)`` reading the weight parameter."""
        return (self.weight_node, 0) if self.weight_node is not None else (self.node, 1)

    @property
    def bias_site(self) -> tuple[Node, int]:
        """``(node, input index)`` reading the bias."""
        return (self.bias_node or self.node), self.bias_index

    @property
    def output(self) -> Value:
        return (self.bias_node or self.node).outputs[0]

    @property
    def in_features(self) -> int:
        return int(self.weight.const.shape[self.in_axis])

    @property
    def out_features(self) -> int:
        return int(self.weight.const.shape[self.out_axis])

    @property
    def name(self) -> str:
        return self.node.name


@dataclass
class Sublayer:
    """A layer's attention or MLP half: the shared :class:`~netmorph.structure.residual.Sublayer`
    ``Add(entry, branch(entry))`` that :func:`~netmorph.structure.residual.match_residual` reads on
    the residual stream, with what a transformer pass needs to know about its branch."""

    kind: str  # "attention" or "mlp"
    segment: Segment
    add: Node
    norm: Node | None  # the branch's norm of the stream, its last node (pre-LN)
    post_norm: Node | None  # the LayerNorm right after the Add (post-LN)
    linears: list[Linear]
    heads: int | None = None
    head_size: int | None = None
    norm_kind: str | None = None  # "layer" or "rms"
    kv_heads: int | None = None  # attention: K/V heads (grouped-query attention when < heads)
    gated: str | None = None  # MLP: act(gate(x)) * up(x) -> down: "SwiGLU", "GeGLU", "GLU"
    rotary: bool = False  # attention: Q and K rotated by Sin/Cos tables (RoPE)
    repeat_kv: list = field(default_factory=list)  # attention: (Expand, axis) repeating K/V groups
    residual: Any = None  # the shared residual unit (netmorph.structure.residual.Sublayer)
    term_branch: list[Node] | None = None  # parallel layer: this half's part of the unit's branch
    parallel: bool = False  # one of the two terms of a parallel layer's residual unit
    qkv_layout: str | None = None  # fused Q/K/V: "blocks" ([Q | K | V]) or "heads" ([q k v] per head)

    @property
    def entry(self) -> Value:
        return self.segment.entry

    @property
    def branch(self) -> list[Node]:
        return self.residual.branch if self.term_branch is None else self.term_branch

    @property
    def branch_output(self) -> Value:
        return self.branch[-1].outputs[0] if self.term_branch is not None else self.residual.branch_output

    @property
    def output(self) -> Value:
        """The stream value after the unit (after the post-LN norm when there is one)."""
        return (self.post_norm or self.add).outputs[0]

    @property
    def out_proj(self) -> Linear:
        """The branch's last linear layer (attention output projection, MLP down-projection)."""
        return self.linears[-1]

    @property
    def in_projs(self) -> list[Linear]:
        """The linear layers reading the (normalised) stream: Q/K/V, or the MLP's gate and up."""
        return self.linears[:-1]


@dataclass
class TransformerLayer:
    """An attention unit then an MLP unit; ``gate`` holds the ``Sub, Mul, Add`` of a gated layer
    ``h + g ⊙ (layer(h) − h)`` (a post-LN layer inserted by ``deepen``)."""

    index: int
    attention: Sublayer
    mlp: Sublayer
    norm: str  # "pre" or "post"
    gate: tuple[Node, Node, Node] | None = None

    @property
    def input(self) -> Value:
        return self.attention.entry

    @property
    def output(self) -> Value:
        return self.gate[2].outputs[0] if self.gate is not None else self.mlp.output

    @property
    def parallel(self) -> bool:
        """Attention and MLP are the two terms of one residual unit, ``x + attn(·) + mlp(·)``
        (GPT-NeoX / Pythia, Phi, Falcon, GPT-J), both reading the layer's input."""
        return self.attention.parallel

    @property
    def nodes(self) -> list[Node]:
        post = [u.post_norm for u in (self.attention, self.mlp) if u.post_norm is not None]
        mlp = [] if self.parallel else self.mlp.segment.nodes  # a parallel layer is one segment
        return self.attention.segment.nodes + mlp + post + list(self.gate or ())

    @property
    def relaid(self) -> bool:
        """The MLP reads the attention unit's output through channels-last Reshapes (Swin's
        window merge, :func:`relaid_from`), not directly."""
        return not self.parallel and self.mlp.entry is not self.attention.output

    @property
    def up(self) -> Linear:
        """The MLP's up-projection (in a gated MLP the one multiplied by the activated gate)."""
        return self.mlp.linears[1] if self.mlp.gated else self.mlp.linears[0]

    @property
    def gate_proj(self) -> Linear | None:
        """A gated MLP's gate projection (``act(gate(x)) * up(x)``), else ``None``."""
        return self.mlp.linears[0] if self.mlp.gated else None

    @property
    def down(self) -> Linear:
        return self.mlp.linears[-1]


@dataclass
class TransformerStructure:
    """What ``recognise_transformer`` found."""

    layers: list[TransformerLayer]
    norm: str
    hidden: int
    heads: int | None
    head_size: int | None
    mlp: int
    inputs: str  # "tokens" or "images"
    embeddings: list[dict[str, Any]] = field(default_factory=list)
    head: dict[str, Any] | None = None
    flow: DataFlow | None = None
    side_inputs: list[str] = field(default_factory=list)  # other data inputs: attention mask, token types

    family = "transformer"

    @property
    def norm_kind(self) -> str:
        """``"rms"`` (RMSNorm, any encoding) or ``"layer"`` (LayerNorm)."""
        return self.layers[0].attention.norm_kind or "layer"

    @property
    def kv_heads(self) -> int | None:
        """K/V heads of the first layer (``< heads`` under grouped-query attention)."""
        return self.layers[0].attention.kv_heads

    @property
    def gated(self) -> str | None:
        """The gated MLP's kind (``"SwiGLU"``, ``"GeGLU"``, ``"GLU"``) or ``None``."""
        return self.layers[0].mlp.gated

    @property
    def rotary(self) -> bool:
        """Whether the attention rotates Q and K by Sin/Cos tables (RoPE)."""
        return any(lay.attention.rotary for lay in self.layers)

    @property
    def parallel(self) -> bool:
        """Whether the layers are parallel (attention and MLP summed into one residual)."""
        return any(lay.parallel for lay in self.layers)

    @property
    def shared_layers(self) -> list[list[int]]:
        """Groups of layers whose linear layers read the same weights (ALBERT's one shared layer
        applied L times), each group at least two layer indices; empty when no weights are shared.
        The passes give every layer they grow its own new arrays (the sharing is not kept)."""
        owner: dict[int, int] = {}
        groups: dict[int, set[int]] = {}
        for lay in self.layers:
            for lin in lay.attention.linears + lay.mlp.linears:
                w = _param(lin.node.inputs[1]) or lin.weight
                first = owner.setdefault(id(w), lay.index)
                if first != lay.index:
                    groups.setdefault(first, {first}).add(lay.index)
        return [sorted(g) for _, g in sorted(groups.items())]

    @property
    def style(self) -> str | None:
        """A family name when the layer recipe is one: ``"Llama-style"`` (pre-norm RMSNorm, a gated
        MLP, rotary positions), ``"GPT-NeoX-style"`` (parallel attention + MLP), ``"Swin-style"`` (the
        MLP reads the attention through a window merge), else ``None``."""
        if self.parallel:
            return "GPT-NeoX-style"
        if any(lay.relaid for lay in self.layers):
            return "Swin-style"
        if self.norm == "pre" and self.norm_kind == "rms" and self.gated and self.rotary:
            return "Llama-style"
        return None

    def family_line(self) -> str:
        """``Llama-style: 4 layers, RMSNorm, SwiGLU 128→344, 8 heads / 2 KV groups, rotary``."""
        parts = [f"{len(self.layers)} layers", "RMSNorm" if self.norm_kind == "rms" else "LayerNorm",
                 f"{self.gated or 'MLP'} {self.hidden}→{self.mlp}"]
        kv = self.kv_heads
        groups = f" / {kv} KV groups" if kv is not None and kv != self.heads else ""
        parts.append(f"{self.heads} heads{groups}")
        if self.rotary:
            parts.append("rotary")
        if self.shared_layers:
            groups = "; ".join(",".join(map(str, g)) for g in self.shared_layers)
            parts.append(f"shared layer weights ({groups})")
        if self.parallel:
            lay = self.layers[0]
            one = lay.attention.norm is lay.mlp.norm
            parts.append(f"parallel attention+MLP ({'one norm' if one else 'two norms'})")
        return f"{self.style or 'transformer'}: " + ", ".join(parts)

    def summary(self) -> str:
        emb = ", ".join(f"{e['name']} {e['rows']}x{e['dim']}" for e in self.embeddings) or "none"
        h = self.head
        head = "none" if h is None else f"{h['name']} ({h['in']} -> {h['out']})"
        side = f" (side inputs: {', '.join(self.side_inputs)})" if self.side_inputs else ""
        return (f"{self.family_line()}; "
                f"transformer, {len(self.layers)} {'parallel ' if self.parallel else ''}{self.norm}-LN "
                "layers, "
                f"hidden {self.hidden}, "
                f"{self.heads} heads x {self.head_size}, MLP {self.mlp}; {self.inputs} in{side}; "
                f"embeddings: {emb}; head: {head}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "family": "transformer",
            "norm": self.norm,
            "layers": len(self.layers),
            "hidden": self.hidden,
            "heads": self.heads,
            "head_size": self.head_size,
            "mlp": self.mlp,
            "style": self.style,
            "norm_kind": self.norm_kind,
            "kv_heads": self.kv_heads,
            "gated_mlp": self.gated,
            "rotary": self.rotary,
            "parallel": self.parallel,
            "shared_layers": self.shared_layers,
            "inputs": self.inputs,
            "side_inputs": list(self.side_inputs),
            "embeddings": list(self.embeddings),
            "head": self.head,
            "layer_list": [
                {"index": lay.index, "input": lay.input.name, "output": lay.output.name,
                 "attention": {"out_proj": lay.attention.out_proj.name, "heads": lay.attention.heads,
                               "head_size": lay.attention.head_size, "qkv_layout": lay.attention.qkv_layout,
                               "linears": [x.name for x in lay.attention.linears]},
                 "mlp": {"up": lay.up.name, "down": lay.down.name, "width": lay.up.out_features,
                         "gate": None if lay.gate_proj is None else lay.gate_proj.name}}
                for lay in self.layers
            ],
        }


# -- linear layers ------------------------------------------------------------------------
def _param(v: Value | None) -> Value | None:
    """The float graph parameter ``v`` is (or an ``Identity`` of: exporters share equal weights so)."""
    for _ in range(4):
        if v is None or v.producer is None or v.producer.op_type != "Identity":
            break
        v = v.producer.inputs[0]
    if v is None or v.const is None or v.const.array.dtype.kind != "f":
        return None
    return v


def as_linear(flow: DataFlow, n: Node) -> Linear | None:
    """``n`` as a :class:`Linear` (``None`` when it is not one)."""
    if n.op_type == "MatMul":
        if len(flow.data_inputs(n)) != 1 or not flow.is_data(n.inputs[0]):
            return None
        w, t = _param(n.inputs[1]), None
        tp = n.inputs[1].producer
        if w is None and tp is not None and tp.op_type == "Transpose" \
                and list(tp.attr("perm", [1, 0])) == [1, 0]:
            w, t = _param(tp.inputs[0]), tp
        if w is None or w.const.array.ndim != 2:
            return None
        i, o = (1, 0) if t is not None else (0, 1)
        users = n.outputs[0].consumers()
        if len(users) == 1 and users[0].op_type == "Add":
            other = [v for v in users[0].inputs if v is not n.outputs[0]]
            b = _param(other[0]) if len(other) == 1 else None
            if b is not None and b.const.shape in ((w.const.shape[o],),):
                return Linear(n, w, b, users[0], i, o, list(users[0].inputs).index(other[0]), weight_node=t)
        return Linear(n, w, None, None, i, o, weight_node=t)
    if n.op_type == "Gemm":
        if n.attr("transA", 0) or float(n.attr("alpha", 1.0)) != 1.0 or float(n.attr("beta", 1.0)) != 1.0:
            return None
        w = _param(n.inputs[1])
        if w is None or not flow.is_data(n.inputs[0]):
            return None
        b = _param(n.inputs[2]) if len(n.inputs) > 2 else None
        t = 1 if n.attr("transB", 0) else 0
        out_axis = 0 if t else 1
        if b is not None and b.const.shape != (w.const.shape[out_axis],):
            return None
        return Linear(n, w, b, None, 1 if t else 0, out_axis)
    return None


# -- units and layers ---------------------------------------------------------------------
def _unit(flow: DataFlow, seg: Segment, nxt: Segment | None) -> list[Sublayer]:
    """The residual unit closing ``seg`` as transformer sublayers: one (attention or MLP), two
    for a parallel layer (``x + attn(LN(x)) + mlp(LN'(x))``: the unit's two ``terms``), none."""
    if len(seg.nodes) < 2:
        return []
    add = seg.last
    shared = match_residual(add, flow, entry=seg.entry)  # the one residual matcher
    if isinstance(shared, str):
        return []
    if shared.terms:
        if len(shared.terms) != 2:
            return []
        units = [_sublayer(flow, seg, add, shared, None, _term_branch(shared, t)) for t in shared.terms]
        if any(u is None for u in units) or sorted(u.kind for u in units) != ["attention", "mlp"]:
            return []
        units.sort(key=lambda u: u.kind != "attention")
        for u in units:
            u.parallel = True
        return units
    unit = _sublayer(flow, seg, add, shared, nxt, None)
    return [] if unit is None else [unit]


def _term_branch(shared: Any, term: Value) -> list[Node]:
    """The nodes of ``shared.branch`` that ``term`` (one summed branch output) is computed from."""
    members = {id(n): n for n in shared.branch}
    seen: dict[int, Node] = {}
    stack = [term.producer]
    while stack:
        n = stack.pop()
        if n is None or id(n) not in members or id(n) in seen:
            continue
        seen[id(n)] = n
        stack.extend(v.producer for v in n.inputs if v is not None)
    return [n for n in shared.branch if id(n) in seen]


def _sublayer(flow: DataFlow, seg: Segment, add: Node, shared: Any, nxt: Segment | None,
              branch: list[Node] | None) -> Sublayer | None:
    """A :class:`Sublayer` of the residual unit ``shared`` (``branch``: one term's part of it)."""
    nodes = shared.branch if branch is None else branch
    kind = "attention" if any(n.op_type == "Softmax" for n in nodes) else "mlp"
    linears = [lin for n in nodes if (lin := as_linear(flow, n)) is not None]
    if not linears:
        return None
    norm, norm_kind = norm_at(flow, seg.entry, nodes)
    post = None
    if norm is None and nxt is not None and len(nxt.nodes) == 1 and nxt.last.op_type in NORM_OPS:
        post, norm_kind = nxt.last, "rms" if nxt.last.op_type in RMS_OPS else "layer"
    unit = Sublayer(kind, seg, add, norm, post, linears, norm_kind=norm_kind, residual=shared,
                    term_branch=branch)
    if kind == "mlp":
        _read_gated(flow, unit)
    else:
        unit.rotary = _rotary(flow, unit)
        unit.repeat_kv = _repeat_kv(flow, unit)
    return unit


def _repeat_kv(flow: DataFlow, unit: Sublayer) -> list[tuple[Node, int]]:
    """``(Expand, axis)`` of each K/V head repeat of grouped-query attention: ``[N, G, T, D]``
    unsqueezed at ``axis`` and expanded to ``[N, G, r, T, D]`` (the target says the group count
    ``G`` at ``axis - 1`` and the group size ``r`` at ``axis``), read from the structure."""
    out = []
    for n in unit.branch:
        if n.op_type != "Expand" or len(flow.data_inputs(n)) != 1:
            continue
        u = n.inputs[0].producer
        if u is None or u.op_type != "Unsqueeze":
            continue
        axes = flow.constant(u.inputs[1]) if len(u.inputs) > 1 else np.asarray(u.attr("axes", []))
        if axes is None or np.size(axes) != 1:
            continue
        axis = int(np.reshape(axes, -1)[0])
        rank = u.outputs[0].type.rank if u.outputs[0].type is not None else None
        if axis < 0 and rank is None:
            continue
        out.append((n, axis % rank if axis < 0 else axis))
    return out


def _const_scalar(flow: DataFlow, v: Value | None) -> float | None:
    a = flow.constant(v) if v is not None and not flow.is_data(v) else None
    return float(a.reshape(-1)[0]) if a is not None and a.size == 1 else None


def _only_reader(flow: DataFlow, v: Value, op: str) -> Node | None:
    users = flow.data_consumers(v)
    return users[0] if len(users) == 1 and users[0].op_type == op else None


def rms_norm_at(flow: DataFlow, x: Value, readers: list[Node]) -> Node | None:
    """The last node of an RMSNorm of ``x`` written out, or ``None``: ``x * 1/sqrt(mean(x^2) + eps)``
    (``Pow → ReduceMean → Add → Sqrt → Reciprocal → Mul`` or ``… Sqrt → Div``), then optionally
    ``Mul`` by a per-channel weight (Gemma's ``1 + w`` folded or computed from a parameter).
    ``readers`` are the nodes reading ``x``: the ``Pow`` and the final ``Mul`` / ``Div``."""
    if len(readers) != 2:
        return None
    pw = next((n for n in readers if n.op_type == "Pow" and n.inputs[0] is x), None)
    if pw is None or _const_scalar(flow, pw.inputs[1]) != 2.0:
        return None
    mean = _only_reader(flow, pw.outputs[0], "ReduceMean")
    add = mean and _only_reader(flow, mean.outputs[0], "Add")
    sqrt = add and _only_reader(flow, add.outputs[0], "Sqrt")
    if sqrt is None:
        return None
    users = flow.data_consumers(sqrt.outputs[0])
    inv = users[0] if len(users) == 1 else None
    if inv is not None and inv.op_type == "Reciprocal":
        scale = _only_reader(flow, inv.outputs[0], "Mul")
    elif inv is not None and inv.op_type == "Div" and inv.inputs[1] is sqrt.outputs[0]:
        scale = inv
    else:
        return None
    if scale is None or scale not in readers:
        return None
    w = _only_reader(flow, scale.outputs[0], "Mul")
    if w is not None and len(flow.data_inputs(w)) == 1:
        return w
    return scale


def norm_at(flow: DataFlow, x: Value, branch: list[Node]) -> tuple[Node | None, str | None]:
    """``(last node, "layer" | "rms")`` of the normalisation opening a branch that reads ``x``
    (a norm node of :data:`NORM_OPS`, or RMSNorm written out), else ``(None, None)``."""
    first = [n for n in branch if x in flow.data_inputs(n)]
    if len(first) == 1 and first[0].op_type in NORM_OPS:
        return first[0], "rms" if first[0].op_type in RMS_OPS else "layer"
    rms = rms_norm_at(flow, x, first)
    return (rms, "rms") if rms is not None else (None, None)


def _read_gated(flow: DataFlow, unit: Sublayer) -> None:
    """Mark a gated MLP (``down(act(gate(x)) * up(x))``) and order its linears gate, up, down."""
    if len(unit.linears) != 3:
        return
    a, b, down = unit.linears
    if a.node.inputs[0] is not b.node.inputs[0]:
        return
    prod = flow.data_inputs(down.node)[0].producer
    if prod is None or prod.op_type != "Mul" or len(flow.data_inputs(prod)) != 2:
        return
    ups = [lin for lin in (a, b) if lin.output in prod.inputs]
    if len(ups) != 1:
        return
    up = ups[0]
    gate = b if up is a else a
    acts = {n.op_type for n in reachable(flow, gate.output, prod)} & ACTIVATION_OPS
    if acts:
        unit.linears = [gate, up, down]
        unit.gated = "SwiGLU" if "Sigmoid" in acts else "GeGLU" if acts & {"Tanh", "Erf", "Gelu"} else "GLU"


def head_split(flow: DataFlow, lin: Linear) -> Node | None:
    """The ``Reshape`` splitting a Q/K/V projection's output into heads (``[.., heads, D]``): the
    first one on its single-reader chain, else ``None``."""
    v = lin.output
    for _ in range(4):
        users = flow.data_consumers(v)
        if len(users) != 1:
            return None
        if users[0].op_type == "Reshape":
            return users[0]
        v = users[0].outputs[0]
    return None


def reachable(flow: DataFlow, start: Value, stop: Node) -> list[Node]:
    """Data nodes reachable from ``start`` without passing ``stop`` (``stop`` excluded)."""
    ahead: dict[int, Node] = {}
    frontier = [start]
    while frontier:
        v = frontier.pop()
        for n in flow.data_consumers(v):
            if n is stop or id(n) in ahead:
                continue
            ahead[id(n)] = n
            frontier.extend(n.outputs)
    return list(ahead.values())


def _rotate_half(flow: DataFlow, unit: Sublayer) -> bool:
    """``Concat(-x2, x1)`` of two ``Slice`` s of one value in the branch (RoPE's ``rotate_half``;
    GPT-J's ``rotate_every_two`` stacks the strided halves: each through an ``Unsqueeze``)."""
    def peel(v):
        p = v.producer
        return p.inputs[0].producer if p is not None and p.op_type == "Unsqueeze" else p

    for n in unit.branch:
        if n.op_type != "Concat" or len(n.inputs) != 2:
            continue
        neg = peel(n.inputs[0])
        s2 = neg.inputs[0].producer if neg is not None and neg.op_type == "Neg" else None
        s1 = peel(n.inputs[1])
        if s1 is not None and s2 is not None and s1.op_type == s2.op_type == "Slice" \
                and s1.inputs[0] is s2.inputs[0]:
            return True
    return False


def _rotary(flow: DataFlow, unit: Sublayer) -> bool:
    """Whether the attention rotates Q and K (rotary position embedding): its branch reads a
    ``Sin`` / ``Cos`` table, or rotates halves (tables folded to constants at a fixed length)."""
    if _rotate_half(flow, unit):
        return True
    seen: set[int] = set()
    frontier = [v for n in unit.branch for v in n.inputs if v is not None and not flow.is_data(v)]
    for _ in range(10_000):
        if not frontier:
            break
        v = frontier.pop()
        p = v.producer
        if p is None or id(p) in seen:
            continue
        seen.add(id(p))
        if p.op_type in ("Sin", "Cos"):
            return True
        frontier.extend(x for x in p.inputs if x is not None)
    return False


def _gate(flow: DataFlow, seg: Segment) -> tuple[Node, Node, Node] | None:
    """``(Sub, Mul, Add)`` when ``seg`` is ``h + g ⊙ (x − h)`` with a parameter ``g``."""
    add = seg.last
    if add.op_type != "Add" or len(seg.nodes) < 4 or seg.entry not in add.inputs:
        return None
    other = [v for v in add.inputs if v is not seg.entry]
    mul = other[0].producer if len(other) == 1 else None
    if mul is None or mul.op_type != "Mul" or len(flow.data_inputs(mul)) != 1:
        return None
    g = [v for v in mul.inputs if not flow.is_data(v)]
    sub = flow.data_inputs(mul)[0].producer
    if len(g) != 1 or _param(g[0]) is None or sub is None or sub.op_type != "Sub":
        return None
    if sub.inputs[1] is not seg.entry or not flow.is_data(sub.inputs[0]):
        return None
    return sub, mul, add


def _inner_segments(flow: DataFlow, seg: Segment, gate: tuple[Node, Node, Node]) -> list[Segment]:
    """The cut-value chain from ``seg.entry`` to the gated value ``x`` of ``h + g ⊙ (x − h)``."""
    import networkx as nx

    sub = gate[0]
    members = [n for n in seg.nodes if n not in gate]
    ids = {id(n) for n in members}
    dag = nx.DiGraph()
    src = "\0entry"
    dag.add_node(src)
    for n in members:
        dag.add_node(id(n))
        for v in flow.data_inputs(n):
            if v is seg.entry:
                dag.add_edge(src, id(n))
            elif v.producer is not None and id(v.producer) in ids:
                dag.add_edge(id(v.producer), id(n))
    sink = sub.inputs[0].producer
    idom = nx.immediate_dominators(dag, src)
    chain = [id(sink)]
    while chain[-1] != src:
        chain.append(idom[chain[-1]])
    chain.reverse()
    on_chain = set(chain)
    groups: dict = {d: [] for d in chain[:-1]}
    for n in members:
        d = idom.get(id(n))
        while d is not None and d not in on_chain:
            d = idom[d]
        if d is not None and d in groups:
            groups[d].append(n)
    by_id = {id(n): n for n in members}
    out, entry = [], seg.entry
    for d, nxt in zip(chain[:-1], chain[1:], strict=True):
        exit_ = flow.data_output(by_id[nxt])
        out.append(Segment(groups[d], entry, exit_))
        entry = exit_
    return out


def _units(flow: DataFlow, segs: list[Segment]) -> list[Sublayer | tuple]:
    """Residual units along ``segs``; a gated layer gives ``("gate", (sub, mul, add), inner units)``."""
    units: list = []
    for i, seg in enumerate(segs):
        gate = _gate(flow, seg)
        if gate is not None:
            units.append(("gate", gate, _units(flow, _inner_segments(flow, seg, gate))))
            continue
        units.extend(_unit(flow, seg, segs[i + 1] if i + 1 < len(segs) else None))
    return units


def _scores_value(unit: Sublayer) -> Value:
    soft = [n for n in unit.branch if n.op_type == "Softmax"]
    if len(soft) != 1:
        raise StructureError(f"attention unit ending at {unit.add.name!r} has {len(soft)} Softmax nodes; "
                             "expected one")
    return soft[0].inputs[0]


def probe_shapes(graph: Graph, names: list[str], flow: DataFlow, *, runs: int = 1
                 ) -> tuple[list[dict[str, tuple]], list[int]]:
    """Run-time shapes of values ``names`` on small inputs (ONNX Runtime), and the batch sizes.

    Token models get ids 0 (any id is valid for a shape). Symbolic dims are tried at a few
    sizes until the export runs (TorchScript exports can fix the sequence length); with
    ``runs=2`` a second run at another batch size tells which dims follow the batch.
    """
    import onnxruntime as ort

    from ..onnx_io import graph_session
    from .shapes import declared_shape, symbol_sizes

    inp = flow.image
    t = inp.type
    shape = list(t.shape) if t is not None and t.shape is not None else [2, 8]
    dtype = t.dtype if t is not None and t.elem_type else np.float32

    def feeds_at(batch: int, other: int):
        dims = [d if isinstance(d, int) else (batch if i == 0 else other) for i, d in enumerate(shape)]
        return {inp.name: np.zeros(dims, dtype=dtype), **side_input_feeds(flow, dict(enumerate(dims)))}, dims

    # a value whose declared shape the input sizes determine is not fetched: fetching every value
    # of ViT-B held 1.1 GiB of activations at once (ONNX Runtime keeps all outputs of a run)
    env = symbol_sizes(graph, feeds_at(2, 8)[0])
    fetch = [n for n in names if declared_shape(graph.value(n), env) is None]
    every = list(dict.fromkeys(fetch + [o.name for o in graph.outputs]))  # the outputs: a real run
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.intra_op_num_threads = 1
    so.log_severity_level = 4
    sess = graph_session(graph, extra_outputs=fetch, options=so)  # weights read in place, any size

    def run(batch: int, other: int):
        feed, dims = feeds_at(batch, other)
        outs = sess.run(every, feed)
        got = {n: tuple(o.shape) for n, o in zip(every, outs, strict=True)}
        del outs
        at = symbol_sizes(graph, feed)
        for n in names:
            if n not in got:
                s = declared_shape(graph.value(n), at)
                if s is None:
                    raise StructureError(f"value {n!r} has no declared size at these inputs")
                got[n] = s
        return {n: got[n] for n in names}, int(dims[0])

    last = None
    for other in (8, 16, 6, 4, 32, *range(1, 33)):
        try:
            first, b = run(2, other)
        except Exception as e:  # noqa: BLE001 - any run failure: try the next size
            last = e
            continue
        if runs == 1:
            return [first], [b]
        for other2 in (other + 3, other):  # another length too, where the export allows it
            try:
                second, b2 = run(3, other2)
            except Exception as e:  # noqa: BLE001
                last = e
                continue
            return [first, second], [b, b2]
    raise StructureError(f"cannot run the graph to read its attention shapes ({str(last).splitlines()[0]})")


def _heads(graph: Graph, flow: DataFlow, units: list[Sublayer]) -> None:
    attn = [u for u in units if u.kind == "attention"]
    if not attn:
        return
    values = [_scores_value(u).name for u in attn]
    splits = {id(u): sp for u in attn if len(u.in_projs) == 1 and (sp := head_split(flow, u.in_projs[0]))}
    # a split to [.., 3H, D] is regrouped by the next reshape ([.., H, 3, D]: Falcon's unflatten)
    regroups = {k: r for k, sp in splits.items() if (r := _only_reader(flow, sp.outputs[0], "Reshape"))}
    names = [sp.outputs[0].name for sp in splits.values()] + [r.outputs[0].name for r in regroups.values()]
    (shapes,), (batch,) = probe_shapes(graph, values + names, flow)
    for u, name in zip(attn, values, strict=True):
        s = shapes[name]
        if len(s) == 4:
            heads = int(s[1])
        elif len(s) == 3 and s[0] % batch == 0:
            heads = int(s[0]) // batch
        else:
            raise StructureError(f"attention scores {name!r} have shape {s}; expected (batch, heads, T, T)")
        width = u.out_proj.in_features
        if width % heads:
            raise StructureError(f"attention width {width} of {u.out_proj.name!r} is not divisible by "
                                 f"{heads} heads")
        u.heads, u.head_size = heads, width // heads
        u.kv_heads = _kv_heads(u)
        if len(u.in_projs) == 1 and u.in_projs[0].out_features == 3 * width:
            sp = splits.get(id(u))
            split = None if sp is None else tuple(shapes[sp.outputs[0].name])
            dh = width // heads
            if split is not None and split[-2:] == (3 * heads, dh) and id(u) in regroups:
                split = tuple(shapes[regroups[id(u)].outputs[0].name])
            u.qkv_layout = _qkv_layout(split, heads, dh)


def _qkv_layout(split: tuple | None, heads: int, dh: int) -> str:
    """How a fused Q/K/V projection orders its outputs, from the shape its head-split ``Reshape``
    gives (``None``: Q, K and V are split off first): ``"heads"`` when each head's q, k, v are
    adjacent (``[.., H, 3·D]`` GPT-NeoX, ``[.., H, 3, D]`` Falcon), else ``"blocks"`` (``[Q | K | V]``)."""
    s = tuple(split or ())
    if s[-2:] == (heads, 3 * dh) or (s[-3:] == (heads, 3, dh) and heads != 3):  # 3 heads: timm's [3, H, D]
        return "heads"
    return "blocks"


def _kv_heads(u: Sublayer) -> int | None:
    """K/V heads of an attention: ``heads`` (multi-head), fewer (grouped-query: K and V
    projections narrower than Q), ``None`` when the in-projections are not Q/K/V-shaped."""
    ins, width, dh = u.in_projs, u.out_proj.in_features, u.head_size
    outs = [x.out_features for x in ins]
    if len(ins) == 1:
        kv = (outs[0] - width) // 2
    elif len(ins) == 3 and outs.count(width) >= 1:
        rest = list(outs)
        rest.remove(width)
        kv = rest[0] if rest[0] == rest[1] else -1
    else:
        return None
    if kv <= 0 or kv % dh or u.heads % (kv // dh):
        return None
    return kv // dh


def _embeddings(graph: Graph, flow: DataFlow) -> list[dict[str, Any]]:
    out = []
    for n in graph.nodes:
        if n.op_type == "Gather" and int(n.attr("axis", 0)) == 0 and _param(n.inputs[0]) is not None \
                and n.inputs[0].const.array.ndim == 2:
            rows, dim = n.inputs[0].const.shape
            idx = n.inputs[1]
            kind = "token" if flow.is_data(idx) else "type" if _reads_graph_input(idx) else "position"
            out.append({"name": n.name, "table": n.inputs[0].name, "rows": int(rows), "dim": int(dim),
                        "kind": kind})
    return out


def _reads_graph_input(v: Value) -> bool:
    """Whether ``v`` is (a cast / reshape of) a data input of the graph (token type ids next to the
    token ids are a side input, not data of the stream)."""
    for _ in range(4):
        if v.producer is None:
            return not v.is_parameter and v.const is None
        if v.producer.op_type not in ("Cast", "Reshape", "Unsqueeze", "Identity", "Expand"):
            return False
        v = v.producer.inputs[0]
    return False


def stream_input(graph: Graph) -> Value | None:
    """The data input the residual stream is read over when a graph has several (``input_ids``
    next to ``attention_mask`` / ``token_type_ids`` / ``position_ids``): the integer input indexing
    the largest embedding table (a ``Gather`` of a 2-D float parameter). ``None`` with one data
    input (or none such), where :class:`DataFlow` takes (or refuses) the graph's inputs itself."""
    ins = [v for v in graph.inputs if not v.is_parameter]
    if len(ins) < 2:
        return None
    rows: dict[int, int] = {}
    for v in ins:
        for n in v.consumers():
            if n.op_type == "Gather" and n.inputs[1] is v and int(n.attr("axis", 0)) == 0:
                w = _param(n.inputs[0])
                if w is not None and w.const.array.ndim == 2:
                    rows[id(v)] = max(rows.get(id(v), 0), int(w.const.shape[0]))
    if not rows:
        return None
    return max(ins, key=lambda v: rows.get(id(v), -1))


def side_input_feeds(flow: DataFlow, dims: dict[int, int]) -> dict[str, np.ndarray]:
    """Neutral feeds for the data inputs other than the stream's (``dims``: the sizes the stream
    input's symbolic dims take, by position): ones for an attention mask (a name holding
    ``mask``), zeros otherwise (token types, ...); float inputs zeros, bool ``True``."""
    feeds = {}
    for v in flow.graph.inputs:
        if v.is_parameter or v is flow.image:
            continue
        t = v.type
        shape = [d if isinstance(d, int) else dims.get(i, 1) for i, d in enumerate(t.shape or ())] \
            if t is not None else []
        dtype = t.dtype if t is not None and t.elem_type else np.int64
        fill = 1 if "mask" in v.name.lower() or np.dtype(dtype).kind == "b" else 0
        feeds[v.name] = np.full(shape, fill, dtype=dtype)
    return feeds


def recognise_transformer(graph: Graph) -> TransformerStructure:
    """The transformer layers of ``graph``; :class:`StructureError` saying why when there are none.

    Raises
    ------
    StructureError
        No residual attention + MLP layer pairs, mixed pre-/post-LN, or unreadable heads.
    """
    flow = DataFlow(graph, images=False, source=stream_input(graph))
    layers: list[TransformerLayer] = []
    _layers(_units(flow, flow.segments), layers, None)
    if not layers:
        raise StructureError("no attention unit (a residual Add around a branch with a Softmax) on the "
                             "graph's main chain")
    units = [u for lay in layers for u in (lay.attention, lay.mlp)]
    kinds = {lay.norm for lay in layers}
    if len(kinds) != 1:
        raise StructureError(f"layers mix pre-LN and post-LN ({sorted(kinds)})")
    for lay in layers:
        if len(lay.mlp.linears) != (3 if lay.mlp.gated else 2):
            raise StructureError(f"MLP unit ending at {lay.mlp.add.name!r} has {len(lay.mlp.linears)} linear "
                                 "layers; expected up- and down-projection (or gate, up and down)")
    _heads(graph, flow, units)
    first = layers[0]
    hidden = first.up.in_features
    inp = flow.image
    tokens = inp.type is not None and inp.type.elem_type and inp.type.dtype.kind in "iu"
    head = _head(flow, layers[-1])
    return TransformerStructure(
        layers=layers, norm=kinds.pop(), hidden=hidden, heads=first.attention.heads,
        head_size=first.attention.head_size, mlp=first.up.out_features,
        inputs="tokens" if tokens else "images", embeddings=_embeddings(graph, flow), head=head, flow=flow,
        side_inputs=[v.name for v in graph.inputs if not v.is_parameter and v is not flow.image],
    )


def _layers(units: list, layers: list[TransformerLayer], gate) -> None:
    """Pair ``units`` into layers (appended to ``layers``); gated layers recurse into their units."""
    i = 0
    while i < len(units):
        u = units[i]
        if isinstance(u, tuple):
            inner: list[TransformerLayer] = []
            _layers(u[2], inner, u[1])
            if len(inner) != 1:
                raise StructureError(f"the gate ending at {u[1][2].name!r} holds {len(inner)} layers; "
                                     "expected one")
            inner[0].index = len(layers)
            layers.append(inner[0])
            i += 1
            continue
        if u.kind != "attention":
            raise StructureError(f"residual unit ending at {u.add.name!r} (an MLP) does not follow an "
                                 "attention unit")
        if i + 1 >= len(units) or units[i + 1].kind != "mlp":
            raise StructureError(f"attention unit ending at {u.add.name!r} is not followed by an MLP unit")
        m = units[i + 1]
        if u.parallel != m.parallel or (u.parallel and m.add is not u.add):
            raise StructureError(f"attention unit ending at {u.add.name!r} and the MLP unit ending at "
                                 f"{m.add.name!r} mix parallel and sequential residuals")
        if not u.parallel and m.entry is not u.output and relaid_from(m.entry) is not u.output:
            raise StructureError(f"the MLP unit ending at {m.add.name!r} does not read the attention unit's "
                                 f"output {u.output.name!r}")
        norm = _norm_kind(u, m)
        layers.append(TransformerLayer(len(layers), u, m, norm, gate))
        i += 2


def relaid_from(v: Value) -> Value:
    """The value that a chain of channels-last Reshapes ending at ``v`` starts from (``v`` itself
    when none): each Reshape keeps the last (feature) axis whole, the channel finder's rule
    (:func:`~netmorph.structure.channels.kept_axis`), as Swin's merge of its windows
    ``[B, H, W, C] -> [B, H*W, C]`` between the attention and the MLP unit does."""
    while (p := v.producer) is not None and p.op_type == "Reshape":
        src = p.inputs[0]
        a = src.type.shape if src.type is not None else None
        b = v.type.shape if v.type is not None else None
        if not a or not b or kept_axis(a, len(a) - 1, b) != len(b) - 1:
            break
        v = src
    return v


def _norm_kind(att: Sublayer, mlp: Sublayer) -> str:
    opens = [n for n in att.branch if att.entry in n.inputs]
    if any(n.op_type == "ReduceMean" for n in opens):
        raise StructureError(
            f"layer ending at {mlp.add.name!r} writes its LayerNorm out as ReduceMean/Sub/Pow/Sqrt/Div "
            "(an export below opset 17): growth needs LayerNormalization nodes; export with opset >= 17"
        )
    if att.norm is not None and mlp.norm is not None and att.post_norm is None and mlp.post_norm is None:
        return "pre"
    if att.parallel:
        raise StructureError(f"parallel layer ending at {mlp.add.name!r}: its attention and MLP branches do "
                             "not both open with a norm of the layer input (parallel post-LN is not read)")
    if att.post_norm is not None and mlp.post_norm is not None and att.norm is None and mlp.norm is None:
        return "post"
    raise StructureError(
        f"layer ending at {mlp.add.name!r} is neither pre-LN (a LayerNorm opening each branch) nor post-LN "
        "(a LayerNorm after each Add)"
    )


def _head(flow: DataFlow, last: TransformerLayer) -> dict[str, Any] | None:
    seen = False
    found = None
    for seg in flow.segments:
        if seg.entry is last.output:
            seen = True
            continue
        if seen:
            for n in seg.nodes:
                lin = as_linear(flow, n)
                if lin is not None:
                    found = lin
    if found is None:
        return None
    return {"name": found.name, "in": found.in_features, "out": found.out_features}
