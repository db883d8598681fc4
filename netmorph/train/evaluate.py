"""Evaluation passes: loss, error rate and predictions of a module on a :class:`~netmorph.data.Dataset`."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from netmorph.data import Dataset

from .augment import normalize
from .device import StagedData, autocast, dist_info, logits_of, resolve_device, stage


@torch.no_grad()
def eval_sums(
    module: torch.nn.Module,
    data: StagedData,
    *,
    batch_size: int,
    device: torch.device,
    amp: str | None = None,
    channels_last: bool = False,
    shard: bool = False,
    predictions: torch.Tensor | None = None,
) -> torch.Tensor:
    """Sums over the data set: ``[loss, wrong, count, lossless_wrong, lossless_count]`` (float64).

    With ``shard`` each DDP rank evaluates every ``world``-th image and the sums are all-reduced.
    ``predictions`` (a long tensor like the labels), when given, receives the arg-max classes.
    """
    was_training = module.training
    module.eval()
    rank, world = dist_info() if shard else (0, 1)
    index = torch.arange(rank, len(data), world, device=device)
    sums = torch.zeros(5, dtype=torch.float64, device=device)
    try:
        for start in range(0, len(index), batch_size):
            idx = index[start:start + batch_size]
            x = normalize(data.images[idx], data.mean, data.std)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            y = data.labels[idx]
            with autocast(device, amp):
                logits = logits_of(module(x))
            logits = logits.float()
            pred = logits.argmax(1)
            wrong = pred != y
            sums[0] += F.cross_entropy(logits, y, reduction="sum").double()
            sums[1] += wrong.sum()
            sums[2] += len(y)
            if data.lossless is not None:
                keep = data.lossless[idx]
                sums[3] += (wrong & keep).sum()
                sums[4] += keep.sum()
            if predictions is not None:
                predictions[idx] = pred
    finally:
        module.train(was_training)
    if world > 1:
        torch.distributed.all_reduce(sums)
    return sums


def _run(module, data, device, batch_size, amp, channels_last, predictions=False):
    dev = resolve_device(device)
    module.to(dev)
    staged = stage(data, dev)
    preds = torch.empty(len(data), dtype=torch.long, device=dev) if predictions else None
    sums = eval_sums(module, staged, batch_size=batch_size, device=dev, amp=amp,
                     channels_last=channels_last, predictions=preds)
    return sums.cpu(), preds


def evaluate(
    module: torch.nn.Module,
    data: Dataset,
    *,
    device: str = "auto",
    batch_size: int = 1024,
    amp: str | None = None,
    channels_last: bool = False,
) -> tuple[float, float]:
    """Mean cross-entropy loss and error rate (fraction) of ``module`` in eval mode on ``data``.

    Images are normalised with ``data.mean``/``data.std`` exactly as during training. The module
    is moved to ``device`` and left in the train/eval mode it had.
    """
    sums, _ = _run(module, data, device, batch_size, amp, channels_last)
    n = max(1.0, float(sums[2]))
    return float(sums[0]) / n, float(sums[1]) / n


def predict(
    module: torch.nn.Module,
    data: Dataset,
    *,
    device: str = "auto",
    batch_size: int = 1024,
    amp: str | None = None,
    channels_last: bool = False,
) -> np.ndarray:
    """Arg-max class of every image of ``data`` (``int64 (N,)``), in eval mode."""
    _, preds = _run(module, data, device, batch_size, amp, channels_last, predictions=True)
    return preds.cpu().numpy()


def normalized_inputs(data: Dataset) -> np.ndarray:
    """The float32 NCHW network inputs of ``data`` (what :func:`evaluate` feeds the model)."""
    x = torch.from_numpy(np.ascontiguousarray(data.images))
    if data.layout == "NHWC":
        x = x.permute(0, 3, 1, 2)
    mean = torch.tensor(data.mean).reshape(1, -1, 1, 1)
    std = torch.tensor(data.std).reshape(1, -1, 1, 1)
    return normalize(x, mean, std).contiguous().numpy()
