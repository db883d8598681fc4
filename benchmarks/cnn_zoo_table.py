"""The architecture x morph table: deepen, widen --factor 2, grow-kernel --kernel 5 on real CNN exports.

For each architecture (the small ones of ``tests/cnn_models.py`` in three exports, and torchvision
models built with random weights at 3x64x64) and each morph, runs ``PassManager`` (verification in
ONNX Runtime under the pass's contract), measures the child's max relative output error against
the parent itself (max |child - parent| / max |parent| on a fresh random batch), lowers the child
to torch and takes one SGD step. A refusal is recorded with its one-line reason.

    python benchmarks/cnn_zoo_table.py [--small-only] [--torchvision-only] [--arch NAME ...]
    python benchmarks/cnn_zoo_table.py --hybrids [--exports ts dynamo]   # timm CNNs and hybrids

Prints one JSON object (``rows``: architecture, export, morph, result, error, nodes, params, seconds).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

MORPHS = {
    "deepen": ("deepen", {}),
    "widen": ("widen", {"factor": 2.0}),
    "grow-kernel": ("grow-kernel", {"kernel": 5, "level": "all"}),
}
TORCHVISION = ("resnet18", "resnet50", "mobilenet_v2", "mobilenet_v3_small", "efficientnet_b0",
               "regnet_x_400mf", "convnext_tiny", "shufflenet_v2_x0_5", "squeezenet1_1", "googlenet",
               "densenet121")


def run_ort(path_or_model, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    import netmorph

    data = path_or_model if isinstance(path_or_model, bytes) else \
        netmorph.to_onnx(path_or_model).SerializeToString()
    s = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    return s.run(None, {s.get_inputs()[0].name: x})[0]


def rel_error(parent, child, size: int, batch: int = 2, seed: int = 1) -> float:
    x = np.random.default_rng(seed).standard_normal((batch, 3, size, size)).astype(np.float32)
    a, b = run_ort(parent, x), run_ort(child, x)
    return float(np.max(np.abs(a - b)) / max(float(np.max(np.abs(a))), 1e-30))


def train_step(child, size: int, batch: int = 2) -> float:
    import torch

    import netmorph

    m = netmorph.lower(child).train()
    opt = torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(batch, 3, size, size)
    out = m(x)
    out = out[0] if isinstance(out, (tuple, list)) else out
    loss = torch.nn.functional.cross_entropy(out, torch.arange(batch) % out.shape[1])
    opt.zero_grad()
    loss.backward()
    opt.step()
    return float(loss.detach())


def grow_row(arch: str, export: str, path: Path, morph: str, size: int, batch: int = 2) -> dict:
    from netmorph.passes import PassManager, get_pass

    import netmorph
    from netmorph.errors import NetmorphError

    name, opts = MORPHS[morph]
    g = netmorph.load(path)
    row = {"arch": arch, "export": export, "morph": morph}
    t0 = time.perf_counter()
    try:
        child, (rep,) = PassManager(batches=1, batch_size=batch).run(g, [get_pass(name, **opts)])
    except NetmorphError as e:
        row.update(result="refused", reason=str(e).strip().splitlines()[0], seconds=time.perf_counter() - t0)
        return row
    row["seconds"] = time.perf_counter() - t0
    row.update(result="ok", nodes=f"{len(g.nodes)}->{len(child.nodes)}",
               params=f"{rep.params_before}->{rep.params_after}",
               verify_max_rel=rep.verification["max_rel"], timings=rep.timings,
               max_rel_error=rel_error(g, child, size, batch),
               skipped=[d["skipped"] for d in rep.details if "skipped" in d],
               changes=len([d for d in rep.details if "skipped" not in d]))
    try:
        row["train_loss"] = train_step(child, size, batch)
    except Exception as e:  # noqa: BLE001 - recorded in the table, not hidden
        row["train_error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small-only", action="store_true")
    ap.add_argument("--torchvision-only", action="store_true")
    ap.add_argument("--arch", nargs="*", help="only these architectures")
    ap.add_argument("--morph", nargs="*", choices=list(MORPHS), help="only these morphs")
    ap.add_argument("--hybrids", action="store_true", help="timm CNNs and hybrids (tests/hybrid_models.py)")
    ap.add_argument("--exports", nargs="*", default=["ts"], help="with --hybrids: ts and/or dynamo")
    args = ap.parse_args()
    import cnn_models

    rows = []
    morphs = args.morph or list(MORPHS)
    with tempfile.TemporaryDirectory() as d:
        if args.hybrids:
            import hybrid_models
            import torch

            for arch, make in hybrid_models.HYBRIDS.items():
                if args.arch and arch not in args.arch:
                    continue
                size = 64 if arch in ("fastvit", "levit") else 32
                for how in args.exports:
                    torch.manual_seed(0)
                    model = hybrid_models.randomised(make())
                    p = cnn_models.export(model, Path(d) / f"{arch}-{how}.onnx", how, size=size)
                    for m in morphs:
                        rows.append(grow_row(arch, how, p, m, size))
                        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
            args.small_only, args.torchvision_only = True, True
        if not args.torchvision_only:
            for arch, make in cnn_models.ARCHS.items():
                if args.arch and arch not in args.arch:
                    continue
                for how in cnn_models.EXPORTS:
                    import torch

                    torch.manual_seed(0)
                    p = cnn_models.export(cnn_models.randomised(make()), Path(d) / f"{arch}-{how}.onnx", how)
                    for m in morphs:
                        rows.append(grow_row(arch, how, p, m, 32))
                        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
        if not args.small_only:
            for arch in TORCHVISION:
                if args.arch and arch not in args.arch:
                    continue
                p = cnn_models.export(cnn_models.torchvision_model(arch), Path(d) / f"{arch}.onnx", "ts",
                                      size=64)
                for m in morphs:
                    rows.append(grow_row(f"torchvision.{arch}", "ts", p, m, 64))
                    print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    print(json.dumps({"benchmark": "cnn_zoo_table", "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
