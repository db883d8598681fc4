"""Benchmark the kernel decomposition solvers; prints one JSON object to stdout.

Cases, for C in 16, 32, 64 (Cmid = C, 3x3 -> 3x3 + 3x3):
  (a) "he":       He-initialised G (an untrained layer);
  (b) "smooth":   a smooth, trained-like G (each 3x3 kernel a random mix of the constant and the two
                  linear ramps, plus 10% noise), scaled to He magnitude;
  (c) "identity": G = (1 - r) Id with r = 0.5 (ResNet block duplication): identity_split (dense and
                  exact) and, for contrast, the generic solvers on the 1x1 kernel 0.5 Id -> 3x3 + 3x3.
Per row: relative kernel residual, wall time (median over --repeats runs), off-centre energy of each
factor (0 = centre-tap only, 8/9 = evenly spread 3x3), factor stds. optGD runs with the closed-form
step (identical iterates to the paper's parabola step, tested; one row per C times the parabola step).

    python benchmarks/solvers.py            # full run, CPU (about 2-3 minutes on a 2-core machine)
    python benchmarks/solvers.py --quick    # smoke run, C = 16 only, few iterations (< 20 s)
    python benchmarks/solvers.py --device cuda   # adds CUDA rows when CUDA is available
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time

import numpy as np

from netmorph.solvers import identity_split, split_kernel

FULL = {"channels": (16, 32, 64), "optgd_iters": {16: 300, 32: 200, 64: 100},
        "lsq_iters": {16: 50, 32: 30, 64: 15}, "long_iters": 3000, "repeats": 3}
QUICK = {"channels": (16,), "optgd_iters": {16: 60}, "lsq_iters": {16: 10}, "long_iters": 0, "repeats": 1}


def he_kernel(rng: np.random.Generator, c: int) -> np.ndarray:
    """He-normal (C, C, 3, 3) float32 kernel."""
    return (rng.standard_normal((c, c, 3, 3)) * np.sqrt(2.0 / (9 * c))).astype(np.float32)


def smooth_kernel(rng: np.random.Generator, c: int) -> np.ndarray:
    """Low-frequency 'trained-like' (C, C, 3, 3) kernel at He magnitude."""
    ramp = np.array([-1.0, 0.0, 1.0])
    basis = np.stack([np.ones((3, 3)), np.outer(ramp, np.ones(3)), np.outer(np.ones(3), ramp)])
    g = np.einsum("ocb,buv->ocuv", rng.standard_normal((c, c, 3)), basis)
    g += 0.1 * np.std(g) * rng.standard_normal(g.shape)
    return (g * np.sqrt(2.0 / (9 * c)) / np.std(g)).astype(np.float32)


def identity_kernel(c: int, scale: float = 0.5) -> np.ndarray:
    """``scale * Id`` as a (C, C, 1, 1) float32 kernel."""
    return (scale * np.eye(c, dtype=np.float32))[:, :, None, None]


def timed(fn, repeats: int, **kwargs):
    """Run ``fn(**kwargs)`` ``repeats`` times; return the last result and all wall times."""
    times, res = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        res = fn(**kwargs)
        times.append(time.perf_counter() - t0)
    return res, times


def row(case: str, c: int, label: str, device: str, res, times) -> dict:
    """One JSON row from a SplitResult."""
    return {
        "case": case, "C": c, "method": label, "device": device, "exact_contract": res.exact,
        "iterations": res.iterations, "residual": res.residual,
        "seconds_median": statistics.median(times), "seconds": [round(t, 4) for t in times],
        "energy_f1": round(res.energy_f1, 4), "energy_f2": round(res.energy_f2, 4),
        "std_f1": float(np.std(res.f1)), "std_f2": float(np.std(res.f2)),
    }


def run(cfg: dict, device: str, seed: int) -> list[dict]:
    """All rows for one device."""
    rows = []
    rng = np.random.default_rng(seed)
    rep = cfg["repeats"]
    for c in cfg["channels"]:
        kernels = {"he": he_kernel(rng, c), "smooth": smooth_kernel(rng, c), "identity": identity_kernel(c)}
        split = {"cmid": c, "k1": 3, "k2": 3, "seed": seed}
        for case, g in kernels.items():
            if device == "cpu" and case == "identity":
                for m in ("dense", "exact"):
                    res, t = timed(identity_split, rep, channels=c, k1=3, k2=3, scale=0.5, method=m,
                                   seed=seed)
                    rows.append(row(case, c, f"identity_split:{m}", device, res, t))
            elif device == "cpu":
                res, t = timed(split_kernel, rep, G=g, method="exact", **split)
                rows.append(row(case, c, "exact", device, res, t))
            it = cfg["optgd_iters"][c]
            res, t = timed(split_kernel, rep, G=g, method="optgd", max_iter=it, device=device, step="closed",
                           **split)
            rows.append(row(case, c, "optgd", device, res, t))
            if case == "he":
                res, t = timed(split_kernel, 1, G=g, method="optgd", max_iter=it, device=device, **split)
                rows.append(row(case, c, "optgd:parabola", device, res, t))
            res, t = timed(split_kernel, rep, G=g, method="lsq", max_iter=cfg["lsq_iters"][c], device=device,
                           **split)
            rows.append(row(case, c, "lsq", device, res, t))
        if cfg["long_iters"] and c == cfg["channels"][0]:
            for case in ("he", "smooth"):
                res, t = timed(split_kernel, 1, G=kernels[case], method="optgd", max_iter=cfg["long_iters"],
                               device=device, step="closed", **split)
                rows.append(row(case, c, f"optgd@{cfg['long_iters']}", device, res, t))
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smoke run (C = 16, few iterations)")
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                    help="cuda: also run the iterative solvers on CUDA (skipped when unavailable)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    import torch

    cfg = QUICK if args.quick else FULL
    t0 = time.perf_counter()
    out = {
        "benchmark": "solvers", "quick": args.quick, "seed": args.seed,
        "python": platform.python_version(), "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "config": {k: ({str(a): b for a, b in v.items()} if isinstance(v, dict) else v)
                   for k, v in cfg.items()},
        "rows": run(cfg, "cpu", args.seed),
    }
    if args.device == "cuda":
        if torch.cuda.is_available():
            out["cuda_device"] = torch.cuda.get_device_name()
            out["rows"] += run(cfg, "cuda", args.seed)
        else:
            out["cuda_skipped"] = "CUDA not available"
    out["total_seconds"] = round(time.perf_counter() - t0, 2)
    json.dump(out, sys.stdout, indent=1)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
