"""The hidden CNN / hybrid zoo: deepen, widen, grow-kernel on timm's own architectures, full size.

Each model is ``timm.create_model(name, pretrained=False, num_classes=10)`` (random weights, norm
statistics and layer scales re-randomised so a wrong morph shows), exported at 3x64x64 with a
dynamic batch axis by TorchScript and by dynamo. Each morph runs through ``PassManager`` (its own
verification in ONNX Runtime); a written child is then run again in ONNX Runtime **with its
default session options** (graph optimisation on, as a user runs it) at batch 3, a batch size
the export never saw, and compared with the parent: ``max_rel`` = max |child - parent| / max |parent|.

status: ``ok`` (written, ``max_rel`` <= 1e-4), ``wrong`` (written but off, or the child fails in
ORT), ``refused`` (a precondition: nothing written), ``rejected`` (netmorph's verification failed:
nothing written), ``crash`` (any other exception: a bug), ``export-failed`` (the exporter's limit).

Not a test (minutes per model on two cores):

    python benchmarks/hybrid_zoo_table.py [--model NAME ...] [--exporter ts dynamo] [--pass deepen ...]

Prints one JSON row per line (model, exporter, pass, status, max_rel, reason, seconds), then a
summary object.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

MODELS = ("seresnext26d_32x4d", "ghostnet_100", "cspresnet50", "cspdarknet53", "dla34", "repvgg_a0",
          "fastvit_t8", "hrnet_w18_small", "efficientformerv2_s0", "levit_128s", "mobilevit_xxs",
          "coat_lite_tiny")
PASSES = {
    "deepen": ("deepen", {}),
    "widen": ("widen", {"factor": 2.0}),
    "grow-kernel": ("grow-kernel", {"kernel": 5, "level": "all"}),
}
SIZE = 64
OK_REL = 1e-4


def build(name: str):
    import torch
    from hybrid_models import randomised, timm

    torch.manual_seed(0)
    kw = {"img_size": SIZE} if name.startswith(("levit", "efficientformerv2", "coat")) else {}
    try:
        m = timm().create_model(name, pretrained=False, num_classes=10, **kw)
    except TypeError:
        m = timm().create_model(name, pretrained=False, num_classes=10)
    return randomised(m)


def ort_run(model_or_bytes, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    import netmorph

    data = str(model_or_bytes) if isinstance(model_or_bytes, Path) else \
        netmorph.to_onnx(model_or_bytes).SerializeToString()  # a Path: its external data beside it
    s = ort.InferenceSession(data, providers=["CPUExecutionProvider"])  # default options: optimised
    return s.run(None, {s.get_inputs()[0].name: x})[0]


def one_row(model: str, exporter: str, path: Path, pname: str) -> dict:
    from netmorph.passes import PassManager, get_pass

    import netmorph
    from netmorph.errors import NetmorphError, VerificationError

    name, opts = PASSES[pname]
    row = {"model": model, "exporter": exporter, "pass": pname}
    t0 = time.perf_counter()
    try:
        g = netmorph.load(path)
        child, (rep,) = PassManager(batches=1, batch_size=2).run(g, [get_pass(name, **opts)])
    except VerificationError as e:
        row.update(status="rejected", max_rel=None, reason=_line(e))
    except NetmorphError as e:
        row.update(status="refused", max_rel=None, reason=_line(e))
    except Exception as e:  # noqa: BLE001 - a crash is a row of the table
        tb = traceback.extract_tb(e.__traceback__)[-1]
        row.update(status="crash", max_rel=None,
                   reason=f"{type(e).__name__}: {_line(e)} ({Path(tb.filename).name}:{tb.lineno})")
    else:
        x = np.random.default_rng(1).standard_normal((3, 3, SIZE, SIZE)).astype(np.float32)
        try:
            a = ort_run(path, x)
            b = ort_run(child, x)
            rel = float(np.max(np.abs(a - b)) / max(float(np.max(np.abs(a))), 1e-30))
            row.update(status="ok" if rel <= OK_REL else "wrong", max_rel=rel,
                       reason="" if rel <= OK_REL else f"child differs from the parent at batch 3: {rel:.3g}")
        except Exception as e:  # noqa: BLE001
            row.update(status="wrong", max_rel=None, reason=f"the child fails in ORT: {_line(e)}")
        skipped = [d["skipped"] for d in rep.details if "skipped" in d]
        if skipped:
            row["skipped"] = len(skipped)
            row["skipped_first"] = skipped[0][:300]
    row["seconds"] = round(time.perf_counter() - t0, 2)
    return row


def _line(e: BaseException) -> str:
    s = str(e).strip().splitlines()
    return (s[0] if s else type(e).__name__)[:400]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", nargs="*", default=list(MODELS))
    ap.add_argument("--exporter", nargs="*", default=["ts", "dynamo"], choices=["ts", "dynamo"])
    ap.add_argument("--pass", dest="passes", nargs="*", default=list(PASSES), choices=list(PASSES))
    args = ap.parse_args()
    import cnn_models

    rows = []
    with tempfile.TemporaryDirectory() as d:
        for model in args.model:
            for exporter in args.exporter:
                p = Path(d) / f"{model}-{exporter}.onnx"
                try:
                    cnn_models.export(build(model), p, exporter, size=SIZE)
                except Exception as e:  # noqa: BLE001 - the exporter's limit, recorded
                    for pname in args.passes:
                        rows.append({"model": model, "exporter": exporter, "pass": pname,
                                     "status": "export-failed", "max_rel": None,
                                     "reason": f"{type(e).__name__}: {_line(e)}"[:300]})
                        print(json.dumps(rows[-1]), flush=True)
                    continue
                for pname in args.passes:
                    rows.append(one_row(model, exporter, p, pname))
                    print(json.dumps(rows[-1]), flush=True)
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    print(json.dumps({"benchmark": "hybrid_zoo_table", "size": SIZE, "rows": len(rows), "counts": counts}))


if __name__ == "__main__":
    main()
