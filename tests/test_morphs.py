"""The morph arithmetic on arrays (netmorph/morphs), checked against torch's own conv and linear."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from netmorph.errors import PreconditionError
from netmorph.morphs import channel_mapping, group_mapping, map_state, replication_counts
from netmorph.morphs.deepen import he_normal, identity_kernel, zeros_like
from netmorph.morphs.kernel import grown_pads, pad_kernel
from netmorph.morphs.lineage import ParamLineage
from netmorph.morphs.widen import widen_consumer, widen_per_channel, widen_producer


def conv(x, w, pads, stride=1, dilation=1, groups=1):
    t, left, b, r = pads
    xp = F.pad(torch.from_numpy(x), (left, r, t, b))
    return F.conv2d(xp, torch.from_numpy(w), stride=stride, dilation=dilation, groups=groups).numpy()


@pytest.mark.parametrize("groups,kernel,dilation",
                         [(1, (3, 3), 1), (4, (3, 3), 2), (8, (5, 5), 1), (2, (1, 3), 1)])
def test_identity_kernel_is_the_identity(groups, kernel, dilation):
    x = np.random.default_rng(0).standard_normal((2, 8, 9, 9)).astype(np.float32)
    w = identity_kernel(8, groups, kernel)
    assert w.shape == (8, 8 // groups, *kernel)
    ph, pw = dilation * (kernel[0] // 2), dilation * (kernel[1] // 2)
    np.testing.assert_array_equal(conv(x, w, (ph, pw, ph, pw), dilation=dilation, groups=groups), x)


def test_identity_kernel_refusals():
    with pytest.raises(PreconditionError, match="odd kernel"):
        identity_kernel(4, 1, (2, 2))
    with pytest.raises(PreconditionError, match="groups"):
        identity_kernel(6, 4, (3, 3))


@pytest.mark.parametrize("stride,dilation,groups", [(1, 1, 1), (2, 1, 1), (1, 2, 4), (2, 1, 8)])
def test_pad_kernel_keeps_the_conv(stride, dilation, groups):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 8, 11, 11)).astype(np.float32)
    w = rng.standard_normal((8, 8 // groups, 3, 3)).astype(np.float32)
    pads = [dilation] * 4
    want = conv(x, w, pads, stride, dilation, groups)
    w5 = pad_kernel(w, (5, 5))
    assert w5.shape[2:] == (5, 5) and np.count_nonzero(w5[:, :, 0]) == 0
    got = conv(x, w5, grown_pads(pads, (3, 3), (5, 5), (dilation, dilation)), stride, dilation, groups)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    with pytest.raises(PreconditionError, match="even"):
        pad_kernel(w, (4, 4))


@pytest.mark.parametrize("mode", ["random", "round-robin"])
def test_net2wider_conv_bn_relu_conv(mode):
    """conv(8->6) -> BN -> ReLU -> conv(6->5) keeps its function when 6 channels become 11."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 8, 7, 7)).astype(np.float32)
    w1, b1 = rng.standard_normal((6, 8, 3, 3)).astype(np.float32), rng.standard_normal(6).astype(np.float32)
    gamma, beta = rng.uniform(0.5, 1.5, 6).astype(np.float32), rng.standard_normal(6).astype(np.float32)
    w2 = rng.standard_normal((5, 6, 3, 3)).astype(np.float32)

    def net(w1, b1, gamma, beta, w2):
        h = conv(x, w1, [1] * 4) + b1[None, :, None, None]
        h = np.maximum(h * gamma[None, :, None, None] + beta[None, :, None, None], 0)
        return conv(h, w2, [1] * 4)

    m = channel_mapping(6, 11, mode=mode, rng=np.random.default_rng(3))
    assert list(m[:6]) == list(range(6)) and replication_counts(m, 6).sum() == 11
    got = net(widen_producer(w1, m), widen_producer(b1, m), widen_per_channel(gamma, m),
              widen_per_channel(beta, m), widen_consumer(w2, m, 6))
    np.testing.assert_allclose(got, net(w1, b1, gamma, beta, w2), rtol=1e-4, atol=1e-4)


def test_flatten_linear_columns_follow_each_channel():
    """A Linear after Flatten(C x H x W) reads H·W columns per channel: a group mapping of them."""
    rng = np.random.default_rng(4)
    h = rng.standard_normal((3, 4, 2, 2)).astype(np.float32)
    w = rng.standard_normal((5, 16)).astype(np.float32)
    m = channel_mapping(4, 7, mode="round-robin")
    cols = group_mapping(m, 4)
    wide = widen_producer(h, m, 1).reshape(3, -1)
    np.testing.assert_allclose(wide @ widen_consumer(w, cols, 16, 1).T, h.reshape(3, -1) @ w.T, rtol=1e-5)


def test_optimizer_state_follows_the_mapping():
    m = np.array([0, 1, 2, 0, 0])
    rec = ParamLineage("w", "gather-divide", parent="w", axis=1, index=m,
                       divide=np.array([3.0, 1, 1, 3, 3]))
    s = np.ones((2, 3), np.float32)
    np.testing.assert_allclose(map_state(rec, s, (2, 5), moment=1)[0], [1 / 3, 1, 1, 1 / 3, 1 / 3], rtol=1e-6)
    np.testing.assert_allclose(map_state(rec, s, (2, 5), moment=2)[0], [1 / 9, 1, 1, 1 / 9, 1 / 9], rtol=1e-6)
    assert not map_state(ParamLineage("z", "new"), s, (2, 3)).any()


def test_zero_and_fresh_arrays():
    a = np.ones((3, 2), np.float16)
    z = zeros_like(a)
    assert z.dtype == np.float16 and not z.any()
    w = he_normal((64, 32, 3, 3), np.random.default_rng(0))
    assert abs(float(w.std()) - np.sqrt(2 / (32 * 9))) < 0.01
