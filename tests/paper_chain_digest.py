"""Digest of the paper's growth chains (PlainNet 7 -> 100, ResNet(0.5) 8 -> 98) as the CLI writes them.

``python tests/paper_chain_digest.py --write`` records, for each chain step, a SHA-256 of every
node (name, op, inputs, outputs, attributes) and of every parameter (name, dtype, shape, bytes) in
``tests/data/paper_chains.json``, together with the git commit that computed it. The regression
test (``tests/test_cnn_regression.py``) grows the same chains with the current code and compares.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "tests" / "data" / "paper_chains.json"
CHAINS = {
    "plainnet7": (ROOT / "examples" / "plainnet7.onnx", 5),
    "resnet8_r05": (ROOT / "examples" / "resnet8_r05.onnx", 4),
}


def graph_digest(path: Path) -> dict:
    """``{"nodes": sha, "params": sha, "n_nodes": int, "n_params": int}`` of an ONNX file."""
    import onnx

    m = onnx.load(str(path))
    hn, hp = hashlib.sha256(), hashlib.sha256()
    for n in m.graph.node:
        attrs = sorted((a.name, a.SerializeToString(deterministic=True).hex()) for a in n.attribute)
        hn.update(json.dumps([n.name, n.op_type, list(n.input), list(n.output), attrs]).encode())
    for t in sorted(m.graph.initializer, key=lambda t: t.name):
        arr = onnx.numpy_helper.to_array(t)
        hp.update(json.dumps([t.name, str(arr.dtype), list(arr.shape)]).encode())
        hp.update(arr.tobytes())
    return {"nodes": hn.hexdigest(), "params": hp.hexdigest(), "n_nodes": len(m.graph.node),
            "n_params": len(m.graph.initializer)}


def grow_chain(src: Path, steps: int, workdir: Path) -> list[dict]:
    """Apply ``netmorph grow --pass deepen`` ``steps`` times (in-process CLI); digests per step."""
    from click.testing import CliRunner
    from netmorph.cli.main import cli

    out, cur = [], src
    for i in range(1, steps + 1):
        dst = workdir / f"{src.stem}.step{i}.onnx"
        res = CliRunner().invoke(cli, ["grow", str(cur), "--pass", "deepen", "-o", str(dst)])
        if res.exit_code != 0:
            raise RuntimeError(f"step {i} of {src.name}: {res.output}")
        out.append(graph_digest(dst))
        cur = dst
    return out


def compute() -> dict:
    with tempfile.TemporaryDirectory() as d:
        return {name: grow_chain(src, steps, Path(d)) for name, (src, steps) in CHAINS.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--write", action="store_true", help=f"write {REFERENCE.relative_to(ROOT)}")
    args = ap.parse_args()
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    doc = {"computed_at_commit": commit, "chains": compute()}
    if args.write:
        REFERENCE.write_text(json.dumps(doc, indent=1) + "\n")
    json.dump(doc, sys.stdout, indent=1)


if __name__ == "__main__":
    main()
