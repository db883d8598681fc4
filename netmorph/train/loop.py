"""The training loop: :func:`fit`."""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from netmorph.data import Dataset

from ..progress import Progress
from .augment import normalize, random_crop_flip
from .checkpoint import CHECKPOINT_NAME, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from .config import TrainConfig, TrainConfigError
from .device import autocast, dist_info, logits_of, resolve_device, stage
from .evaluate import eval_sums
from .metrics import TrainResult, append_metrics, write_metrics
from .optim import build_optimizer, build_scheduler, load_per_parameter_state

METRICS_NAME = "metrics.jsonl"
OnEpoch = Callable[[dict], object]
_RESUME_KEYS = ("batch_size", "lr", "optimizer", "schedule", "milestones", "gamma", "warmup_epochs", "seed")


def _seed(*parts: int) -> int:
    """A 63-bit seed mixed from integers (seed, epoch, rank, stream)."""
    h = 0x9E3779B97F4A7C15
    for p in parts:
        h = ((h ^ (int(p) & 0xFFFFFFFFFFFFFFFF)) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h >> 1


def epoch_shard(n: int, epoch: int, seed: int, rank: int, world: int) -> torch.Tensor:
    """This rank's part of epoch ``epoch``'s permutation of ``n`` samples (CPU, long).

    Like ``DistributedSampler``: the permutation is padded by wrapping to a multiple of ``world``
    and rank ``r`` takes entries ``r, r + world, …``, so every rank runs the same number of steps.
    """
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(_seed(seed, epoch, 0)))
    total = math.ceil(n / world) * world
    if total > n:
        perm = torch.cat([perm, perm[: total - n]])
    return perm[rank::world]


def _check_data(train: Dataset, test: Dataset) -> None:
    if train.image_shape != test.image_shape:
        raise TrainConfigError(f"{train.name}: images {train.image_shape} but {test.name} {test.image_shape}")
    if train.num_classes != test.num_classes:
        raise TrainConfigError(f"{train.name}: {train.num_classes} classes, {test.name} {test.num_classes}")
    if len(train) == 0 or len(test) == 0:
        raise TrainConfigError("training and test sets must not be empty")


def _resume_state(path: Path, config: TrainConfig, log) -> dict | None:
    if not path.is_file():
        log(f"resume: no checkpoint at {path}, starting from epoch 0")
        return None
    state = load_checkpoint(path)
    old = state.get("config", {})
    changed = [k for k in _RESUME_KEYS if k in old and old[k] != config.to_dict()[k]]
    if changed:
        log(f"resume: note, {', '.join(changed)} differ from the checkpoint's run")
    return state


def fit(
    module: torch.nn.Module,
    train_data: Dataset,
    test_data: Dataset,
    config: TrainConfig | None = None,
    *,
    out_dir: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    on_epoch: OnEpoch | None = None,
    initial_optimizer_state: dict | None = None,
) -> TrainResult:
    """Train ``module`` in place on ``train_data`` and evaluate it on ``test_data`` after every epoch.

    Parameters
    ----------
    module
        Any ``nn.Module`` mapping a float32 NCHW batch to logits (a tensor, or a tuple whose first
        entry is the logits).
    train_data, test_data
        Data sets of equal image shape; both are normalised with their own ``mean``/``std`` (the
        loaders give the test split the training statistics). They are copied to the device once
        (``uint8`` stays ``uint8``); each batch is gathered, normalised, randomly cropped
        (zero padding in normalised space, i.e. the mean colour) and flipped there.
    config
        Hyper-parameters; the paper's recipe when omitted.
    out_dir
        Where ``metrics.jsonl`` (one JSON line per epoch) and ``checkpoint.pt`` (written atomically
        after each epoch) go. ``None`` keeps nothing on disk.
    resume
        Continue from ``out_dir/checkpoint.pt`` when it exists: weights, optimiser, scheduler, RNG
        state and history are restored, so an interrupted run ends with the weights an
        uninterrupted one would have (bit-exact on CPU).
    progress
        Draw a progress bar per epoch and a summary line on stderr (rank 0 only).
    on_epoch
        Called with each epoch's record after the checkpoint is written; returning ``True`` or
        ``"stop"`` ends the run early (``TrainResult.stopped``), raising propagates.
    initial_optimizer_state
        Per-parameter optimizer state to start from (an optimizer ``state_dict`` whose
        ``state`` is indexed like this run's trainable parameters), e.g. carried through a
        growth by :func:`netmorph.pipeline.carry.carry_stage_optimizer`; the learning rate
        and other hyper-parameters stay this run's. Ignored when resuming from a checkpoint.

    Returns
    -------
    TrainResult
        The module, per-epoch metrics and the final test error.

    Notes
    -----
    Under ``torch.distributed`` (``torchrun`` or :func:`netmorph.train.ddp.spawn_fit`) the module is
    wrapped in ``DistributedDataParallel``; ``batch_size`` is the global batch, each rank takes a
    disjoint part of every epoch's permutation, BatchNorm running statistics are broadcast from rank
    0 after each epoch, and only rank 0 writes files.

    A fresh (not resumed) run seeds torch's global RNG from ``config.seed`` (and the rank), for
    modules that draw random numbers (dropout); it also sets ``torch.set_num_threads`` for the
    run when ``config.num_threads`` is given and restores it afterwards.
    """
    config = config or TrainConfig()
    _check_data(train_data, test_data)
    threads = torch.get_num_threads()
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    try:
        return _fit(module, train_data, test_data, config, out_dir, resume, progress, on_epoch,
                    initial_optimizer_state)
    finally:
        torch.set_num_threads(threads)


def _fit(module, train_data, test_data, config, out_dir, resume, progress, on_epoch,
         initial_optimizer_state=None) -> TrainResult:
    rank, world = dist_info()
    if config.batch_size % world:
        raise TrainConfigError(f"batch_size {config.batch_size} is not divisible by {world} processes")
    if resume and out_dir is None:
        raise TrainConfigError("resume needs an out_dir holding checkpoint.pt")
    show = progress and rank == 0

    def log(message: str) -> None:
        if show:
            print(message, file=sys.stderr, flush=True)

    device = resolve_device(config.device, int(os.environ.get("LOCAL_RANK", rank)) if world > 1 else None)
    if config.amp == "fp16" and device.type != "cuda":
        raise TrainConfigError("amp 'fp16' needs a CUDA device (use 'bf16' on CPU)")
    channels_last = config.channels_last and device.type == "cuda"

    out = Path(out_dir) if out_dir is not None else None
    if out is not None and rank == 0:
        out.mkdir(parents=True, exist_ok=True)

    module.to(device)
    if channels_last:
        module.to(memory_format=torch.channels_last)
    model = module
    per_rank_batch = config.batch_size // world
    shard_len = math.ceil(len(train_data) / world)
    steps_per_epoch = math.ceil(shard_len / per_rank_batch)
    optimizer = build_optimizer(model.parameters(), config)
    scheduler = build_scheduler(optimizer, config, steps_per_epoch)
    scaler = torch.amp.GradScaler("cuda", enabled=config.amp == "fp16")

    history: list[dict] = []
    start_epoch = 0
    state = _resume_state(out / CHECKPOINT_NAME, config, log) if resume else None
    if state is not None:
        try:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            if "scaler" in state:
                scaler.load_state_dict(state["scaler"])
            set_rng_state(state["rng"])
            history = list(state["history"])
            start_epoch = int(state["epoch"])
        except (KeyError, RuntimeError, ValueError, TypeError, IndexError) as e:
            reason = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
            raise TrainConfigError(
                f"{out / CHECKPOINT_NAME}: the checkpoint does not belong to this model or run ({reason})"
            ) from None
        if not 0 <= start_epoch <= config.epochs:
            raise TrainConfigError(f"{out / CHECKPOINT_NAME}: records epoch {start_epoch} of a "
                                   f"{config.epochs}-epoch run")
        log(f"resume: continuing after epoch {start_epoch} of {config.epochs}")
    else:
        torch.manual_seed(_seed(config.seed, rank, 1))
        if initial_optimizer_state is not None:
            load_per_parameter_state(optimizer, initial_optimizer_state)
    if out is not None and rank == 0:
        write_metrics(out / METRICS_NAME, history)

    runner: torch.nn.Module = model
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        runner = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if config.compile:
        runner = torch.compile(runner)

    train = stage(train_data, device)
    test = stage(test_data, device)
    result = TrainResult(module=module, history=history)
    for epoch in range(start_epoch, config.epochs):
        record = _train_epoch(
            runner, model, train, test, config, optimizer, scheduler, scaler, epoch=epoch,
            device=device, channels_last=channels_last, per_rank_batch=per_rank_batch, show=show,
        )
        check_finite(record, out)
        history.append(record)
        if out is not None and rank == 0:
            save_checkpoint(out / CHECKPOINT_NAME, {
                "epoch": epoch + 1, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(), "rng": rng_state(),
                "config": config.to_dict(), "history": history, "world_size": world,
            })
            append_metrics(out / METRICS_NAME, record)
        stop = on_epoch(dict(record)) if on_epoch is not None else None
        stop_now = torch.tensor(float(stop is True or stop == "stop"), device=device)
        if world > 1:
            torch.distributed.all_reduce(stop_now, op=torch.distributed.ReduceOp.MAX)
        if stop_now.item() and epoch + 1 < config.epochs:
            result.stopped = True
            log(f"stopped after epoch {epoch + 1}")
            break
    return result


class TrainingDiverged(TrainConfigError):
    """The loss became NaN or infinite; training stopped, the last good checkpoint is kept."""


def check_finite(record: dict, out: Path | None) -> None:
    """Stop a run whose loss is no longer finite, before its checkpoint is overwritten."""
    bad = [k for k in ("train_loss", "test_loss") if not math.isfinite(record.get(k, 0.0))]
    if not bad:
        return
    epoch = record["epoch"]
    kept = (f"; the last good checkpoint (epoch {epoch - 1}) is kept in {out / CHECKPOINT_NAME}"
            if out is not None and epoch > 1 else "")
    raise TrainingDiverged(
        f"training diverged in epoch {epoch} ({bad[0]} is {record[bad[0]]}) at lr {record['lr']:g}{kept}; "
        "lower the learning rate (a model whose BatchNorms were folded away needs restore-bn or a small lr)"
    )


def _train_epoch(runner, model, train, test, config, optimizer, scheduler, scaler, *, epoch, device,
                 channels_last, per_rank_batch, show) -> dict:
    rank, world = dist_info()
    t0 = time.perf_counter()
    runner.train()
    shard = epoch_shard(len(train), epoch, config.seed, rank, world).to(device)
    gen = torch.Generator(device=device).manual_seed(_seed(config.seed, epoch, rank, 2))
    steps = math.ceil(len(shard) / per_rank_batch)
    bar = Progress(steps, f"epoch {epoch + 1}/{config.epochs}", enabled=show)
    lr = optimizer.param_groups[0]["lr"]
    sums = torch.zeros(3, dtype=torch.float64, device=device)  # loss, wrong, count (all-reduced)
    seen = 0
    for step in range(steps):
        idx = shard[step * per_rank_batch:(step + 1) * per_rank_batch]
        x = normalize(train.images[idx], train.mean, train.std)
        x = random_crop_flip(x, config.pad, config.flip, gen)
        x = x.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
        y = train.labels[idx]
        with autocast(device, config.amp):
            logits = logits_of(runner(x))
        loss = F.cross_entropy(logits.float(), y)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        with torch.no_grad():
            sums[0] += loss.detach().double() * len(y)
            sums[1] += (logits.argmax(1) != y).sum()
        seen += len(y)
        if bar.due():
            s = sums.tolist()
            rate = seen * world / max(1e-9, time.perf_counter() - t0)
            bar.update(step + 1, loss=f"{s[0] / seen:.4f}", acc=f"{100 * (1 - s[1] / seen):.2f}%",
                       speed=f"{rate:.0f} img/s")
    sums[2] = seen
    if world > 1:
        torch.distributed.all_reduce(sums)
        for buf in model.buffers():  # BatchNorm running statistics: keep rank 0's
            torch.distributed.broadcast(buf, 0)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    train_seconds = time.perf_counter() - t0
    ev = eval_sums(model, test, batch_size=config.eval_batch_size, device=device, amp=config.amp,
                   channels_last=channels_last, shard=True).tolist()
    s = sums.tolist()
    record = {
        "epoch": epoch + 1, "lr": lr,
        "train_loss": s[0] / s[2], "train_err": s[1] / s[2],
        "test_loss": ev[0] / ev[2], "test_err": ev[1] / ev[2],
    }
    if test.lossless is not None:
        record["test_err_lossless"] = ev[3] / max(1.0, ev[4])
    record["images_per_s"] = s[2] / max(1e-9, train_seconds)
    record["seconds"] = time.perf_counter() - t0
    lossless = record.get("test_err_lossless")
    lossless = "" if lossless is None else f" (lossless {100 * lossless:.2f}%)"
    bar.update(steps)
    bar.close(loss=f"{record['train_loss']:.4f}", acc=f"{100 * (1 - record['train_err']):.2f}%",
              speed=f"{record['images_per_s']:.0f} img/s",
              test=f"err {100 * record['test_err']:.2f}%{lossless}", lr=f"{lr:.4g}")
    return record
