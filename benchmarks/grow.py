"""Wall time of ``deepen`` (PlainNet-52 -> 100, ResNet-50 -> 98) including verification, per solver.

Prints one JSON object: for each (model, solver) the median over ``--runs`` of the total time of
``PassManager.run`` and its breakdown (solve: kernel solvers; surgery: graph rewriting and
type inference; check: graph + strict type check; prove: the exact-solver surgery proof of an
approximate pass; verify: ONNX Runtime verification of the child), plus the depth change and the
largest kernel residual / output error seen. ``--quick``: PlainNet-7 -> 10 and ResNet-8 -> 14, one run. Each
configuration is run once more first, uncounted (warm-up).

Also torchvision ResNet-50 (random weights, 3x64x64, TorchScript export with BN folded): generic
``deepen`` (a zero-branch copy after each of its 16 bottlenecks) and ``widen --factor 2`` (every
channel group), verified, with the time split recognise (units / channel groups) / surgery /
check / verify and the ratio of the total to the PlainNet-52 -> 100 exact row. ``--no-resnet50``
skips them (``--quick`` does too).

Transformers (``transformer_rows``): a 12-layer, hidden-256 pre-LN encoder (8 heads, MLP 1024,
TorchScript export) grown by ``deepen`` (12 -> 24 identity layers) and ``widen-hidden --factor
2`` (hidden 512), verified on token ids; same breakdown, recognition included in surgery.
``--quick``: 2 layers, hidden 64.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time


def _bench(graph, solver: str, max_iter: int, runs: int, pass_name: str = "deepen",
           extra: dict | None = None) -> dict:
    from netmorph.passes import PassManager, get_pass

    opts = {"solver": solver} if pass_name == "deepen" else {}
    opts.update(extra or {})
    if solver != "exact":
        opts["max_iter"] = max_iter
    totals, parts = [], {}
    rep = None
    for i in range(runs + 1):  # run 0 warms up (imports, torch / ORT initialisation): not counted
        # time, not accuracy, is measured: an approximate child is reported, never refused
        loose = {} if solver == "exact" else {"rtol": 1e9, "atol": 1e9}
        pm = PassManager(batches=1, batch_size=2, **loose)
        t0 = time.perf_counter()
        _, (rep,) = pm.run(graph, [get_pass(pass_name, **opts)])
        if i == 0:
            continue
        totals.append(time.perf_counter() - t0)
        for k, v in rep.timings.items():
            parts.setdefault(k, []).append(v)
    return {
        "pass": pass_name,
        "nodes": len(graph.nodes),
        "params_after": rep.params_after,
        "solver": solver,
        "max_iter": max_iter if solver != "exact" else None,
        "depth": f"{rep.depth_before}->{rep.depth_after}",
        "convs_solved": len(rep.solves),
        "runs": runs,
        "total_s_median": statistics.median(totals),
        "total_s_all": totals,
        "breakdown_s_median": {k: statistics.median(v) for k, v in parts.items()},
        "max_kernel_residual": rep.max_residual,
        "child_max_abs": rep.verification["max_abs"],
        "child_max_rel": rep.verification["max_rel"],
        "surgery_proof_max_abs": None if rep.surgery_proof is None else rep.surgery_proof.get("max_abs"),
    }


def _resnet50():
    """torchvision ResNet-50, random weights, exported at 3x64x64 (TorchScript, BN folded)."""
    import sys
    import tempfile
    from pathlib import Path

    import netmorph

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from cnn_models import export, torchvision_model

    with tempfile.TemporaryDirectory() as d:
        return netmorph.load(export(torchvision_model("resnet50"), Path(d) / "r50.onnx", "ts", size=64))


def transformer_rows(quick: bool, runs: int) -> list[dict]:
    """``deepen`` and ``widen-hidden`` on a 12-layer, hidden-256 encoder (2 x 64 with ``quick``)."""
    import sys
    import tempfile
    from pathlib import Path

    import numpy as np
    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    import transformer_models as tm
    from netmorph.passes import PassManager, get_pass

    from netmorph import onnx_io

    layers, d = (2, 64) if quick else (12, 256)
    torch.manual_seed(0)
    model = tm.Encoder(norm_first=True, layers=layers, d=d, heads=4 if quick else 8, ff=4 * d).eval()
    with torch.no_grad():  # nn.TransformerEncoder clones one layer: make the layers differ
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    ids = torch.randint(0, tm.VOCAB, (2, tm.SEQ))
    with tempfile.TemporaryDirectory() as tmp, torch.no_grad(), tm._no_fastpath():
        path = Path(tmp) / "encoder.onnx"
        torch.onnx.export(model, (ids,), str(path), dynamo=False, input_names=["x"], output_names=["y"],
                          opset_version=17, dynamic_axes={"x": {0: "N"}, "y": {0: "N"}})
        graph = onnx_io.load(path)
    feeds = [{"x": np.random.default_rng(0).integers(0, tm.VOCAB, (2, tm.SEQ)).astype(np.int64)}]
    rows = []
    for name, opts in (("deepen", {}), ("widen-hidden", {"factor": 2})):
        totals, parts = [], {}
        for i in range(runs + 1):  # run 0 warms up
            t0 = time.perf_counter()
            child, (rep,) = PassManager(inputs=feeds, record_depth=False).run(graph, [get_pass(name, **opts)])
            if i == 0:
                continue
            totals.append(time.perf_counter() - t0)
            for k, v in rep.timings.items():
                parts.setdefault(k, []).append(v)
        rows.append({
            "model": f"transformer-encoder-{layers}x{d}", "pass": rep.pass_name, "runs": runs,
            "params": f"{rep.params_before}->{rep.params_after}",
            "total_s_median": statistics.median(totals), "total_s_all": totals,
            "breakdown_s_median": {k: statistics.median(v) for k, v in parts.items()},
            "child_max_abs": rep.verification["max_abs"], "child_max_rel": rep.verification["max_rel"],
        })
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small models, one run (smoke test)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--optgd-iters", type=int, default=50)
    ap.add_argument("--no-resnet50", action="store_true", help="skip the torchvision ResNet-50 rows")
    ap.add_argument("--no-transformer", action="store_true", help="skip the 12-layer encoder rows")
    args = ap.parse_args()

    import netmorph

    runs = 1 if args.quick else args.runs
    iters = 5 if args.quick else args.optgd_iters
    models = {
        "plainnet": netmorph.build("plain", blocks=2 if args.quick else 17, bn_stats=True, seed=0),
        "resnet_r0.5": netmorph.build("resnet", blocks=1 if args.quick else 8, residual_ratio=0.5,
                                      bn_stats=True, seed=0),
    }
    results = []
    for name, g in models.items():
        for solver in ("exact", "optgd"):
            if name.startswith("resnet") and solver != "exact":
                continue  # ResNet growth uses the dense identity split only: no kernel solver
            results.append({"model": name, **_bench(g, solver, iters, runs)})
    if not (args.quick or args.no_resnet50):
        g = _resnet50()
        base = next(r for r in results if r["model"] == "plainnet" and r["solver"] == "exact")
        for pass_name, extra in (("deepen", {}), ("widen", {"factor": 2.0})):
            row = {"model": "torchvision.resnet50@3x64x64",
                   **_bench(g, "exact", iters, runs, pass_name, extra)}
            row["ratio_to_plainnet52_exact"] = row["total_s_median"] / base["total_s_median"]
            results.append(row)
    if not args.no_transformer:
        results += transformer_rows(args.quick, runs)
    print(json.dumps({
        "benchmark": "grow",
        "quick": args.quick,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "omp_threads": os.environ.get("OMP_NUM_THREADS")},
        "results": results,
    }, indent=2))


if __name__ == "__main__":
    main()
