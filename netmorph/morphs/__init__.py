"""The arithmetic of morphs, apart from the graph surgery that places it.

Pure functions on numpy arrays, one small rule per (layer kind, morph), each with the matching
optimizer-state rule beside it (design.md §7). Passes in ``netmorph.passes`` walk residual units
and channel groups and call these; nothing here knows about graphs.

- :mod:`.widen` — Net2WiderNet: channel mappings, producer rows, consumer columns divided by
  replication counts, per-channel parameters (norm statistics, PReLU slopes), whole groups.
- :mod:`.lineage` — where every child parameter came from (:class:`ParamLineage`), and how an
  optimizer's state follows it (:func:`map_state`).
"""

from .lineage import Lineage, ParamLineage, map_state
from .widen import (
    channel_mapping,
    group_mapping,
    replication_counts,
    widen_consumer,
    widen_per_channel,
    widen_producer,
)

__all__ = [
    "Lineage", "ParamLineage", "channel_mapping", "group_mapping", "map_state", "replication_counts",
    "widen_consumer", "widen_per_channel", "widen_producer",
]
