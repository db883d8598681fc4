"""Torch device selection for the iterative solvers."""

from __future__ import annotations

from contextlib import contextmanager

from ..errors import PreconditionError


def torch_device(device: str):
    """Return a ``torch.device`` for ``device`` ("cpu", "cuda", "cuda:N"), refusing unavailable CUDA."""
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise PreconditionError(f"unknown device {device!r}: {exc}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise PreconditionError(f"device {device!r} requested but CUDA is not available")
    if dev.type not in ("cpu", "cuda"):
        raise PreconditionError(f"device must be 'cpu' or 'cuda', got {device!r}")
    return dev


SMALL_WORK = 1e8
"""Multiply-adds of one composition below which the CPU solvers run single-threaded."""


@contextmanager
def threads_for(dev, work: float):
    """Run small CPU problems on one torch thread, restoring the thread count afterwards.

    The solvers issue thousands of tiny GEMMs; splitting each over several threads costs more than it
    gains, and on a busy machine the threads' synchronisation dominates (measured: 30x slower with
    two threads on a loaded 2-core machine). ``torch.set_num_threads`` is process-wide, so this is not
    safe while other Python threads run torch work at the same time.
    """
    import torch

    if dev.type != "cpu" or work >= SMALL_WORK or torch.get_num_threads() == 1:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
