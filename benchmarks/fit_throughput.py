"""Training throughput of netmorph.train.fit: images/s of the on-device augmentation and of whole epochs.

Prints one JSON object. The model is a CIFAR PlainNet-7-like CNN (3 levels, 16/32/64 channels, BN,
ReLU) written in torch, or ``--model X.onnx`` lowered with ``netmorph.lower``; data is the synthetic
task (32x32, 10 classes).

    python benchmarks/fit_throughput.py --quick
    python benchmarks/fit_throughput.py --device cuda --amp bf16 --channels-last --compile
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from torch import nn


def plain_net() -> nn.Module:
    layers: list[nn.Module] = []
    c_in = 3
    for level, c in enumerate((16, 32, 64)):
        for _ in range(2):
            layers += [nn.Conv2d(c_in, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU()]
            c_in = c
        if level < 2:
            layers.append(nn.MaxPool2d(2))
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10)]
    torch.manual_seed(0)
    return nn.Sequential(*layers)


def augment_rate(device: torch.device, batch: int, repeats: int) -> float:
    from netmorph.train import normalize, random_crop_flip

    x = torch.randint(0, 256, (batch, 32, 32, 3), dtype=torch.uint8, device=device).permute(0, 3, 1, 2)
    mean = torch.full((1, 3, 1, 1), 120.0, device=device)
    std = torch.full((1, 3, 1, 1), 60.0, device=device)
    gen = torch.Generator(device=device).manual_seed(0)
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        random_crop_flip(normalize(x, mean, std), 4, True, gen)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return batch / statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: tiny data, 2 epochs")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--amp", choices=["bf16", "fp16"], default=None)
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--images", type=int, default=None, help="training images (synthetic)")
    ap.add_argument("--model", default=None, help="an ONNX model to lower instead of the built-in CNN")
    args = ap.parse_args()

    from netmorph.data import make_synthetic
    from netmorph.train import TrainConfig, fit
    from netmorph.train.device import resolve_device

    n = args.images or (512 if args.quick else 10000)
    epochs = args.epochs or (2 if args.quick else 4)
    splits = make_synthetic(n, max(n // 5, 10))
    if args.model:
        import netmorph

        module = netmorph.lower(netmorph.load(args.model))
    else:
        module = plain_net()
    config = TrainConfig(epochs=epochs, batch_size=args.batch_size, device=args.device, amp=args.amp,
                         channels_last=args.channels_last, compile=args.compile, schedule="constant")
    device = resolve_device(args.device)
    aug = augment_rate(device, args.batch_size, 5 if args.quick else 50)
    result = fit(module, splits.train, splits.test, config, progress=False)
    rates = [r["images_per_s"] for r in result.history]
    steady = rates[1:] or rates  # epoch 1 includes warm-up / compilation
    print(json.dumps({
        "benchmark": "train_throughput", "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "torch": torch.__version__, "threads": torch.get_num_threads(),
        "model": args.model or "plainnet7-like",
        "images": n, "epochs": epochs, "batch_size": args.batch_size, "amp": args.amp,
        "channels_last": args.channels_last, "compile": args.compile,
        "augment_images_per_s_median": round(aug),
        "train_images_per_s_median": round(statistics.median(steady)),
        "train_images_per_s_per_epoch": [round(r) for r in rates],
        "epoch_seconds": [round(r["seconds"], 3) for r in result.history],
        "final_train_loss": result.history[-1]["train_loss"], "final_test_err": result.test_err,
    }))


if __name__ == "__main__":
    main()
