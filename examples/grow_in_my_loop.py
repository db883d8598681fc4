r"""Grow a model twice in the middle of a plain PyTorch training loop, keeping the optimizer.

A hand-written CNN (conv-BN-ReLU blocks in two levels) trains on the CIFAR-10 subset with SGD
(momentum 0.9, Nesterov); after epochs 1 and 2, ``netmorph.torch.grow`` deepens it (every
template conv split in two, each growth verified in ONNX Runtime) and hands back the grown
module with a new SGD whose momentum buffers were carried through the growth. Nothing else in
the loop changes::

    python examples/grow_in_my_loop.py data/cifar10_small.npz

(``netmorph data prepare`` makes that file, see the README's Data section.)
About a minute on two CPU cores (2,000 training images, 3 epochs); ``--images`` and ``--epochs``
scale it.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import netmorph.torch as nmt


class Net(nn.Module):
    """Two levels of conv-BN-ReLU (16 then 32 channels, a stride-2 switch), mean pool, linear."""

    def __init__(self, classes: int = 10):
        super().__init__()

        def block(cin: int, cout: int, stride: int = 1) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]

        self.features = nn.Sequential(*block(3, 16), *block(16, 16), *block(16, 32, 2), *block(32, 32))
        self.head = nn.Linear(32, classes)

    def forward(self, x):
        return self.head(self.features(x).mean(dim=(2, 3)))


def load(path: str, images: int, seed: int):
    z = np.load(path)
    pick = np.random.default_rng(seed).permutation(len(z["y_train"]))[:images]
    mean = np.array([125.31, 122.95, 113.87], np.float32)
    std = np.array([62.99, 62.09, 66.70], np.float32)

    def prep(x):
        return torch.from_numpy(((x.astype(np.float32) - mean) / std).transpose(0, 3, 1, 2).copy())

    keep = z["test_lossless"] if "test_lossless" in z.files else np.ones(len(z["y_test"]), bool)
    return (prep(z["x_train"][pick]), torch.from_numpy(z["y_train"][pick]),
            prep(z["x_test"][keep]), torch.from_numpy(z["y_test"][keep]))


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        wrong = sum(int((model(x[i:i + 500]).argmax(1) != y[i:i + 500]).sum()) for i in range(0, len(y), 500))
    model.train()
    return wrong / len(y)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", nargs="?", default="data/cifar10_small.npz",
                        help="an .npz with x_train, y_train, x_test, y_test [%(default)s]")
    parser.add_argument("--images", type=int, default=2000, help="training images [%(default)s]")
    parser.add_argument("--epochs", type=int, default=3, help="epochs; growth after epochs 1 and 2")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.manual_seed(args.seed)
    x_train, y_train, x_test, y_test = load(args.data, args.images, args.seed)

    model = Net().train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-4)
    gen = torch.Generator().manual_seed(args.seed)
    for epoch in range(1, args.epochs + 1):
        t0, total, seen = time.perf_counter(), 0.0, 0
        for idx in torch.randperm(len(y_train), generator=gen).split(args.batch):
            x = x_train[idx]
            flip = torch.rand(len(idx), generator=gen) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(3), x)
            loss = F.cross_entropy(model(x), y_train[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total, seen = total + float(loss.detach()) * len(idx), seen + len(idx)
        n = sum(p.numel() for p in model.parameters())
        err = evaluate(model, x_test, y_test)
        print(f"epoch {epoch}: train loss {total / seen:.3f}, test error {100 * err:.1f}%, {n} parameters, "
              f"{time.perf_counter() - t0:.1f}s")
        if epoch < args.epochs and epoch <= 2:
            before = evaluate(model, x_test, y_test)
            grown = nmt.grow(model, x_train[:2], "deepen", optimizer=optimizer)
            rep = grown.report
            ver = rep.passes[0].verification
            carried = sum(1 for k, (kind, _) in rep.origins.items() if kind == "same" and k in
                          dict(grown.module.named_parameters()))
            model, optimizer = grown.module, grown.optimizer
            depth = f"{rep.passes[0].depth_before} -> {rep.passes[0].depth_after}"
            print(f"  grown ({rep.source}): depth {depth}, "
                  f"ONNX Runtime max abs diff {ver['max_abs']:.1e}, test error {100 * before:.1f}% -> "
                  f"{100 * evaluate(model, x_test, y_test):.1f}%, momentum carried for {carried} tensors, "
                  f"{len(rep.new)} new ones at zero")


if __name__ == "__main__":
    main()
