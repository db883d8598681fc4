"""``widen-mlp``: Net2Wider on the MLP hidden units of every (or the chosen) transformer layer.

New units copy old ones by a mapping: the up-projection's output columns (and bias) are
gathered (in a gated MLP, ``down(act(gate(x)) * up(x))`` as SwiGLU / GeGLU, the gate's and
the up-projection's by the same mapping, so each copied unit is ``act(g_j) * u_j`` again), the
down-projection's input rows gathered and divided by each unit's replication
count. Exact for any elementwise activation between them (GELU written out as Erf or Tanh
included), checked by the pass: the nodes between the two projections may only be
elementwise ops with scalar constants, or reshapes (whose width entry is retargeted).
"""

from __future__ import annotations

from ..errors import PreconditionError
from ..ir import Graph
from ..limits import MAX_FACTOR
from ..morphs.widen import MAPPING_MODES, channel_mapping, divisors, widen_consumer, widen_producer
from .base import Option, Pass, PassContext, parameter_bytes
from .transformer_surgery import (
    between,
    forget_types,
    parse_layers,
    retarget_reshape,
    set_param,
    transformer_of,
)

ELEMENTWISE = {"Add", "Sub", "Mul", "Div", "Pow", "Erf", "Tanh", "Relu", "Gelu", "Sigmoid", "Sqrt", "Neg",
               "Exp", "Identity", "Dropout", "Cast", "Softplus", "HardSwish", "LeakyRelu", "Elu", "Clip"}


def _scalar(v) -> bool:
    return v.type is not None and v.type.shape is not None and all(
        isinstance(d, int) and d == 1 for d in v.type.shape)


class WidenMLP(Pass):
    """MLP width m -> round(F·m) in every (or each ``--layer``) transformer layer, exactly."""

    name = "widen-mlp"
    summary = "Transformer: Net2Wider on the MLP hidden units (copy up-proj columns, divide down-proj rows)."
    option_specs = (
        Option("factor", float, 2.0, "new MLP width / old (> 1)", low=1.0, high=MAX_FACTOR, low_open=True),
        Option("level", str, None, "comma list of layer indices (default: every layer)"),
        Option("mapping", str, "random", "which units the new ones copy", MAPPING_MODES),
    )

    def _plan(self, graph: Graph):
        st = transformer_of(graph, self.name)
        f = float(self.options["factor"])
        if f <= 1.0:
            raise PreconditionError(f"{self.name}: --factor {f:g} does not widen (give a factor > 1)")
        work = []
        for i in parse_layers(self.options["level"], len(st.layers), self.name):
            lay = st.layers[i]
            up, down = lay.up, lay.down
            inner = _inner(st.flow, lay)
            reshapes = []
            for n in inner:
                if n.op_type == "Reshape":
                    reshapes.append(n)
                    continue
                if n.op_type not in ELEMENTWISE:
                    raise PreconditionError(
                        f"{self.name}: layer {i}: node {n.name!r} ({n.op_type}) between the up-projection "
                        f"{up.name!r} and the down-projection {down.name!r} is not elementwise; copying "
                        "units is exact only through elementwise activations")
                consts = [v for v in n.inputs if v is not None and not st.flow.is_data(v)]
                if any(not _scalar(v) for v in consts):
                    raise PreconditionError(
                        f"{self.name}: layer {i}: node {n.name!r} ({n.op_type}) between the projections "
                        "reads a non-scalar constant (a per-unit parameter the mapping would have to follow)")
            m = up.out_features
            new = int(round(f * m))
            if new <= m:
                raise PreconditionError(f"{self.name}: factor {f:g} leaves the MLP width {m} unchanged")
            work.append((i, lay, inner, reshapes, m, new))
        return st, work

    def requires(self, graph: Graph):
        return self._plan(graph)

    def child_bytes(self, graph: Graph, plan) -> int:
        """The up- and down-projections of each widened MLP grow by ``new / m``."""
        extra = sum(p.weight.const.array.nbytes * (new - m) / m
                    for _, lay, _, _, m, new in plan[1] for p in (lay.up, lay.down))
        return parameter_bytes(graph) + int(extra)

    def call(self, graph: Graph, ctx: PassContext, plan) -> None:
        _, work = plan
        for i, lay, inner, reshapes, m, new in work:
            down = lay.down
            mapping = channel_mapping(m, new, mode=self.options["mapping"], rng=ctx.rng)
            d = divisors(mapping, m)
            for up in lay.mlp.in_projs:  # a gated MLP's gate and up copy the same units
                w = up.weight
                set_param(graph, ctx, up.node, 1, widen_producer(w.const.array, mapping, up.out_axis),
                          kind="gather", parent=w, axis=up.out_axis, index=mapping)
                if up.bias is not None:
                    bnode, bi = up.bias_site
                    b = up.bias
                    set_param(graph, ctx, bnode, bi, widen_producer(b.const.array, mapping, 0), kind="gather",
                              parent=b, axis=0, index=mapping)
            w = down.weight
            set_param(graph, ctx, down.node, 1, widen_consumer(w.const.array, mapping, m, down.in_axis),
                      kind="gather-divide", parent=w, axis=down.in_axis, index=mapping, divide=d)
            for r in reshapes:
                retarget_reshape(graph, ctx, r, m, new, f"{self.name}: layer {i}")
            ups = lay.mlp.in_projs
            forget_types([*(x.node for x in ups), *(x.bias_node for x in ups if x.bias_node), *inner])


def _inner(flow, lay) -> list:
    """The data nodes between the MLP's up-projection (a gated MLP: gate and up) and its
    down-projection, in graph order."""
    seen: dict[int, object] = {}
    for lin in lay.mlp.in_projs:
        for n in between(flow, lin.output, lay.down.node):
            seen[id(n)] = n
    return [n for n in flow.graph.nodes if id(n) in seen]

