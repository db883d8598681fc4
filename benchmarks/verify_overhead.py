"""How long `verify_models` takes on a CIFAR PlainNet, against the two bare ORT runs it needs.

Prints one JSON object: medians (seconds) of a full ``verify_models(a, b)`` call (load,
interface check, two ORT sessions, runs, comparison) and of the ORT work alone (session
creation + runs, same settings), and their ratio. ``--quick`` for a smoke run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def plainnet(blocks: int, seed: int = 0) -> onnx.ModelProto:
    """CIFAR PlainNet: stem conv, 3 levels (16/32/64 ch) of ``blocks`` conv-BN-ReLU, GAP, FC."""
    rng = np.random.default_rng(seed)
    nodes, inits, cur, cin, k = [], [], "x", 3, 0

    def conv_bn_relu(cout: int, stride: int) -> None:
        nonlocal cur, cin, k
        w = (rng.standard_normal((cout, cin, 3, 3)) * np.sqrt(2 / (9 * cin))).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"w{k}"))
        bn = (np.ones(cout), np.zeros(cout), rng.normal(0, 0.1, cout), np.ones(cout))
        for n, v in zip("gbmv", bn, strict=True):
            inits.append(numpy_helper.from_array(v.astype(np.float32), f"{n}{k}"))
        nodes.append(helper.make_node("Conv", [cur, f"w{k}"], [f"c{k}"], pads=[1] * 4, strides=[stride] * 2))
        nodes.append(helper.make_node("BatchNormalization", [f"c{k}", f"g{k}", f"b{k}", f"m{k}", f"v{k}"],
                                      [f"n{k}"]))
        nodes.append(helper.make_node("Relu", [f"n{k}"], [f"r{k}"]))
        cur, cin, k = f"r{k}", cout, k + 1

    conv_bn_relu(16, 1)
    for level, ch in enumerate((16, 32, 64)):
        for i in range(blocks):
            conv_bn_relu(ch, 2 if (level and i == 0) else 1)
    inits.append(numpy_helper.from_array(rng.standard_normal((10, 64)).astype(np.float32) * 0.1, "fc"))
    nodes += [helper.make_node("GlobalAveragePool", [cur], ["p"]), helper.make_node("Flatten", ["p"], ["f"]),
              helper.make_node("Gemm", ["f", "fc"], ["logits"], transB=1)]
    g = helper.make_graph(nodes, "plainnet",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 32, 32])],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="small model, few repeats")
    ap.add_argument("--blocks", type=int, default=9, help="conv blocks per level (PlainNet depth 3n+1+1)")
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    blocks, repeats = (2, 2) if args.quick else (args.blocks, args.repeats)

    from netmorph.verification import make_inputs, verify_models
    from netmorph.verification.models import load_model
    from netmorph.verification.session import make_session

    a, b = plainnet(blocks), plainnet(blocks)
    feeds = make_inputs(a, batches=2, batch_size=2)

    def bare() -> None:
        sa = make_session(load_model(a, "a"), optimize=False)
        sb = make_session(load_model(b, "b"), optimize=False)
        for f in feeds:
            sa.run(["logits"], f)
            sb.run(["logits"], f)

    def full() -> None:
        assert verify_models(a, b).ok

    full()  # warm-up (imports, allocator)
    t_full, t_bare = [], []
    for _ in range(repeats):  # interleaved, so drift hits both alike
        t0 = time.perf_counter()
        full()
        t_full.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        bare()
        t_bare.append(time.perf_counter() - t0)
    mf, mb = statistics.median(t_full), statistics.median(t_bare)
    print(json.dumps({
        "benchmark": "verify_overhead", "quick": args.quick, "convs": 1 + 3 * blocks,
        "parameters": sum(int(np.prod(t.dims)) for t in a.graph.initializer),
        "batches": 2, "batch_size": 2, "repeats": repeats,
        "verify_median_s": round(mf, 4), "bare_ort_median_s": round(mb, 4),
        "overhead_ratio": round(mf / mb, 3),
    }))


if __name__ == "__main__":
    main()
