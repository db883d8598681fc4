"""Function-preserving transformer growth on arrays: one small rule per layer kind.

* **Identity layers** (deepening): a copied pre-LN layer is the identity when its branches end
  in zero (:func:`zero_like`: attention out-projection and MLP down-projection weights and
  biases); a post-LN layer is wrapped in a gate ``h + g ⊙ (layer(h) − h)`` with ``g = 0``
  (:func:`zero_gate`, MSG's masked growth), since ``LN(h + 0)`` is not ``h``.
* **MLP width** (Net2Wider): up-projection output units copied by a mapping, down-projection
  input rows divided by the replication counts (:mod:`netmorph.morphs.widen`).
* **New heads**: fresh Q/K/V units (:func:`fresh_units`) and zero rows in the output
  projection (:func:`zero_rows`), so the new heads are read with weight zero.
* **Hidden width** (HyperCloning): every stream vector ``h`` becomes ``[h, …, h]`` (``n``
  copies). A linear layer reading and writing the stream gets ``W.repeat(n, n) / n``
  (:func:`clone_linear`), its bias repeated; a layer that only reads it divides the repeated
  input rows by ``n``; embeddings, position tables, class tokens and LayerNorm gamma/beta are
  repeated without division (:func:`clone_vector`), which keeps LayerNorm exact because the
  mean and variance of ``[h, h]`` are those of ``h``.

Weights here are ``(in, out)`` or ``(out, in)``: every function takes the axes.
"""

from __future__ import annotations

import numpy as np


def zero_like(w: np.ndarray) -> np.ndarray:
    """An all-zero array of ``w``'s shape and dtype (a branch's last layer, made silent)."""
    return np.zeros_like(np.asarray(w))


def zero_gate(width: int, dtype=np.float32) -> np.ndarray:
    """The gate ``g`` of ``h + g ⊙ (layer(h) − h)``: zeros, one per hidden unit (trainable)."""
    return np.zeros((int(width),), dtype=dtype)


def tile_axis(a: np.ndarray, n: int, axis: int) -> np.ndarray:
    """``a`` repeated ``n`` times along ``axis`` as whole blocks (``[a, a]``, not ``[a0, a0, a1 …]``)."""
    reps = [1] * np.ndim(a)
    reps[axis] = int(n)
    return np.tile(np.asarray(a), reps)


def tile_blocks(a: np.ndarray, n: int, axis: int, blocks: int) -> np.ndarray:
    """``a``'s axis split into ``blocks`` equal parts, each repeated ``n`` times in place.

    A fused QKV weight ``[Q | K | V]`` becomes ``[Q, Q | K, K | V, V]`` (``blocks=3``, ``n=2``).
    """
    parts = np.split(np.asarray(a), int(blocks), axis=axis)
    return np.concatenate([tile_axis(p, n, axis) for p in parts], axis=axis)


def clone_vector(v: np.ndarray, n: int, axis: int = -1) -> np.ndarray:
    """A per-unit vector (LayerNorm gamma/beta, bias, embedding row, position, class token) for
    ``[h, …, h]``: repeated ``n`` times along ``axis``, no division."""
    return tile_axis(v, n, axis)


def clone_linear(w: np.ndarray, n: int, *, in_axis: int | None, out_axis: int | None,
                 out_blocks: int = 1) -> np.ndarray:
    """HyperCloning of a linear weight: ``W.repeat(n, n) / n`` for ``[h, …, h]`` in and out.

    ``in_axis``: the axis reading the stream (repeated, divided by ``n``), ``None`` when the
    input does not grow; ``out_axis``: the axis writing it (repeated), ``None`` when the
    output does not grow. ``out_blocks`` repeats each of that many output blocks in place
    (fused QKV).
    """
    w = np.asarray(w)
    out = w
    if out_axis is not None:
        out = tile_blocks(out, n, out_axis, out_blocks)
    if in_axis is not None:
        out = (tile_axis(out, n, in_axis).astype(np.float64) / n).astype(w.dtype)
    return out


def clone_embedding(table: np.ndarray, n: int) -> np.ndarray:
    """An embedding table ``(rows, d)`` for ``[h, …, h]``: columns repeated, no ``1/n``."""
    return clone_vector(table, n, axis=1)


def clone_layer_norm(gamma: np.ndarray, beta: np.ndarray | None, n: int
                     ) -> tuple[np.ndarray, np.ndarray | None]:
    """LayerNorm gamma/beta for ``[h, …, h]`` (exact: equal copies keep mean and variance)."""
    return clone_vector(gamma, n), None if beta is None else clone_vector(beta, n)


def fresh_units(w: np.ndarray, extra: int, axis: int, rng: np.random.Generator) -> np.ndarray:
    """``w`` with ``extra`` new output units along ``axis``, drawn like the existing ones
    (normal with the existing weights' standard deviation)."""
    w = np.asarray(w)
    shape = list(w.shape)
    shape[axis] = int(extra)
    scale = float(np.std(w)) or 0.02
    new = rng.standard_normal(shape).astype(w.dtype) * scale
    return np.concatenate([w, new], axis=axis)


def zero_rows(w: np.ndarray, extra: int, axis: int) -> np.ndarray:
    """``w`` with ``extra`` zero entries appended along ``axis`` (new inputs read with weight 0)."""
    w = np.asarray(w)
    shape = list(w.shape)
    shape[axis] = int(extra)
    return np.concatenate([w, np.zeros(shape, dtype=w.dtype)], axis=axis)


def interleave_heads(w: np.ndarray, axis: int, heads: int, n: int) -> np.ndarray:
    """Per-head blocks repeated ``n`` times inside each head (``heads-mode size``):
    head ``i``'s units ``u`` become ``[u, u]``, heads stay in order."""
    w = np.asarray(w)
    parts = np.split(w, int(heads), axis=axis)
    return np.concatenate([tile_axis(p, n, axis) for p in parts], axis=axis)


def tile_index(size: int, n: int, blocks: int = 1) -> np.ndarray:
    """Gather index of ``[a, …, a]`` (``n`` copies) for an axis of ``size`` made of ``blocks``
    equal parts, each repeated in place (``[Q, Q | K, K | V, V]`` for ``blocks=3``)."""
    part = int(size) // int(blocks)
    return np.concatenate([np.tile(np.arange(b * part, (b + 1) * part, dtype=np.int64), n)
                           for b in range(int(blocks))])


def head_index(size: int, n: int, heads: int) -> np.ndarray:
    """Gather index that repeats each of ``heads`` equal parts ``n`` times in place: head ``i``'s
    units ``u`` become ``[u, u]`` (hidden growth with the head size growing)."""
    return tile_index(size, n, heads)


def gather(w: np.ndarray, index: np.ndarray | None, axis: int, divide: float = 1.0) -> np.ndarray:
    """``take(w, index, axis) / divide`` in ``w``'s dtype (``index=None``: the axis stays)."""
    w = np.asarray(w)
    out = w if index is None else np.take(w, np.asarray(index, dtype=np.int64), axis=axis)
    if divide != 1.0:
        if w.dtype == np.float32 and float(np.float32(divide)) == divide:
            # one correctly rounded float32 division equals the float64 division rounded to float32
            # (53 >= 2 x 24 + 2 bits: double rounding is innocuous for /), without two float64 copies
            d = np.float32(divide)
            out = out / d if out is w else np.divide(out, d, out=out)
        else:
            out = (out.astype(np.float64) / divide).astype(w.dtype)
    return out
