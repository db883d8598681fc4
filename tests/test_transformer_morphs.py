"""The transformer morph rules on arrays (``netmorph.morphs.transformer``), exact in float64."""

from __future__ import annotations

import numpy as np

from netmorph.morphs.transformer import (
    clone_embedding,
    clone_layer_norm,
    clone_linear,
    fresh_units,
    gather,
    head_index,
    interleave_heads,
    tile_index,
    zero_rows,
)


def _ln(x, g, b, eps=1e-5):
    mu = x.mean(-1, keepdims=True)
    var = x.var(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * g + b


def test_cloned_linear_maps_copies_to_copies(rng):
    for n in (2, 3):
        w, b = rng.standard_normal((8, 5)), rng.standard_normal(5)  # x @ w: (in, out)
        h = rng.standard_normal((4, 8))
        w2 = clone_linear(w, n, in_axis=0, out_axis=1)
        assert w2.shape == (8 * n, 5 * n)
        np.testing.assert_allclose(np.tile(h, n) @ w2 + np.tile(b, n), np.tile(h @ w + b, n), atol=1e-12)
        # the same weight as the pass builds it: gathers by tile_index, the input axis divided by n
        same = gather(gather(w, tile_index(5, n), 1), tile_index(8, n), 0, divide=n)
        np.testing.assert_array_equal(same, w2)


def test_fused_qkv_blocks_repeat_in_place(rng):
    w = rng.standard_normal((4, 9))  # [Q | K | V], 3 units each
    w2 = clone_linear(w, 2, in_axis=None, out_axis=1, out_blocks=3)
    q, k, v = np.split(w2, 3, axis=1)
    np.testing.assert_array_equal(q, np.tile(w[:, :3], 2))
    np.testing.assert_array_equal(v, np.tile(w[:, 6:], 2))


def test_layer_norm_and_embedding_clones_are_exact(rng):
    g, b = rng.standard_normal(6), rng.standard_normal(6)
    h = rng.standard_normal((3, 6))
    g2, b2 = clone_layer_norm(g, b, 2)
    np.testing.assert_allclose(_ln(np.tile(h, 2), g2, b2), np.tile(_ln(h, g, b), 2), atol=1e-12)
    table = rng.standard_normal((10, 6))
    np.testing.assert_array_equal(clone_embedding(table, 2)[[3, 7]], np.tile(table[[3, 7]], 2))


def test_head_size_growth_interleaves_heads(rng):
    w = rng.standard_normal((2, 8))  # 2 heads of 4
    out = interleave_heads(w, 1, heads=2, n=2)
    np.testing.assert_array_equal(out[:, :8], np.tile(w[:, :4], 2))
    np.testing.assert_array_equal(out, gather(w, head_index(8, 2, 2), 1))


def test_new_heads_are_read_with_weight_zero(rng):
    w_o = rng.standard_normal((8, 5))  # attention width 8 -> 5 outputs
    heads = rng.standard_normal((3, 8))
    new = rng.standard_normal((3, 4))
    w2 = zero_rows(w_o, 4, 0)
    np.testing.assert_array_equal(np.concatenate([heads, new], 1) @ w2, heads @ w_o)
    q = fresh_units(rng.standard_normal((5, 8)), 4, 1, rng)
    assert q.shape == (5, 12) and np.abs(q[:, 8:]).sum() > 0
