"""``widen-mlp``: ``widen`` over the MLP hidden group of every (or the chosen) transformer layer.

A layer's MLP hidden width is a channel group: :func:`netmorph.structure.channels.find_channel_group`
from the up-projection returns it (producers: the up-projection, and in a gated MLP
``down(act(gate(x)) * up(x))`` as SwiGLU / GeGLU the gate too, joined by the product; through
ops: the activation, written out or not, a bias ``Add``, a reshape that keeps the hidden axis;
consumer: the down-projection), and :func:`netmorph.passes.widen.widen_group` widens it as CNN
``widen`` does: new units copy old ones by a mapping (the gate's and the up-projection's rows by
the same one, so each copied unit is ``act(g_j) * u_j`` again), the down-projection's input rows
are gathered and divided by each unit's replication count. Exact; the group must be exactly the
layer's MLP (its producers the up/gate projections, its one consumer the down-projection), else
the pass refuses with the place the group reaches instead.
"""

from __future__ import annotations

from ..errors import PreconditionError
from ..ir import Graph
from ..limits import MAX_FACTOR
from ..morphs.widen import MAPPING_MODES
from .base import Option, Pass, PassContext
from .transformer_surgery import parse_layers, transformer_of
from .widen import group_plan, grown_bytes, widen_group


class WidenMLP(Pass):
    """MLP width m -> round(F·m) in every (or each ``--layer``) transformer layer, exactly."""

    name = "widen-mlp"
    summary = "Transformer: Net2Wider on the MLP hidden units (copy up-proj columns, divide down-proj rows)."
    option_specs = (
        Option("factor", float, 2.0, "new MLP width / old (> 1)", low=1.0, high=MAX_FACTOR, low_open=True),
        Option("level", str, None, "comma list of layer indices (default: every layer)"),
        Option("mapping", str, "random", "which units the new ones copy", MAPPING_MODES),
    )

    def requires(self, graph: Graph):
        from ..structure import ActivationView
        from ..structure.activations import ensure_types
        from ..structure.channels import find_channel_group

        st = transformer_of(graph, self.name)
        f = float(self.options["factor"])
        if f <= 1.0:
            raise PreconditionError(f"{self.name}: --factor {f:g} does not widen (give a factor > 1)")
        ensure_types(graph)
        view = ActivationView(graph)
        work = []
        for i in parse_layers(self.options["level"], len(st.layers), self.name):
            lay = st.layers[i]
            where = f"{self.name}: layer {i}"
            try:
                g = find_channel_group(graph, lay.up.node, view)
            except PreconditionError as e:
                raise PreconditionError(
                    f"{where}: the MLP hidden units do not form a channel group ({e})") from None
            want = sorted(id(p.node) for p in lay.mlp.in_projs)
            consumers = [n for n, _, _ in g.consumers]
            if sorted(id(n) for n, _ in g.producers) != want or consumers != [lay.down.node]:
                raise PreconditionError(
                    f"{where}: the hidden group of {lay.up.name!r} reaches beyond the MLP (producers "
                    f"{[n.name for n, _ in g.producers]}, consumers {[n.name for n, _, _ in g.consumers]}); "
                    f"expected {[p.name for p in lay.mlp.in_projs]} -> {lay.down.name!r}")
            m = g.width
            new = int(round(f * m))
            if new <= m:
                raise PreconditionError(f"{self.name}: factor {f:g} leaves the MLP width {m} unchanged")
            new, mode = group_plan(g, new, self.options["mapping"], where)
            work.append((i, g, new, mode))
        return work

    def child_bytes(self, graph: Graph, plan) -> int:
        """The up- (and gate-) and down-projections of each widened MLP grow by ``new / m``."""
        return grown_bytes(graph, [(g, new) for _, g, new, _ in plan])

    def call(self, graph: Graph, ctx: PassContext, plan) -> None:
        for _, g, new, mode in plan:
            widen_group(graph, ctx, g, new, mode=mode)
