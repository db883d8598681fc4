"""``restore-bn``: an identity BatchNorm after every conv that has none. Exact.

Exporters fold BatchNorms into the convs in inference (the conv gets a bias); this pass puts
identity BatchNorms back so the graph trains like the original architecture.
"""

from __future__ import annotations

from ..errors import PreconditionError
from ..ir import Graph, Node
from .base import Pass, PassContext
from .layers import channels_of, identity_bn_node, insert_chain_after


def _followed_by_bn(node: Node) -> bool:
    readers = node.output.consumers()
    return len(readers) == 1 and readers[0].op_type == "BatchNormalization"


class RestoreBN(Pass):
    """Insert an identity BatchNorm after each ``Conv`` whose output is not read by a BatchNorm."""

    name = "restore-bn"
    summary = "Put an identity BatchNorm after every conv not followed by one (BN-folded exports)."

    def _targets(self, graph: Graph) -> list[Node]:
        return [n for n in graph.find_nodes("Conv") if not _followed_by_bn(n)]

    def requires(self, graph: Graph) -> None:
        if not graph.find_nodes("Conv"):
            raise PreconditionError(f"{self.name}: the model has no Conv node, so there is no BatchNorm "
                                    "to restore")
        targets = self._targets(graph)
        if not targets:
            raise PreconditionError(f"{self.name}: every conv is already followed by a BatchNorm")
        for n in targets:
            channels_of(n.output, f"{self.name}: conv {n.name!r}")

    def call(self, graph: Graph, ctx: PassContext) -> None:
        for conv in self._targets(graph):
            v = conv.output
            bn = identity_bn_node(graph, v, channels_of(v, self.name), name=f"{conv.name}.bn",
                                  dtype=v.type.dtype)
            insert_chain_after(graph, v, [bn], bn.output)
