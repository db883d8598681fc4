"""Seconds of comparing one output of two models, at the size of GPT-2's logits: one JSON object.

``compare_output`` (the comparison behind every verification) on four batches of ``(b, 128,
50257)`` float32 logits (b = 2, 2, 3, 1: 51 M elements, what ``benchmarks/scale.py``'s GPT-2 small
row compares per run of the child) under the calibrated rule with per-element noise. Prints the
median of ``--repeat`` runs and the report's statistics (so two versions can be checked to agree).

    python benchmarks/compare_cost.py [--vocab 50257] [--repeat 3] [--quick]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np


def main() -> None:
    from netmorph.verification.compare import compare_output
    from netmorph.verification.tolerance import Tolerance

    ap = argparse.ArgumentParser()
    ap.add_argument("--vocab", type=int, default=50257)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="a 512-way output (a smoke run)")
    args = ap.parse_args()
    if args.quick:
        args.vocab = 512
    rng = np.random.default_rng(0)
    pairs = []
    for b in (2, 2, 3, 1):
        a = rng.standard_normal((b, args.seq, args.vocab), dtype=np.float32)
        pairs.append((a, a + np.float32(1e-7) * rng.standard_normal(a.shape, dtype=np.float32)))
    noise = [np.full((1, args.seq, args.vocab), 1e-6) for _ in pairs]
    tol = Tolerance(rtol=0.0, atol=0.0, kind="calibrated")
    seconds = []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        d = compare_output("logits", pairs, tol, 1e-6, noise, 8.0)
        seconds.append(time.perf_counter() - t0)
    print(json.dumps({
        "elements": sum(int(a.size) for a, _ in pairs), "median_s": round(float(np.median(seconds)), 3),
        "seconds": [round(x, 3) for x in seconds], "max_abs": d.max_abs, "median_abs": d.median_abs,
        "p99_abs": d.p99_abs, "ratio": d.ratio, "n_failed": d.n_failed, "worst_index": list(d.worst_index)}))


if __name__ == "__main__":
    main()
