"""``restore-bn``: an identity BatchNorm after every conv that has none. Exact.

Exporters fold BatchNorms into the convs in inference (the conv gets a bias); this pass puts
identity BatchNorms back so the graph trains like the original architecture.
"""

from __future__ import annotations

from ..ir import Graph, Node
from .base import Pass, PassContext
from .layers import channels_of, identity_bn_node, insert_chain_after


def _followed_by_bn(node: Node) -> bool:
    readers = node.output.consumers()
    return len(readers) == 1 and readers[0].op_type == "BatchNormalization"


class RestoreBN(Pass):
    """Insert an identity BatchNorm after each ``Conv`` whose output is not read by a BatchNorm.

    A model whose convs all have their BatchNorm (or that has no conv) is left as it is, with a note
    in the report: ``restore-bn`` can start any chain.
    """

    name = "restore-bn"
    summary = "Put an identity BatchNorm after every conv not followed by one (BN-folded exports)."

    def requires(self, graph: Graph) -> list[Node]:
        targets = [n for n in graph.find_nodes("Conv") if not _followed_by_bn(n)]
        for n in targets:
            channels_of(n.output, f"{self.name}: conv {n.name!r}")
        return targets

    def call(self, graph: Graph, ctx: PassContext, plan: list[Node]) -> None:
        if not plan:
            why = ("every conv is already followed by a BatchNorm" if graph.find_nodes("Conv") else
                   "the model has no Conv node")
            ctx.note(morph=self.name, unchanged=f"nothing to restore: {why}")
        for conv in plan:
            v = conv.output
            bn = identity_bn_node(graph, v, channels_of(v, self.name), name=f"{conv.name}.bn",
                                  dtype=v.type.dtype)
            insert_chain_after(graph, v, [bn], bn.output)
