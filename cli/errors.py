"""Uniform error handling for commands: one line on stderr, exit code 2, no traceback."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any

import click

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2


class UserError(Exception):
    """Bad input from the user: reported as one line, exit 2."""


def _expected_errors() -> tuple[type[BaseException], ...]:
    from netmorph.ir import IRError
    from netmorph.onnx_io import OnnxFormatError

    errs: list[type[BaseException]] = [UserError, IRError, OnnxFormatError, FileNotFoundError]
    try:  # each area registers its own "bad input" error types here
        from netmorph.errors import USER_ERRORS

        errs.extend(USER_ERRORS)
    except ImportError:  # pragma: no cover
        pass
    return tuple(errs)


def fail(message: str, code: int = EXIT_BAD_INPUT) -> None:
    click.echo(f"netmorph: error: {message}", err=True)
    sys.exit(code)


def handle_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn expected errors into ``netmorph: error: …`` plus exit 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except _expected_errors() as e:
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            fail(msg)
        except ModuleNotFoundError as e:
            from netmorph.extras import missing_extra_message

            hint = missing_extra_message(e)
            if hint is None:
                raise
            fail(f"netmorph {click.get_current_context().info_name}: {hint}")

    return wrapper
