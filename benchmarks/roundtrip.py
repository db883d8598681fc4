"""Benchmark: load + save of a large ONNX model, netmorph versus bare ``onnx``.

Prints one JSON object. A model of ``--mb`` megabytes (a chain of Gemm layers with random
float32 weights) is generated with ``onnx.helper`` in a temporary folder. Each measurement
runs in its own fresh Python process, so one side's allocations cannot help or hurt the
other's:

* ``onnx``: ``onnx.load(path)`` then ``onnx.save(model, out)``;
* ``netmorph``: ``netmorph.load(path)`` then ``netmorph.save(graph, out)``;
* ``netmorph_materialised`` (informational): as ``netmorph`` but every weight is first
  turned into a numpy array (as after a pass or training), so the save streams from arrays.

Memory is the peak resident set size of the worker (Linux ``VmHWM``; ``ru_maxrss``
elsewhere) minus its RSS right after the imports, with the kernel's peak mark reset at that
point (``/proc/self/clear_refs``; otherwise the transient peak of importing would hide the
work's peak). ``ru_maxrss`` is not used on Linux because it also carries the peak inherited
from the parent across fork+exec. RSS sees protobuf's C++ allocations, which ``tracemalloc``
would miss. Time is wall-clock of load + save (netmorph's atomic save includes an fsync;
``onnx.save`` does not fsync, so netmorph pays for durability here).
Runs alternate between the sides; medians of ``--runs`` runs and the ratios netmorph / onnx
are reported. The goal is a ratio of at most 1.3 in both time and memory.

Usage: ``python benchmarks/roundtrip.py [--quick] [--mb 120] [--runs 5]``
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SIDES = ("onnx", "netmorph", "netmorph_materialised")


def make_model(path: Path, megabytes: float, width: int = 1024) -> int:
    """Write a Gemm chain holding about ``megabytes`` MB of float32 weights; returns its size."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    layers = max(1, round(megabytes * 1e6 / (width * width * 4)))
    rng = np.random.default_rng(0)
    nodes, inits = [], []
    prev = "x"
    for i in range(layers):
        w = rng.standard_normal((width, width), dtype=np.float32) / np.float32(np.sqrt(width))
        b = rng.standard_normal(width, dtype=np.float32)
        inits += [numpy_helper.from_array(w, f"fc{i}.w"), numpy_helper.from_array(b, f"fc{i}.b")]
        out = f"h{i}"
        nodes.append(helper.make_node("Gemm", [prev, f"fc{i}.w", f"fc{i}.b"], [out], name=f"fc{i}", transB=1))
        prev = out
        if i < layers - 1:
            nodes.append(helper.make_node("Relu", [out], [f"a{i}"], name=f"relu{i}"))
            prev = f"a{i}"
    g = helper.make_graph(
        nodes, "gemm_chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", width])],
        [helper.make_tensor_value_info(prev, TensorProto.FLOAT, ["N", width])], inits,
    )
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path.stat().st_size


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (Linux ``clear_refs`` 5), so imports do not count."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _peak_rss_kb() -> int:
    """This process's peak RSS in KiB: ``VmHWM`` where Linux has it, else ``ru_maxrss``.

    ``ru_maxrss`` also folds in the peak the process inherited across fork+exec from its
    parent (the benchmark driver, which built the model), so ``VmHWM`` is preferred.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def worker(side: str, src: str, dst: str) -> dict:
    """Run one side in this process; returns seconds and peak-RSS growth in MB."""
    import onnx

    if side != "onnx":
        import netmorph
    gc.collect()
    _reset_peak_rss()
    base = _peak_rss_kb()
    t0 = time.perf_counter()
    if side == "onnx":
        model = onnx.load(src)
        t1 = time.perf_counter()
        onnx.save(model, dst)
    else:
        graph = netmorph.load(src)
        if side == "netmorph_materialised":
            for v in graph.parameters:
                _ = v.const.array
        t1 = time.perf_counter()
        netmorph.save(graph, dst)
    t2 = time.perf_counter()
    peak = _peak_rss_kb()
    return {"load_s": t1 - t0, "save_s": t2 - t1, "total_s": t2 - t0, "peak_mb": (peak - base) / 1024}


def _spawn(side: str, src: Path, dst: Path) -> dict:
    cmd = [sys.executable, __file__, "--worker", side, "--src", str(src), "--dst", str(dst)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    dst.unlink(missing_ok=True)
    return json.loads(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: small model, one run")
    ap.add_argument("--mb", type=float, default=None, help="model size in MB (default 120; quick: 16)")
    ap.add_argument("--runs", type=int, default=None, help="runs per side (default 5; quick: 1)")
    ap.add_argument("--worker", choices=SIDES, help=argparse.SUPPRESS)
    ap.add_argument("--src", help=argparse.SUPPRESS)
    ap.add_argument("--dst", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.src, args.dst)))
        return
    mb = args.mb or (16 if args.quick else 120)
    runs = args.runs or (1 if args.quick else 5)
    with tempfile.TemporaryDirectory(prefix="netmorph-bench-") as d:
        src = Path(d) / "model.onnx"
        size = make_model(src, mb)
        results: dict[str, list[dict]] = {s: [] for s in SIDES}
        for _ in range(runs):
            for side in SIDES:
                results[side].append(_spawn(side, src, Path(d) / f"out-{side}.onnx"))
    med = {
        side: {k: round(statistics.median(r[k] for r in rs), 4) for k in rs[0]}
        for side, rs in results.items()
    }
    ratio = {
        f"{side}_vs_onnx": {
            "time": round(med[side]["total_s"] / med["onnx"]["total_s"], 3),
            "memory": round(med[side]["peak_mb"] / max(med["onnx"]["peak_mb"], 1e-9), 3),
        }
        for side in SIDES[1:]
    }
    print(json.dumps({
        "benchmark": "roundtrip",
        "model_mb": round(size / 1e6, 1),
        "runs": runs,
        "cpu_count": os.cpu_count(),
        "median": med,
        "ratio": ratio,
        "goal_met": all(v["time"] <= 1.3 and v["memory"] <= 1.3 for k, v in ratio.items()
                        if k == "netmorph_vs_onnx"),
        "raw": results,
    }))


if __name__ == "__main__":
    main()
