"""Kernel decomposition solvers: composition identity, exact / dense splits, optGD, LSQ, refusals."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from netmorph.solvers import (
    EXACT_SOLVERS,
    SOLVERS,
    compose,
    identity_split,
    offcentre_energy,
    parabola_step,
    split_kernel,
    target_kernel,
)
from netmorph.solvers.composer import Composer


def _he(rng, cout, cin, k, dtype=np.float32):
    return (rng.standard_normal((cout, cin, k, k)) * np.sqrt(2.0 / (cin * k * k))).astype(dtype)


def _same_chain(x, f1, f2):
    """f1 then f2, each with 'same' zero padding (k - 1) // 2."""
    k1, k2 = f1.shape[-1], f2.shape[-1]
    y = F.conv2d(x, torch.from_numpy(f1), padding=(k1 - 1) // 2)
    return F.conv2d(y, torch.from_numpy(f2), padding=(k2 - 1) // 2)


# --------------------------------------------------------------------------- composition


@pytest.mark.parametrize("k1,k2", [(3, 3), (3, 1), (1, 3), (5, 3), (1, 1), (2, 2)])
def test_compose_equals_chained_valid_convolutions(rng, k1, k2):
    f1 = rng.standard_normal((5, 3, k1, k1))
    f2 = rng.standard_normal((4, 5, k2, k2))
    x = torch.from_numpy(rng.standard_normal((2, 3, 11, 11)))
    chain = F.conv2d(F.conv2d(x, torch.from_numpy(f1)), torch.from_numpy(f2))
    h = compose(f1, f2)
    assert h.shape == (4, 3, k1 + k2 - 1, k1 + k2 - 1)
    single = F.conv2d(x, torch.from_numpy(h))
    assert torch.max(torch.abs(chain - single)).item() < 1e-12
    # float32 in, float32 out, still exact to float precision
    h32 = compose(f1.astype(np.float32), f2.astype(np.float32))
    assert h32.dtype == np.float32
    x32 = x.float()
    t1, t2 = torch.from_numpy(f1.astype(np.float32)), torch.from_numpy(f2.astype(np.float32))
    chain32 = F.conv2d(F.conv2d(x32, t1), t2)
    assert torch.max(torch.abs(chain32 - F.conv2d(x32, torch.from_numpy(h32)))).item() < 1e-5 * max(
        1.0, torch.max(torch.abs(chain32)).item())


@pytest.mark.parametrize("k1,k2", [(3, 3), (3, 1), (1, 3), (5, 3)])
def test_composer_matches_compose_and_autograd(rng, k1, k2):
    f1 = torch.from_numpy(rng.standard_normal((5, 3, k1, k1)))
    f2 = torch.from_numpy(rng.standard_normal((4, 5, k2, k2)))
    comp = Composer(k1, k2, torch.device("cpu"), torch.float64)
    h = comp.compose(f1, f2)
    assert np.max(np.abs(h.numpy() - compose(f1.numpy(), f2.numpy()))) < 1e-12
    r = torch.from_numpy(rng.standard_normal(h.shape))
    a, b = f1.clone().requires_grad_(True), f2.clone().requires_grad_(True)
    torch.sum(comp.compose(a, b) * r).backward()
    assert torch.max(torch.abs(a.grad - comp.adjoint_f1(r, f2))).item() < 1e-12
    assert torch.max(torch.abs(b.grad - comp.adjoint_f2(r, f1))).item() < 1e-12
    x1 = f1.permute(0, 2, 3, 1).reshape(-1, 3)
    assert torch.max(torch.abs(comp.matrix_for_f1(f2) @ x1 - h.permute(0, 2, 3, 1).reshape(-1, 3))) < 1e-12
    x2 = f2.permute(1, 2, 3, 0).reshape(-1, 4)
    assert torch.max(torch.abs(comp.matrix_for_f2(f1) @ x2 - h.permute(1, 2, 3, 0).reshape(-1, 4))) < 1e-12


def test_compose_refuses_mismatched_channels():
    with pytest.raises(ValueError, match="f2 reads 4 channels but f1 produces 5"):
        compose(np.zeros((5, 3, 3, 3)), np.zeros((2, 4, 3, 3)))


def test_target_kernel_centres_and_refuses(rng):
    g = rng.standard_normal((2, 3, 3, 3))
    t = target_kernel(g, 3, 3)
    assert t.shape == (2, 3, 5, 5)
    assert np.array_equal(t[:, :, 1:4, 1:4], g)
    assert np.sum(t**2) == pytest.approx(np.sum(g**2))
    with pytest.raises(ValueError, match="does not fit"):
        target_kernel(rng.standard_normal((2, 3, 5, 5)), 3, 1)
    with pytest.raises(ValueError, match="parity"):
        target_kernel(rng.standard_normal((2, 3, 2, 2)), 3, 3)


# --------------------------------------------------------------------------- exact solver


@pytest.mark.parametrize(
    "cout,cin,cmid,K,k1,k2,centre_side",
    [
        (6, 6, 6, 3, 3, 3, "f1"),  # 3 -> 3+3, Cmid = C
        (6, 4, 4, 3, 3, 1, "f2"),  # 3 -> 3+1: f2 is 1x1, f1 must hold G (needs cmid >= cout... 4 < 6?)
        (5, 5, 5, 1, 1, 1, "f1"),  # 1 -> 1+1
        (4, 4, 4, 5, 3, 3, None),  # 5 -> 3+3: needs a 5x5 dense factor
        (4, 5, 9, 3, 3, 3, "f1"),  # cmid > C
        (3, 6, 4, 3, 3, 3, "f2"),  # cmid < cin: other side (cmid >= cout)
        (4, 4, 4, 3, 1, 3, "f1"),  # 3 -> 1+3
    ],
)
def test_exact_split_residual(rng, cout, cin, cmid, K, k1, k2, centre_side):
    g = _he(rng, cout, cin, K)
    possible = centre_side is not None and not (cmid < cout and centre_side == "f2")
    if not possible:
        with pytest.raises(ValueError, match="exact split impossible"):
            split_kernel(g, cmid=cmid, k1=k1, k2=k2, method="exact")
        return
    res = split_kernel(g, cmid=cmid, k1=k1, k2=k2, method="exact", seed=3)
    assert res.exact and res.method == "exact" and res.iterations == 0
    assert res.f1.shape == (cmid, cin, k1, k1) and res.f2.shape == (cout, cmid, k2, k2)
    assert res.f1.dtype == np.float32 and res.f2.dtype == np.float32
    assert res.residual < 1e-6
    h = compose(res.f1.astype(np.float64), res.f2.astype(np.float64))
    g64 = g.astype(np.float64)
    direct = np.linalg.norm(h - target_kernel(g64, k1, k2)) / np.linalg.norm(g64)
    assert res.residual == pytest.approx(direct, rel=1e-9, abs=1e-15)
    centre = res.f1 if centre_side == "f1" else res.f2
    assert offcentre_energy(centre) == 0.0
    assert (res.energy_f1 if centre_side == "f1" else res.energy_f2) == 0.0


def test_exact_split_float64_is_exact_to_1e12(rng):
    g = rng.standard_normal((8, 8, 3, 3))
    res = split_kernel(g, cmid=8, k1=3, k2=3)
    assert res.f1.dtype == np.float64 and res.residual < 1e-12


def test_exact_split_other_side_when_cmid_below_cin(rng):
    g = _he(rng, 3, 6, 3, np.float64)
    res = split_kernel(g, cmid=4, k1=3, k2=3)
    assert res.energy_f2 == 0.0 and res.energy_f1 > 0.5  # f2 is the centre-tap mixer, f1 holds G
    assert res.residual < 1e-12


def test_exact_split_refuses_when_neither_side_works(rng):
    g = _he(rng, 6, 6, 3)
    with pytest.raises(ValueError, match=r"cmid=4 < cin=6.*cmid=4 < cout=6"):
        split_kernel(g, cmid=4, k1=3, k2=3)
    with pytest.raises(ValueError, match=r"too small to hold the kernel"):
        split_kernel(_he(rng, 4, 4, 5), cmid=4, k1=3, k2=3)


@pytest.mark.parametrize(
    "cout,cin,cmid,k1,k2", [(4, 4, 4, 3, 3), (3, 5, 3, 3, 3), (4, 3, 4, 3, 1), (4, 4, 6, 1, 3)]
)
def test_exact_split_same_padding_chain_equals_original_conv_everywhere(rng, cout, cin, cmid, k1, k2):
    g = rng.standard_normal((cout, cin, 3, 3))
    res = split_kernel(g, cmid=cmid, k1=k1, k2=k2, method="exact", seed=1)
    x = torch.from_numpy(rng.standard_normal((2, cin, 9, 9)))
    ref = F.conv2d(x, torch.from_numpy(g), padding=1)
    out = _same_chain(x, res.f1, res.f2)
    assert out.shape == ref.shape
    assert torch.max(torch.abs(out - ref)).item() < 1e-12  # borders included


# --------------------------------------------------------------------------- identity splits


@pytest.mark.parametrize("scale", [0.5, 1.0, -0.3])
@pytest.mark.parametrize("k1,k2", [(3, 3), (5, 3)])
def test_identity_split_dense_is_exact_and_spread(scale, k1, k2):
    c = 8
    res = identity_split(c, k1=k1, k2=k2, scale=scale, seed=2)
    assert res.exact and res.method == "dense"
    assert res.f1.dtype == np.float32 and res.f1.shape == (c, c, k1, k1) and res.f2.shape == (c, c, k2, k2)
    kt = k1 + k2 - 1
    ident = np.zeros((c, c, kt, kt))
    ident[:, :, (kt - 1) // 2, (kt - 1) // 2] = scale * np.eye(c)
    assert np.max(np.abs(compose(res.f1, res.f2) - ident)) < 1e-6
    assert res.residual < 1e-6
    assert res.energy_f1 > 0.5 and res.energy_f2 > 0.5  # neither factor is centre-tap only
    x = torch.from_numpy(np.random.default_rng(5).standard_normal((2, c, 16, 16)).astype(np.float32))
    out = _same_chain(x, res.f1, res.f2)
    assert torch.max(torch.abs(out - scale * x)).item() < 1e-5  # full 16x16 outputs, borders included


def test_identity_split_scale_zero_has_nonzero_dense_factors():
    c = 8
    res = identity_split(c, k1=3, k2=3, scale=0.0, seed=4)
    assert np.std(res.f1) > 0.05 and np.std(res.f2) > 0.05
    assert res.energy_f1 > 0.5 and res.energy_f2 > 0.5
    assert np.max(np.abs(compose(res.f1, res.f2))) < 1e-6
    assert res.residual < 1e-6
    x = torch.from_numpy(np.random.default_rng(6).standard_normal((2, c, 16, 16)).astype(np.float32))
    assert torch.max(torch.abs(F.conv2d(x, torch.from_numpy(res.f1), padding=1))).item() > 0.1
    assert torch.max(torch.abs(_same_chain(x, res.f1, res.f2))).item() < 1e-5


def test_identity_split_exact_is_centre_tap():
    res = identity_split(6, k1=3, k2=3, scale=0.5, method="exact", seed=0)
    assert res.energy_f1 == 0.0 and res.energy_f2 == 0.0 and res.residual < 1e-6
    q = res.f1[:, :, 1, 1].astype(np.float64)
    assert np.allclose(q.T @ q, np.eye(6), atol=1e-6)
    assert np.allclose(res.f2[:, :, 1, 1], 0.5 * res.f1[:, :, 1, 1].T, atol=1e-7)


def test_identity_split_is_deterministic_and_refuses_bad_input():
    a = identity_split(8, k1=3, k2=3, scale=0.5, seed=7)
    b = identity_split(8, k1=3, k2=3, scale=0.5, seed=7)
    c = identity_split(8, k1=3, k2=3, scale=0.5, seed=8)
    assert np.array_equal(a.f1, b.f1) and np.array_equal(a.f2, b.f2) and not np.array_equal(a.f1, c.f1)
    with pytest.raises(ValueError, match="channels >= 2"):
        identity_split(1, k1=3, k2=3, scale=0.5)
    with pytest.raises(ValueError, match="odd kernel sizes"):
        identity_split(4, k1=2, k2=3, scale=0.5)
    with pytest.raises(ValueError, match="method must be one of"):
        identity_split(4, k1=3, k2=3, scale=0.5, method="lsq")


# --------------------------------------------------------------------------- optGD


def _low_rank_smooth(rng, c, rank=2):
    """A 'trained-like' kernel: a few channel outer products times smooth 3x3 spatial profiles."""
    g = np.zeros((c, c, 3, 3))
    for _ in range(rank):
        s = np.outer([0.5, 1.0, 0.5], [0.5, 1.0, 0.5]) + 0.1 * rng.standard_normal((3, 3))
        g += np.einsum("o,c,uv->ocuv", rng.standard_normal(c), rng.standard_normal(c), s)
    return g.astype(np.float32)


def test_parabola_step_is_the_vertex():
    # the paper's worked example (Fig. 6b): l0, l1, l2 at 0, 1, 2 -> eta_opt = 11.12
    assert parabola_step(0.17836769, 0.15257044, 0.12920338, 1.0) == pytest.approx(11.12, abs=0.01)
    a, b, c0, alpha = 2.5, -3.0, 7.0, 0.37
    l = [a * e * e + b * e + c0 for e in (0.0, alpha, 2 * alpha)]
    assert parabola_step(*l, alpha) == pytest.approx(-b / (2 * a), rel=1e-12)
    assert parabola_step(1.0, 1.0, 1.0) == 0.0  # flat: no step


def test_optgd_decreases_monotonically_and_fits_low_rank_kernel(rng):
    g = _low_rank_smooth(rng, 8)
    res = split_kernel(g, cmid=8, k1=3, k2=3, method="optgd", seed=0, max_iter=150)
    assert not res.exact and res.method == "optgd" and res.iterations == 150
    losses = np.array(res.losses)
    assert len(losses) == 151
    assert np.all(np.diff(losses) <= 1e-12 * losses[:-1])
    assert losses[-1] < 0.01 * losses[0]
    assert res.residual < 0.05
    assert res.residual == pytest.approx(np.sqrt(losses[-1]), rel=1e-3)  # float32 cast changes little
    assert res.energy_f1 > 0.3 and res.energy_f2 > 0.3  # spread, unlike the exact solver
    assert np.std(res.f1) == pytest.approx(np.std(res.f2), rel=1e-5)  # balanced factors
    assert res.f1.dtype == np.float32


def test_optgd_is_deterministic_for_a_seed(rng):
    g = _he(rng, 6, 6, 3)
    a = split_kernel(g, cmid=6, k1=3, k2=3, method="optgd", seed=11, max_iter=20)
    b = split_kernel(g, cmid=6, k1=3, k2=3, method="optgd", seed=11, max_iter=20)
    c = split_kernel(g, cmid=6, k1=3, k2=3, method="optgd", seed=12, max_iter=20)
    assert np.array_equal(a.f1, b.f1) and np.array_equal(a.f2, b.f2) and a.losses == b.losses
    assert not np.array_equal(a.f1, c.f1)


def test_optgd_parabola_and_closed_form_steps_agree(rng):
    g = _he(rng, 6, 5, 3, np.float64)
    p = split_kernel(g, cmid=7, k1=3, k2=3, method="optgd", seed=1, max_iter=25, step="parabola")
    c = split_kernel(g, cmid=7, k1=3, k2=3, method="optgd", seed=1, max_iter=25, step="closed")
    assert np.allclose(p.losses, c.losses, rtol=1e-6, atol=0)
    assert np.max(np.abs(p.f1 - c.f1)) < 1e-6 * np.max(np.abs(p.f1))
    assert np.max(np.abs(p.f2 - c.f2)) < 1e-6 * np.max(np.abs(p.f2))


def test_optgd_stops_at_tolerance_and_handles_zero_kernel(rng):
    # 1 -> 1+1 with cmid >= C: an exact factorisation exists, optGD reaches a loose tolerance early
    g = rng.standard_normal((4, 4, 1, 1)).astype(np.float64)
    res = split_kernel(g, cmid=4, k1=1, k2=1, method="optgd", seed=0, max_iter=5000, tol=1e-3)
    assert res.residual <= 1e-3 and res.iterations < 5000
    zero = split_kernel(np.zeros((3, 3, 3, 3), np.float32), cmid=3, k1=3, k2=3, method="optgd")
    assert zero.residual == 0.0 and not np.any(zero.f2)


# --------------------------------------------------------------------------- LSQ


def test_lsq_runs_reports_residual_and_is_monotone(rng):
    g = _he(rng, 6, 6, 3)
    res = split_kernel(g, cmid=6, k1=3, k2=3, method="lsq", seed=0, max_iter=20)
    assert res.method == "lsq" and not res.exact and res.iterations == 20
    losses = np.array(res.losses)
    assert np.all(np.diff(losses[1:]) <= 1e-9 * losses[1:-1])  # alternating exact solves never go up
    assert 0.0 < res.residual < 0.5
    g64 = g.astype(np.float64)
    h = compose(res.f1.astype(np.float64), res.f2.astype(np.float64))
    direct = np.linalg.norm(h - target_kernel(g64, 3, 3)) / np.linalg.norm(g64)
    assert res.residual == pytest.approx(direct, rel=1e-9)


def test_lsq_solves_a_feasible_split_exactly(rng):
    # 3 -> 3+1 with cmid >= cout: G = P F1 has exact solutions; one alternation finds one
    g = rng.standard_normal((4, 5, 3, 3))
    res = split_kernel(g, cmid=6, k1=3, k2=1, method="lsq", seed=0, max_iter=10, tol=1e-9)
    assert res.residual < 1e-9 and res.iterations <= 3


# --------------------------------------------------------------------------- refusals and registry


def test_solver_registry():
    assert {"exact", "optgd", "lsq"} <= set(SOLVERS)
    assert EXACT_SOLVERS == {"exact"}


@pytest.mark.parametrize(
    "g,kwargs,match",
    [
        (np.zeros((2, 2, 3)), {}, r"shape \(Cout, Cin, K, K\)"),
        (np.zeros((2, 2, 3, 1)), {}, "square"),
        (np.zeros((2, 2, 3, 3), np.int64), {}, "floating-point"),
        (np.full((2, 2, 3, 3), np.nan), {}, "NaN"),
        (np.zeros((2, 2, 5, 5)), {"k1": 1, "k2": 3}, "does not fit"),
        (np.zeros((2, 2, 2, 2)), {}, "parity"),
        (np.zeros((2, 2, 3, 3)), {"cmid": 0}, "cmid must be a positive integer"),
        (np.zeros((2, 2, 3, 3)), {"method": "svd"}, "unknown split method 'svd'"),
        (np.zeros((2, 2, 3, 3)), {"method": "lsq", "step": "closed"}, r"does not take option\(s\) \['step"),
        (np.ones((2, 2, 3, 3)), {"method": "optgd", "step": "newton"}, "step must be one of"),
    ],
)
def test_bad_input_raises_clear_value_error(g, kwargs, match):
    args = {"cmid": 2, "k1": 3, "k2": 3, **kwargs}
    with pytest.raises(ValueError, match=match):
        split_kernel(g, **args)


def test_iterative_solvers_restore_torch_threads(rng):
    before = torch.get_num_threads()
    split_kernel(_he(rng, 4, 4, 3), cmid=4, k1=3, k2=3, method="optgd", max_iter=3)
    split_kernel(_he(rng, 4, 4, 3), cmid=4, k1=3, k2=3, method="lsq", max_iter=2)
    assert torch.get_num_threads() == before


def test_cuda_device_runs_or_is_refused_clearly(rng):
    g = _he(rng, 4, 4, 3, np.float64)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            split_kernel(g, cmid=4, k1=3, k2=3, method="optgd", device="cuda")
        return
    cpu = split_kernel(g, cmid=4, k1=3, k2=3, method="optgd", max_iter=20, step="closed")
    gpu = split_kernel(g, cmid=4, k1=3, k2=3, method="optgd", max_iter=20, step="closed", device="cuda")
    assert gpu.residual == pytest.approx(cpu.residual, rel=1e-6)
    assert np.allclose(gpu.f1, cpu.f1, rtol=1e-6, atol=1e-9)
    lsq = split_kernel(g, cmid=4, k1=3, k2=3, method="lsq", max_iter=5, device="cuda")
    assert lsq.residual < 1.0
