"""Training throughput of a lowered netmorph graph versus the same network written by hand.

Both models are the CIFAR PlainNet (3 levels of conv3x3-BN-ReLU blocks, 16/32/64 channels,
``n`` blocks a level, GlobalAveragePool + Linear): the IR graph is built with
``netmorph.build("plain", blocks=n)`` and lowered with ``netmorph.lower``; the hand-written
``nn.Module`` below is the reference. Both train with the same SGD settings, batch, dtype
and memory format; timed windows alternate between the two (interleaved, order swapped each
window) after a warm-up, and the medians are compared.

Prints one JSON object: images/s of each (median over windows), the ratio lowered/hand
(goal >= 0.98) and the per-window ratios. On a shared CPU, ``cpu_time_ratio_lowered_over_hand``
(images per CPU-second of this process) is less disturbed by other processes than wall time,
and ``same_aten_ops_per_step`` says whether one training step of each dispatches exactly the
same multiset of aten ops (eager mode only).

Examples::

    python benchmarks/train_throughput.py --quick
    python benchmarks/train_throughput.py --device cpu
    python benchmarks/train_throughput.py --device cuda --amp bf16 --channels-last
    python benchmarks/train_throughput.py --device cuda --amp bf16 --channels-last --compile
"""

from __future__ import annotations

import argparse
import collections
import json
import platform
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

import netmorph


class HandPlainNet(nn.Module):
    """PlainNet written directly in torch: the same layers ``netmorph.build("plain")`` makes."""

    def __init__(self, blocks: int, channels=(16, 32, 64), classes: int = 10):
        super().__init__()
        layers: list[nn.Module] = []
        cin = 3
        for li, cout in enumerate(channels):
            for bi in range(blocks):
                stride = 2 if bi == 0 and li > 0 else 1
                layers += [nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
                           nn.BatchNorm2d(cout), nn.ReLU()]
                cin = cout
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(cin, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        return self.fc(torch.flatten(torch.mean(x, (2, 3), keepdim=True), 1))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _trainer(model: nn.Module, device: torch.device, amp: str | None):
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)
    scaler = torch.amp.GradScaler(device.type) if amp == "fp16" else None

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        else:
            loss.backward()
            opt.step()

    return step


def _aten_ops(step, x: torch.Tensor, y: torch.Tensor) -> collections.Counter:
    """The multiset of aten ops one training step dispatches (the work, apart from timing)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step(x, y)
    return collections.Counter(e.name for e in prof.events() if e.name.startswith("aten::"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--blocks", type=int, default=3, help="blocks per level n (PlainNet depth 3n+1)")
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--image-size", type=int, default=32)
    ap.add_argument("--steps", type=int, default=None, help="training steps per timed window")
    ap.add_argument("--windows", type=int, default=None, help="timed windows per model")
    ap.add_argument("--warmup", type=int, default=None, help="untimed steps per model first")
    ap.add_argument("--amp", choices=["none", "bf16", "fp16"], default="none")
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--compile", action="store_true", help="torch.compile both models")
    ap.add_argument("--compile-backend", default="inductor")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--quick", action="store_true", help="smoke run (< 30 s on CPU)")
    a = ap.parse_args()

    device = torch.device(a.device)
    cuda = device.type == "cuda"
    if a.threads:
        torch.set_num_threads(a.threads)
    batch = a.batch or (256 if cuda else (16 if a.quick else 32))
    steps = a.steps or (50 if cuda else (2 if a.quick else 4))
    windows = a.windows or (3 if a.quick else 7)
    warmup = a.warmup if a.warmup is not None else (10 if cuda else (1 if a.quick else 2))
    if a.quick:
        a.blocks = min(a.blocks, 2)
    fmt = torch.channels_last if a.channels_last else torch.contiguous_format

    torch.manual_seed(0)
    graph = netmorph.build("plain", blocks=a.blocks, input_shape=(3, a.image_size, a.image_size))
    lowered = netmorph.lower(graph).to(device=device, memory_format=fmt).train()
    hand = HandPlainNet(a.blocks).to(device=device, memory_format=fmt).train()
    n_lowered = sum(p.numel() for p in lowered.parameters())
    n_hand = sum(p.numel() for p in hand.parameters())
    if n_lowered != n_hand:
        raise SystemExit(f"architectures differ: {n_lowered} vs {n_hand} parameters")
    models = {"lowered": lowered, "hand": hand}
    if a.compile:
        models = {k: torch.compile(m, backend=a.compile_backend) for k, m in models.items()}
    steppers = {k: _trainer(m, device, None if a.amp == "none" else a.amp) for k, m in models.items()}

    x = torch.randn(batch, 3, a.image_size, a.image_size, device=device).contiguous(memory_format=fmt)
    y = torch.randint(0, 10, (batch,), device=device)
    t0 = time.perf_counter()
    for step in steppers.values():
        for _ in range(warmup):
            step(x, y)
    _sync(device)
    warm_s = time.perf_counter() - t0
    same_ops = None
    if not a.compile:  # compiled graphs run fused kernels; the op lists are not comparable
        ops = {k: _aten_ops(s, x, y) for k, s in steppers.items()}
        same_ops = ops["lowered"] == ops["hand"]

    rates: dict[str, list[float]] = {k: [] for k in steppers}
    cpu_rates: dict[str, list[float]] = {k: [] for k in steppers}  # per CPU second of this process
    order = list(steppers)
    for wi in range(windows):
        for k in order if wi % 2 == 0 else order[::-1]:
            _sync(device)
            t, c = time.perf_counter(), time.process_time()
            for _ in range(steps):
                steppers[k](x, y)
            _sync(device)
            rates[k].append(steps * batch / (time.perf_counter() - t))
            cpu_rates[k].append(steps * batch / max(time.process_time() - c, 1e-9))
    med = {k: statistics.median(v) for k, v in rates.items()}
    cpu_med = {k: statistics.median(v) for k, v in cpu_rates.items()}
    print(json.dumps({
        "benchmark": "train_throughput",
        "model": f"PlainNet-{3 * a.blocks + 1}",
        "device": torch.cuda.get_device_name(device) if cuda else platform.processor() or "cpu",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "batch": batch, "image_size": a.image_size, "amp": a.amp, "channels_last": a.channels_last,
        "compile": a.compile_backend if a.compile else False,
        "steps_per_window": steps, "windows": windows, "warmup_steps": warmup,
        "warmup_s": round(warm_s, 2), "parameters": n_lowered,
        "hand_images_per_s": round(med["hand"], 1),
        "lowered_images_per_s": round(med["lowered"], 1),
        "ratio_lowered_over_hand": round(med["lowered"] / med["hand"], 4),
        "window_ratios": [round(lo / h, 4) for lo, h in zip(rates["lowered"], rates["hand"], strict=True)],
        "cpu_time_ratio_lowered_over_hand": round(cpu_med["lowered"] / cpu_med["hand"], 4),
        "same_aten_ops_per_step": same_ops,
        "goal_ratio": 0.98,
    }))


if __name__ == "__main__":
    main()
