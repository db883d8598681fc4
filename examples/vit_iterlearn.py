"""Reduced-scale IterLearn vs FixLearn with a ViT on the CIFAR-10 subset (CPU, ~20 minutes).

IterLearn: a 2-layer ViT (torchvision's layout: 32x32 images, 4x4 patches, hidden 32, 4 heads,
MLP 64) is trained, grown with ``deepen`` (2 -> 4 -> 8 layers, identity layers with zero
out-projections) and ``widen-hidden --factor 2`` (hidden 64, 8 heads, MLP 128), each growth
verified in ONNX Runtime, and trained again after every growth. FixLearn: the final
architecture (8 layers, hidden 64) from scratch, trained for the same total epochs. Every step
is a ``netmorph`` command (printed); results go to ``OUT/results.json``.

    python examples/vit_iterlearn.py --out runs/vit --epochs 3 --train 2500
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
DATA = Path("data") / "cifar10_small.npz"  # relative to the working folder: netmorph data prepare makes it


def export_vit(path: Path, layers: int, hidden: int, heads: int, mlp: int, seed: int) -> None:
    import torch
    import transformer_models as tm

    torch.manual_seed(seed)
    # torchvision's layout (conv patches, class token, pre-LN nn.MultiheadAttention blocks), as run
    # for docs/results.md; tm.vit(...) gives torchvision's own VisionTransformer
    model = tm.ViT(32, 4, layers, heads, hidden, mlp).eval()
    with torch.no_grad(), tm._no_fastpath():
        torch.onnx.export(model, (torch.randn(2, 3, 32, 32),), str(path), dynamo=False, input_names=["x"],
                          output_names=["y"], opset_version=17, dynamic_axes={"x": {0: "N"}, "y": {0: "N"}})


def subset(out: Path, train: int, data: Path) -> Path:
    """``train`` training images (class-balanced, first of each class) and the 1,000 lossless test images."""
    z = np.load(data)
    y = z["y_train"]
    per = train // 10
    idx = np.sort(np.concatenate([np.flatnonzero(y == c)[:per] for c in range(10)]))
    keep = z["test_lossless"]
    path = out / f"cifar10_{train}.npz"
    np.savez(path, x_train=z["x_train"][idx], y_train=y[idx], x_test=z["x_test"][keep],
             y_test=z["y_test"][keep])
    return path


def run(cmd: list[str], log) -> str:
    line = "netmorph " + " ".join(cmd)
    print(line, flush=True)
    log.write(line + "\n")
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "netmorph.cli.main", *cmd], capture_output=True, text=True)
    log.write(p.stdout + p.stderr + f"# {time.perf_counter() - t0:.1f} s, exit {p.returncode}\n")
    log.flush()
    if p.returncode != 0:
        raise SystemExit(f"failed: {line}\n{p.stderr}")
    return p.stdout


def train(model: Path, out: Path, data: Path, epochs: int, args, log) -> dict:
    text = run(["train", str(model), "--data", f"npz:{data}", "--epochs", str(epochs), "--optimizer", "adamw",
                "--schedule", "cosine", "--lr", str(args.lr), "--weight-decay", "0.05", "--warmup", "0.5",
                "--batch-size", "128", "--device", "cpu", "--num-threads", str(args.threads), "--seed", "0",
                "-o", str(out), "--json", "-q"], log)
    return json.loads(text.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("runs/vit"))
    ap.add_argument("--epochs", type=int, default=3, help="epochs per IterLearn stage")
    ap.add_argument("--train", type=int, default=2500, help="training images (class-balanced)")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--only", choices=["iterlearn", "fixlearn"], default=None)
    ap.add_argument("--data", type=Path, default=DATA, help="the CIFAR-10 subset .npz [%(default)s]")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    data = subset(args.out, args.train, args.data)
    results: dict = {"epochs_per_stage": args.epochs, "train_images": args.train,
                     "test_images": "1000 lossless"}
    with open(args.out / "commands.log", "a") as log:
        if args.only in (None, "iterlearn"):
            stages = [("init", None), ("deepen", ["--pass", "deepen"]), ("deepen", ["--pass", "deepen"]),
                      ("widen-hidden", ["--pass", "widen-hidden", "--factor", "2"])]
            model = args.out / "iter_0_init.onnx"
            export_vit(model, 2, 32, 4, 64, seed=0)
            rows = []
            for k, (name, grow) in enumerate(stages):
                if grow is not None:
                    grown = args.out / f"iter_{k}_{name}.onnx"
                    rows_out = run(["grow", str(model), *grow, "-o", str(grown)], log)
                    model = grown
                    log.write(rows_out)
                trained = args.out / f"iter_{k}_trained.onnx"
                m = train(model, trained, data, args.epochs, args, log)
                inspect = run(["inspect", "--json", str(trained)], log)
                st = json.loads(inspect)["structure"]
                rows.append({"stage": k, "grow": name, "layers": st["layers"], "hidden": st["hidden"],
                             "heads": st["heads"], "test_err": m["test_err"], "train_err": m["train_err"],
                             "seconds": m["seconds"]})
                model = trained
                results["iterlearn"] = rows
                (args.out / "results.json").write_text(json.dumps(results, indent=2))
        if args.only in (None, "fixlearn"):
            model = args.out / "fix_8x64.onnx"
            export_vit(model, 8, 64, 8, 128, seed=1)
            m = train(model, args.out / "fix_8x64_trained.onnx", data, 4 * args.epochs, args, log)
            results["fixlearn"] = {"layers": 8, "hidden": 64, "heads": 8, "epochs": 4 * args.epochs,
                                   "test_err": m["test_err"], "train_err": m["train_err"],
                                   "seconds": m["seconds"]}
            (args.out / "results.json").write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
