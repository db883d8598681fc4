"""Net2WiderNet on arrays: grow a channel axis exactly by copying channels.

A channel group of ``old`` channels becomes ``new`` channels through an index ``mapping`` of
length ``new`` whose first ``old`` entries are ``0 … old-1`` (the old channels stay where they
were) and whose remaining entries name the channel each new one copies. Producers (whose output
channels form the group) gather along their output axis; consumers (whose input channels read
the group) gather along their input axis and divide every column by its channel's replication
count, so the consumer's sum over the widened axis equals its sum over the old one. Per-channel
parameters (bias, BatchNorm gamma/beta/mean/var, PReLU slopes, LayerNorm over channels) gather
without division.
"""

from __future__ import annotations

import numpy as np

from ..errors import PreconditionError

MAPPING_MODES = ("random", "round-robin")


def channel_mapping(old: int, new: int, *, mode: str = "random",
                    rng: np.random.Generator | None = None) -> np.ndarray:
    """An int64 index of length ``new``: ``[0 … old-1]`` then the channel each new one copies.

    ``mode='random'`` draws the copied channels uniformly (Net2Net), ``'round-robin'`` takes
    ``0, 1, …, old-1, 0, 1, …`` so replication counts differ by at most one.
    """
    old, new = int(old), int(new)
    if old <= 0:
        raise PreconditionError(f"cannot widen a group of {old} channels")
    if new < old:
        raise PreconditionError(f"widen to {new} channels: fewer than the {old} there are")
    if mode not in MAPPING_MODES:
        raise PreconditionError(f"mapping mode {mode!r} is not one of {', '.join(MAPPING_MODES)}")
    extra = new - old
    if mode == "round-robin":
        tail = np.arange(extra, dtype=np.int64) % old
    else:
        rng = rng if rng is not None else np.random.default_rng(0)
        tail = rng.integers(0, old, size=extra, dtype=np.int64)
    return np.concatenate([np.arange(old, dtype=np.int64), tail])


def group_mapping(mapping_of_groups: np.ndarray, group_size: int) -> np.ndarray:
    """Expand a mapping over whole groups (grouped/depthwise convs) into a channel mapping."""
    g = np.asarray(mapping_of_groups, dtype=np.int64)
    return (g[:, None] * group_size + np.arange(group_size, dtype=np.int64)[None, :]).reshape(-1)


def replication_counts(mapping: np.ndarray, old: int) -> np.ndarray:
    """How many times each old channel appears in ``mapping`` (length ``old``, all ≥ 1)."""
    counts = np.bincount(np.asarray(mapping, dtype=np.int64), minlength=int(old))
    if counts.shape[0] != old or (counts[:old] == 0).any():
        raise PreconditionError("a channel mapping must keep every old channel")
    return counts


def widen_producer(w: np.ndarray, mapping: np.ndarray, axis: int = 0) -> np.ndarray:
    """Rows (output channels) of a producer's weight or bias, copied by ``mapping``."""
    return np.take(np.asarray(w), np.asarray(mapping, dtype=np.int64), axis=axis)


def widen_per_channel(p: np.ndarray, mapping: np.ndarray, axis: int = 0) -> np.ndarray:
    """A per-channel parameter (norm gamma/beta/mean/var, PReLU slope) following ``mapping``."""
    p = np.asarray(p)
    if p.ndim == 0 or p.shape[axis] == 1:  # broadcast (shared PReLU slope, scalar)
        return p
    return np.take(p, np.asarray(mapping, dtype=np.int64), axis=axis)


def divisors(mapping: np.ndarray, old: int) -> np.ndarray:
    """For each new channel, the replication count of the channel it copies (float64)."""
    counts = replication_counts(mapping, old)
    return counts[np.asarray(mapping, dtype=np.int64)].astype(np.float64)


def widen_consumer(w: np.ndarray, mapping: np.ndarray, old: int, axis: int = 1) -> np.ndarray:
    """Columns (input channels) of a consumer's weight, copied and divided by replication counts.

    ``w`` keeps its dtype; the division is done in float64 and cast back.
    """
    w = np.asarray(w)
    taken = np.take(w, np.asarray(mapping, dtype=np.int64), axis=axis).astype(np.float64)
    shape = [1] * w.ndim
    shape[axis] = -1
    return (taken / divisors(mapping, old).reshape(shape)).astype(w.dtype)
