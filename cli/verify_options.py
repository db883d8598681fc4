"""The verification options ``netmorph verify`` and ``netmorph grow`` share (one input policy).

Values are parsed by :mod:`netmorph.verification.options`, so a malformed ``--dim`` or
``--range`` is an ``OptionsError`` (one line, exit 2) raised inside the command, where
``netmorph verify`` can still write its JSON report.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import click

INPUT_OPTIONS = ("batches", "batch_size", "dims", "ranges", "providers", "verbose")


def input_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Add ``--batches --batch-size --dim --range --providers --verbose`` to a command."""
    decorators = [
        click.option("--batches", type=str, default=None,
                     help="Random input batches (default 2; more are added to cover embedding tables)."),
        click.option("--batch-size", type=str, default=None,
                     help="Size of a symbolic dim 0 in random inputs (default 2; odd batches take "
                          "this + 1)."),
        click.option("--dim", "dims", multiple=True, metavar="NAME=SIZE",
                     help="Bind symbolic dim NAME to SIZE in every batch (repeatable). Unbound ones "
                          "take two sizes in alternate batches (dim 0: B, B+1; others: 8, 1)."),
        click.option("--range", "ranges", multiple=True, metavar="NAME=LO:HI",
                     help="Values of input NAME: floats uniform in [LO, HI], integers LO..HI "
                          "(default: read off the graph; repeatable)."),
        click.option("--providers", default=None, metavar="P1,P2",
                     help="ONNX Runtime providers, e.g. CUDAExecutionProvider,CPUExecutionProvider "
                          "(default: CUDA when usable, else CPU)."),
        click.option("--verbose", is_flag=True, default=False, help="Let ONNX Runtime log warnings."),
    ]
    return functools.reduce(lambda f, d: d(f), reversed(decorators), fn)


def _int(flag: str, text: str | None) -> int | None:
    from netmorph.verification import OptionsError

    if text is None:
        return None
    try:
        return int(text)
    except ValueError:
        raise OptionsError(f"{flag} must be a positive integer, got {text!r}") from None


def input_policy(batches: str | None, batch_size: str | None, dims: tuple[str, ...], ranges: tuple[str, ...],
                 providers: str | None, verbose: bool) -> dict[str, Any]:
    """The :class:`~netmorph.verification.VerifyOptions` fields the shared options set."""
    from netmorph.verification.options import parse_dims, parse_providers, parse_ranges

    return {
        "batches": _int("--batches", batches), "batch_size": _int("--batch-size", batch_size),
        "dims": parse_dims(dims), "ranges": parse_ranges(ranges), "providers": parse_providers(providers),
        "verbose": verbose,
    }
