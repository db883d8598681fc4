"""Growth chains from the command line: every step verified in ONNX Runtime, depths as in the paper."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from click.testing import CliRunner
from netmorph.cli.main import cli
from test_passes_models import torch_plainnet, torch_resnet

import netmorph

PLAIN_DEPTHS = [7, 10, 16, 28, 52, 100]
RESNET_DEPTHS = [8, 14, 26, 50, 98]


def grow(tmp_path, src, dst, *args):
    """Run ``netmorph grow`` in-process; returns (result, report dict or None)."""
    rep = tmp_path / (dst.stem + ".json")
    res = CliRunner().invoke(cli, ["grow", str(src), *args, "-o", str(dst), "--report", str(rep)])
    return res, (json.loads(rep.read_text()) if rep.exists() else None)


def depth(path) -> int:
    return netmorph.recognise(netmorph.load(path)).depth


def relative_to_output_scale(a, b) -> float:
    """max |a - b| over max |a|, on the reference's outputs (1 batch of 2)."""
    rep = netmorph.verify(a, b, batches=1, rtol=1e-4, atol=1e-5)
    x = np.random.default_rng(0).normal(size=(2, 3, 32, 32)).astype(np.float32)
    scale = float(np.max(np.abs(_run(a, x))))
    return rep, rep.max_abs / scale


def _run(path, x):
    import onnxruntime as ort

    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return s.run(None, {s.get_inputs()[0].name: x})[0]


def run_chain(tmp_path, first, depths, *args):
    src = first
    for i, want in enumerate(depths[1:], 1):
        dst = tmp_path / f"step{i}.onnx"
        res, rep = grow(tmp_path, src, dst, "--pass", "deepen", *args)
        assert res.exit_code == 0, res.output
        (p,) = rep["passes"]
        assert p["depth_before"] == depths[i - 1] and p["depth_after"] == want
        assert p["verification"]["ok"], p["verification"]
        assert depth(dst) == want
        assert "deepen" in res.output and f"{depths[i - 1]}->{want}" in res.output
        src = dst
    return src


def test_plainnet_paper_chain_exact(tmp_path):
    """PlainNet 7 -> 10 -> 16 -> 28 -> 52 -> 100 (CIFAR widths), exact solver, five growths."""
    first = netmorph.save(netmorph.build("plain", blocks=2, bn_stats=True, seed=3), tmp_path / "p7.onnx")
    last = run_chain(tmp_path, first, PLAIN_DEPTHS)
    rep, rel = relative_to_output_scale(first, last)
    assert rep.ok, rep.summary()  # every logit within rtol 1e-4 (or 1e-5 absolute) of the original
    assert rel <= 1e-4, rel


def test_resnet_paper_chain_exact(tmp_path):
    """ResNet(r = 0.5) 8 -> 14 -> 26 -> 50 -> 98, exact (dense identity splits)."""
    first = netmorph.save(netmorph.build("resnet", blocks=1, residual_ratio=0.5, bn_stats=True, seed=4),
                          tmp_path / "r8.onnx")
    last = run_chain(tmp_path, first, RESNET_DEPTHS)
    rep, rel = relative_to_output_scale(first, last)
    assert rep.ok, rep.summary()
    assert rel <= 1e-4, rel
    g = netmorph.load(last)
    dup = g.node("level2.block1.dup.conv1").param(1), g.node("level2.block1.dup.conv2").param(1)
    assert all(np.count_nonzero(w[:, :, [0, 2]]) > 0 for w in dup)  # both factors dense


def test_optgd_chain_proves_every_surgery(tmp_path):
    """optgd: approximate contract; each step's surgery is proven with the exact solver and the
    report carries each conv's kernel residual and the child's output error."""
    first = netmorph.save(netmorph.build("plain", blocks=2, channels=(4, 8, 8), bn_stats=True, seed=5),
                          tmp_path / "p7.onnx")
    src = first
    for i, want in enumerate([10, 16], 1):
        dst = tmp_path / f"opt{i}.onnx"
        res, rep = grow(tmp_path, src, dst, "--pass", "deepen", "--solver", "optgd", "--max-iter", "40",
                        "--rtol", "1", "--atol", "1")
        assert res.exit_code == 0, res.output
        (p,) = rep["passes"]
        assert p["contract"]["kind"] == "approx" and p["depth_after"] == want
        assert p["surgery_proof"]["ok"] and p["surgery_proof"]["max_abs"] < 1e-5
        assert p["surgery_proof"]["rtol"] == 1e-4  # the proof ignores the loose --rtol
        assert len(p["solves"]) == (3 if i == 1 else 6)
        assert all(s["method"] == "optgd" and 0 < s["residual"] < 1 for s in p["solves"])
        assert p["verification"]["max_abs"] > 1e-6 and p["verification"]["contract"] == "approx"
        src = dst


def test_torch_exported_plainnet_folded_bn(tmp_path):
    """A torch PlainNet exported in eval mode (BN folded into conv biases) deepens 7 -> 10 -> 16 -> 28."""
    first = torch_plainnet(tmp_path / "tp.onnx")
    g = netmorph.load(first)
    assert "BatchNormalization" not in {n.op_type for n in g.nodes}
    assert all(len(n.inputs) == 3 for n in g.find_nodes("Conv"))
    last = run_chain(tmp_path, first, PLAIN_DEPTHS[:4])
    rep, rel = relative_to_output_scale(first, last)
    assert rep.ok and rel <= 1e-4
    grown = netmorph.load(last)
    assert grown.find_nodes("PRelu") and not grown.find_nodes("BatchNormalization")  # mirrors the export


def test_torch_resnet_deepen_a_stage(tmp_path):
    """A standard (r = 1) torch ResNet export: deepen stage 2 (14 -> 18), then everything (-> 34)."""
    first = torch_resnet(tmp_path / "tr.onnx")
    mid = tmp_path / "tr_l2.onnx"
    res, rep = grow(tmp_path, first, mid, "--pass", "deepen-level", "--level", "2")
    assert res.exit_code == 0, res.output
    (p,) = rep["passes"]
    assert (p["depth_before"], p["depth_after"]) == (14, 18) and p["verification"]["ok"]
    s = netmorph.recognise(netmorph.load(mid))
    assert s.blocks_per_level == [2, 4, 2]
    g = netmorph.load(mid)
    dups = [n for n in g.nodes if ".dup." in n.name]
    assert not [n for n in dups if n.op_type == "Mul"]  # r = 1: the shortcut is the plain identity
    w1, w2 = [n.param(1) for n in dups if n.op_type == "Conv"][:2]
    assert np.abs(w1).max() > 0.1 and np.abs(w2).max() > 0.1  # branch composes to 0, factors non-zero
    last = tmp_path / "tr_all.onnx"
    res, rep = grow(tmp_path, mid, last, "--pass", "deepen")
    assert res.exit_code == 0, res.output
    assert depth(last) == 34
    rep, rel = relative_to_output_scale(first, last)
    assert rep.ok and rel <= 1e-4


def test_a_broken_solver_is_refused(tmp_path, monkeypatch):
    """Perturb F2 as a buggy solver would: verification refuses, exit 1, no output file."""
    import netmorph.solvers as solvers

    real = solvers.split_kernel

    def broken(G, **kw):
        res = real(G, **kw)
        f2 = np.array(res.f2)
        f2[0, 0, 1, 1] += 0.05
        return dataclasses.replace(res, f2=f2)

    monkeypatch.setattr(solvers, "split_kernel", broken)
    model = netmorph.build("plain", blocks=2, channels=(4, 8, 8), bn_stats=True)
    src = netmorph.save(model, tmp_path / "p.onnx")
    out = tmp_path / "child.onnx"
    res, rep = grow(tmp_path, src, out, "--pass", "deepen")
    assert res.exit_code == 1
    assert not out.exists() and rep is None
    line = res.output.strip().splitlines()[-1]
    assert line.startswith(f"netmorph: error: {out} not written: ")
    assert "child differs from its parent" in line
    with pytest.raises(netmorph.errors.VerificationError):
        from netmorph.passes import PassManager, get_pass

        PassManager().run(netmorph.load(src), [get_pass("conv-split", node="level1.block2.conv1")])
