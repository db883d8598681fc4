"""Multi-process data-parallel training with PyTorch's own DistributedDataParallel.

Two ways in, both ending in :func:`netmorph.train.fit` running once per process:

* :func:`spawn_fit` starts ``nproc`` local processes (``torch.multiprocessing.spawn``), one per
  GPU with NCCL or on the CPU with gloo; this is what ``netmorph train --nproc N`` uses.
* ``torchrun`` (one or many machines): ``torchrun --nproc_per_node N --no-python netmorph train …``
  sets ``RANK``/``WORLD_SIZE``/``MASTER_ADDR``/…; :func:`init_from_env` joins that group.
"""

from __future__ import annotations

import os
import socket
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
import torch.distributed as dist

from netmorph.data import Splits

from .checkpoint import CHECKPOINT_NAME, load_checkpoint
from .config import TrainConfig, TrainConfigError
from .metrics import TrainResult

ModuleFactory = Callable[[], torch.nn.Module]
DataFactory = Callable[[], Splits]
RankHook = Callable[[int, torch.nn.Module, TrainResult], None]


def default_backend(device: str) -> str:
    """``"nccl"`` when training on CUDA, else ``"gloo"``."""
    uses_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    return "nccl" if uses_cuda else "gloo"


def launched_by_torchrun() -> bool:
    """True when the environment describes a multi-process job (``torchrun`` sets these)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ


def init_from_env(device: str = "auto") -> tuple[int, int]:
    """Join the process group described by the ``torchrun`` environment; return ``(rank, world)``."""
    if not dist.is_initialized():
        backend = default_backend(device)
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend=backend, init_method="env://")
    return dist.get_rank(), dist.get_world_size()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, backend: str, make_module: ModuleFactory,
            data: Splits | DataFactory, config: TrainConfig, out_dir: str, resume: bool, progress: bool,
            on_rank_done: RankHook | None) -> None:
    if backend == "nccl":
        torch.cuda.set_device(rank % torch.cuda.device_count())
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        from .loop import fit

        splits = data() if callable(data) else data
        module = make_module()
        result = fit(module, splits.train, splits.test, config, out_dir=out_dir, resume=resume,
                     progress=progress)
        if on_rank_done is not None:
            on_rank_done(rank, module, result)
        dist.barrier()
    finally:
        dist.destroy_process_group()


def spawn_fit(
    make_module: ModuleFactory,
    data: Splits | DataFactory,
    config: TrainConfig,
    nproc: int,
    *,
    out_dir: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    backend: str | None = None,
    on_rank_done: RankHook | None = None,
) -> TrainResult:
    """Train on ``nproc`` local processes with DDP and return rank 0's result in this process.

    Parameters
    ----------
    make_module
        Picklable zero-argument callable building the (same) untrained module in each process;
        DDP also broadcasts rank 0's initial weights.
    data
        The splits, or a picklable callable loading them in each process (cheaper for big sets).
    config
        As for :func:`~netmorph.train.fit`; ``batch_size`` is the global batch.
    nproc
        Number of processes (with NCCL at most the number of GPUs).
    out_dir
        Run folder (a temporary one when ``None``); the trained weights come back through its
        ``checkpoint.pt``.
    backend
        ``"gloo"`` or ``"nccl"``; defaults to :func:`default_backend` of ``config.device``.
    on_rank_done
        Picklable ``(rank, module, result)`` callback run in every process after training.

    Returns
    -------
    TrainResult
        A module from ``make_module()`` holding the trained weights, and the run's history.
    """
    if nproc < 1:
        raise TrainConfigError(f"nproc must be >= 1, got {nproc}")
    backend = backend or default_backend(config.device)
    if backend == "nccl" and nproc > torch.cuda.device_count():
        raise TrainConfigError(f"nproc {nproc} exceeds the {torch.cuda.device_count()} visible GPUs")
    with tempfile.TemporaryDirectory(prefix="netmorph-ddp-") as tmp:
        run_dir = str(out_dir) if out_dir is not None else tmp
        torch.multiprocessing.spawn(
            _worker, nprocs=nproc, join=True,
            args=(nproc, _free_port(), backend, make_module, data, config, run_dir, resume, progress,
                  on_rank_done),
        )
        state = load_checkpoint(Path(run_dir) / CHECKPOINT_NAME)
    module = make_module()
    module.load_state_dict(state["model"])
    history = list(state["history"])
    stopped = bool(history) and history[-1]["epoch"] < config.epochs
    return TrainResult(module=module, history=history, stopped=stopped)
