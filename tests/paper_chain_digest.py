"""Reference of the paper's growth chains (PlainNet 7 -> 100, ResNet(0.5) 8 -> 98) as the CLI writes them.

For each ``netmorph grow --pass deepen`` step of each chain, two things are recorded:

- **structure, bit for bit** (``tests/data/paper_chains.json``): a SHA-256 of every node (name,
  op, inputs, outputs, attributes), and one of the graph's typed interface and value_info, every
  parameter's name, dtype and shape, the bytes of every non-float parameter, and the lineage the
  grow report gives for every created or changed parameter;
- **float weights, to a tolerance** (``tests/data/paper_chains.npz``): per float parameter a
  fingerprint of :data:`FINGERPRINT` numbers (mean, mean |x|, max |x|, then the values at up to
  :data:`SAMPLES` fixed positions). The solvers' weights come out of LAPACK (QR in the exact
  split), whose last bits differ across BLAS builds and CPU kernels; every fingerprint entry must
  lie within ``RTOL * max|x| + ATOL`` of the reference (each entry moves at most as much as the
  largest element does, so this bounds the elementwise change at the sampled positions and on
  average). Measured between OpenBLAS's Haswell and Katmai/Prescott kernels: at most 4e-13 x max|x|.

``python tests/paper_chain_digest.py --write`` regenerates both files with the git commit that
computed them; the regression test (``tests/test_cnn_regression.py``) grows the same chains with
the current code and compares.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "tests" / "data" / "paper_chains.json"
WEIGHTS = ROOT / "tests" / "data" / "paper_chains.npz"
CHAINS = {
    "plainnet7": (ROOT / "examples" / "plainnet7.onnx", 5),
    "resnet8_r05": (ROOT / "examples" / "resnet8_r05.onnx", 4),
}
SAMPLES = 8
FINGERPRINT = "mean, mean |x|, max |x|, x[p] at up to 8 fixed positions p"
RTOL, ATOL = 1e-6, 1e-9


def float_params(model) -> list[tuple[str, np.ndarray]]:
    """``(name, array)`` of every floating-point initializer of ``model``, sorted by name."""
    from onnx import numpy_helper

    arrs = ((t.name, numpy_helper.to_array(t)) for t in model.graph.initializer)
    return sorted((n, a) for n, a in arrs if np.issubdtype(a.dtype, np.floating))


def positions(size: int) -> np.ndarray:
    """The sampled flat positions of a tensor of ``size`` elements (a function of the size alone)."""
    return np.sort(np.random.default_rng(size).choice(size, min(SAMPLES, size), replace=False))


def fingerprint(arr: np.ndarray) -> np.ndarray:
    x = np.asarray(arr, np.float64).ravel()
    if not x.size:
        return np.zeros(3)
    return np.concatenate([[x.mean(), np.abs(x).mean(), np.abs(x).max()], x[positions(x.size)]])


def fingerprints(model) -> np.ndarray:
    """The fingerprints of every float parameter of ``model``, concatenated in name order."""
    return np.concatenate([fingerprint(a) for _, a in float_params(model)] or [np.zeros(0)])


def mismatches(model, got: np.ndarray, ref: np.ndarray) -> list[str]:
    """Float parameters of ``model`` whose fingerprint in ``got`` is off ``ref``'s by more than the
    tolerance, each with its worst excess; empty when all agree (the layout is ``model``'s)."""
    if got.shape != ref.shape:
        return [f"fingerprint length {got.size} != reference {ref.size}"]
    bad, at = [], 0
    for name, arr in float_params(model):
        n = 3 + (min(SAMPLES, arr.size) if arr.size else 0)
        g, r = got[at:at + n], ref[at:at + n]
        tol = RTOL * abs(r[2]) + ATOL
        err = float(np.abs(g - r).max())
        if not err <= tol:
            bad.append(f"{name}: off by {err:.3g} (tolerance {tol:.3g})")
        at += n
    return bad


def structure_digest(model, lineage: dict) -> dict:
    """Bit-for-bit digest of everything but the float weights' values.

    ``nodes`` hashes every node (name, op, inputs, outputs, attributes); ``structure`` hashes the
    interface and value_info types, every parameter's name, dtype and shape, the bytes of every
    non-float parameter, and ``lineage`` (the grow report's, per created or changed parameter)."""
    from onnx import numpy_helper

    hn, hs = hashlib.sha256(), hashlib.sha256()
    for n in model.graph.node:
        attrs = sorted((a.name, a.SerializeToString(deterministic=True).hex()) for a in n.attribute)
        hn.update(json.dumps([n.name, n.op_type, list(n.input), list(n.output), attrs]).encode())
    g = model.graph
    for part in (g.input, g.output, g.value_info):
        for v in part:
            hs.update(v.SerializeToString(deterministic=True))
    for t in sorted(g.initializer, key=lambda t: t.name):
        arr = numpy_helper.to_array(t)
        hs.update(json.dumps([t.name, str(arr.dtype), list(arr.shape)]).encode())
        if not np.issubdtype(arr.dtype, np.floating):
            hs.update(arr.tobytes())
    hs.update(json.dumps(lineage, sort_keys=True).encode())
    return {"nodes": hn.hexdigest(), "structure": hs.hexdigest(), "n_nodes": len(g.node),
            "n_params": len(g.initializer)}


def grow_chain(src: Path, steps: int, workdir: Path) -> list[Path]:
    """Apply ``netmorph grow --pass deepen`` ``steps`` times (in-process CLI); the written files."""
    from click.testing import CliRunner
    from netmorph.cli.main import cli

    out, cur = [], src
    for i in range(1, steps + 1):
        dst = workdir / f"{src.stem}.step{i}.onnx"
        res = CliRunner().invoke(cli, ["grow", str(cur), "--pass", "deepen", "-o", str(dst),
                                       "--report", str(dst.with_suffix(".json"))])
        if res.exit_code != 0:
            raise RuntimeError(f"step {i} of {src.name}: {res.output}")
        out.append(dst)
        cur = dst
    return out


def lineage_of(step: Path) -> list:
    """The lineage records of the grow report written next to ``step``."""
    report = json.loads(step.with_suffix(".json").read_text())
    return [p.get("lineage") for p in report["passes"]]


def compute(workdir: Path) -> tuple[dict, dict]:
    """``({chain: [structure digest per step]}, {"chain.step": fingerprints})``."""
    import onnx

    digests, weights = {}, {}
    for name, (src, steps) in CHAINS.items():
        digests[name] = []
        for i, path in enumerate(grow_chain(src, steps, workdir), 1):
            m = onnx.load(str(path))
            digests[name].append(structure_digest(m, lineage_of(path)))
            weights[f"{name}.{i}"] = fingerprints(m)
    return digests, weights


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--write", action="store_true",
                    help=f"write {REFERENCE.relative_to(ROOT)} and {WEIGHTS.relative_to(ROOT)}")
    args = ap.parse_args()
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    with tempfile.TemporaryDirectory() as d:
        digests, weights = compute(Path(d))
    doc = {"computed_at_commit": commit, "fingerprint": FINGERPRINT, "rtol": RTOL, "atol": ATOL,
           "chains": digests}
    if args.write:
        REFERENCE.write_text(json.dumps(doc, indent=1) + "\n")
        np.savez_compressed(WEIGHTS, **weights)
    json.dump(doc, sys.stdout, indent=1)


if __name__ == "__main__":
    main()
