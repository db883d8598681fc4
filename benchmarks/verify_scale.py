"""What ``verify_models`` costs on mid-size models, against its floor: one ORT run of parent and child.

Models are built in code with random weights (no downloads): a torchvision ResNet-50
(``weights=None``, 224x224 input, dynamic batch) and a GPT-2 small-ish ``transformers`` config
(6 layers, width 512, vocabulary 8192, dynamic batch and sequence). Each is exported once to ONNX
(TorchScript exporter) and verified against itself (parent = child: the comparison is the point,
not the morph).

Per model it prints one JSON object: ``floor_s`` — one ORT session of the parent and its runs on
the batches the verification uses (``make_inputs`` under the checkout's default policy), then
the same for the child (graph optimisations off, as the reference runs; sessions from the file
path); ``verify_s`` — a full ``verify_models(path, path)`` under the default policy
(calibrated, every probe, child run as written and optimised); ``ratio`` = verify / floor;
``peak_rss_gb`` — the process's peak RSS after the verification (``ru_maxrss``), next to
``weights_gb``. Run it once per checkout to compare before/after (same machine, same session)::

    python benchmarks/verify_scale.py --model resnet50
    python benchmarks/verify_scale.py --model gpt2

Each model runs in its own process (so the peak RSS is its own). Keep under ~6 GB:
``prlimit --as=8000000000 python benchmarks/verify_scale.py ...``.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def export_resnet50(path: Path) -> dict[str, np.ndarray]:
    import torch
    from cnn_models import torchvision_models

    torch.manual_seed(0)
    m = torchvision_models().resnet50(weights=None).eval()
    torch.onnx.export(m, torch.randn(1, 3, 224, 224), str(path), dynamo=False, input_names=["x"],
                      output_names=["logits"], dynamic_axes={"x": {0: "N"}, "logits": {0: "N"}})


def export_gpt2(path: Path) -> dict[str, np.ndarray]:
    import torch
    import transformer_models  # noqa: F401 - hides a torchvision that cannot load from transformers
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    cfg = GPT2Config(n_layer=6, n_embd=512, n_head=8, vocab_size=8192, n_positions=256,
                     attn_implementation="eager", resid_pdrop=0, embd_pdrop=0, attn_pdrop=0)
    m = GPT2LMHeadModel(cfg).eval()
    m.config.use_cache = False

    class Logits(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.m = m

        def forward(self, ids):
            return self.m(input_ids=ids, use_cache=False).logits

    ids = torch.randint(0, 8192, (1, 32))
    torch.onnx.export(Logits(), (ids,), str(path), dynamo=True, input_names=["ids"], output_names=["logits"],
                      dynamic_axes={"ids": {0: "N", 1: "T"}, "logits": {0: "N", 1: "T"}})


def floor_seconds(path: Path, feeds: list[dict[str, np.ndarray]]) -> float:
    """One session of the parent and its runs on ``feeds``, then the same for the child (here: the
    same file), graph optimisations off, sessions from the path."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    t0 = time.perf_counter()
    for _ in range(2):
        s = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        for feed in feeds:
            s.run(None, feed)
        del s
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", choices=["resnet50", "gpt2"], required=True)
    ap.add_argument("--tolerance", default=None, help="verify_models' tolerance (default: the policy's)")
    ap.add_argument("--cache", default=None, help="folder to keep the export in and reuse it from")
    ap.add_argument("--export-to", default=None, help=argparse.SUPPRESS)  # the export's own process
    args = ap.parse_args()
    if args.export_to:
        (export_resnet50 if args.model == "resnet50" else export_gpt2)(Path(args.export_to))
        return
    from netmorph.verification import make_inputs, verify_models

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.cache) if args.cache else Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{args.model}.onnx"
        t0 = time.perf_counter()  # exported in a child process: torch never enters this one's RSS
        if not path.exists():
            subprocess.run([sys.executable, __file__, "--model", args.model, "--export-to", str(path)],
                           check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        export_s = time.perf_counter() - t0
        weights = path.stat().st_size + sum(f.stat().st_size for f in folder.glob(f"{args.model}.onnx.*"))
        feeds = make_inputs(str(path))  # the batches verify_models makes under its default policy
        floor = floor_seconds(path, feeds)
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        t0 = time.perf_counter()
        report = verify_models(str(path), str(path), tolerance=args.tolerance)
        verify_s = time.perf_counter() - t0
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({
        "model": args.model, "weights_gb": round(weights / 1e9, 3), "export_s": round(export_s, 2),
        "floor_s": round(floor, 3), "verify_s": round(verify_s, 3), "ratio": round(verify_s / floor, 2),
        "ok": report.ok, "tolerance": report.tolerance, "batches": report.batches,
        "batch_shapes": [{k: list(v.shape) for k, v in f.items()} for f in feeds],
        "peak_rss_gb": round(rss / 1e9, 3), "peak_rss_before_verify_gb": round(rss_before / 1e9, 3),
    }))


if __name__ == "__main__":
    main()
