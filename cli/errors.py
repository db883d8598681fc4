"""The CLI's error boundary: one line on stderr, a documented exit code, never a traceback.

Exit codes: 0 success, 1 a failed verification (the child is not written), 2 everything else
(bad input, unreadable or hostile files, sizes above a documented limit, unwritable outputs, and
internal errors). ``netmorph --debug …`` or ``NETMORPH_DEBUG=1`` re-raises so the traceback shows.
"""

from __future__ import annotations

import errno
import functools
import os
import sys
import warnings
from collections.abc import Callable
from typing import Any

import click

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2
_SUBJECT_PARAMS = ("model", "pipeline_file", "start", "a")
"""Command parameters naming the file an unexpected error is reported against (first found)."""


class UserError(Exception):
    """Bad input from the user: reported as one line, exit 2."""


def debug_enabled() -> bool:
    return os.environ.get("NETMORPH_DEBUG", "").strip().lower() not in ("", "0", "false", "no")


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


def _is_verification_failure(e: BaseException) -> bool:
    try:
        from netmorph.errors import VerificationError
    except ImportError:  # pragma: no cover
        return False
    # subclasses (mismatched interfaces, a model ONNX Runtime cannot run) are bad input, exit 2
    return type(e) is VerificationError


MAX_MESSAGE = 280
"""Longest message after ``netmorph: error: `` (so every error line stays within about 300 characters)."""
FULL_LIST = "--debug shows them all"


def bounded(text: str, limit: int = MAX_MESSAGE) -> str:
    """One line of at most ``limit`` characters: the first cause of ``text`` and how many more.

    A message that lists causes one per line (ONNX shape inference, every failed node) keeps its
    first line and says ``(and N more; --debug shows them all)``. A first cause still too long (a
    list of names on one line, a runtime's message quoting long paths) keeps its head and its tail,
    where the verdict usually stands ("… the child differs", "… pass --any-source"), cut at list
    separators, and says what the middle held: ``head … [N more items] … tail``."""
    causes = [" ".join(line.split()) for line in text.splitlines() if line.strip()]
    if not causes:
        return ""
    first, more = causes[0], len(causes) - 1
    suffix = f" (and {more} more; {FULL_LIST})" if more else ""
    if len(first) + len(suffix) <= limit:
        return first + suffix
    suffix = f" ({more} more causes; {FULL_LIST})" if more else " (--debug shows the full message)"
    room = limit - len(suffix) - len(" … [9999 more characters] … ")
    tail_room = room // 3
    head = _separator_before(first, room - tail_room)
    tail = _separator_after(first, len(first) - tail_room)
    middle = first[head:tail].strip(" ,")
    items = middle.count(", ") + 1 if ", " in middle else 0
    unit = f"{items} more items" if items else f"{len(middle)} more characters"
    return f"{first[:head].rstrip(' ,;:')} … [{unit}] … {first[tail:].lstrip(' ,')}{suffix}"


def _separator_before(text: str, end: int) -> int:
    """The last ``", "`` (else space) before ``end`` in its second half, else ``end``."""
    for sep in (", ", " "):
        cut = text.rfind(sep, 0, end)
        if cut > end // 2:
            return cut
    return end


def _separator_after(text: str, start: int) -> int:
    """Just past the first ``", "`` (else space) after ``start`` within the rest's first half."""
    span = len(text) - start
    for sep in (", ", " "):
        cut = text.find(sep, start)
        if 0 <= cut - start < span // 2:
            return cut + len(sep)
    return start


def first_line(e: BaseException) -> str:
    """``e``'s message as one bounded line (see :func:`bounded`)."""
    return bounded(str(e)) or type(e).__name__


def describe(e: BaseException, subject: str | None = None) -> str:
    """One line for an exception that is not one of netmorph's own (``OSError``, ``MemoryError`` …)."""
    where = f"{subject}: " if subject else ""
    if isinstance(e, MemoryError):
        return (f"{where}out of memory: a size in the input or the options is too large for this machine "
                "(see docs/security.md for the limits)")
    if isinstance(e, RecursionError):
        return f"{where}the input is nested too deeply to process (recursion limit)"
    if isinstance(e, OSError):
        name = e.filename if e.filename is not None else subject
        reason = e.strerror or first_line(e)
        if e.errno == errno.ENOSPC:
            reason = "no space left on the device"
        return f"{name}: {reason}" if name else reason
    if isinstance(e, UnicodeError):
        return f"{where}invalid text (not UTF-8): {first_line(e)}"
    if isinstance(e, ValueError | TypeError | KeyError | IndexError | OverflowError):
        return f"{where}{first_line(e)} ({type(e).__name__}; --debug shows the traceback)"
    return (f"{where}internal error ({type(e).__name__}: {first_line(e)}); "
            "rerun with --debug for the traceback")


def fail(message: str, code: int = EXIT_BAD_INPUT) -> None:
    """Print ``message`` bounded to one line (:func:`bounded`) and exit with ``code``; with ``--debug``,
    called while handling an exception, re-raise it instead (the traceback, with every cause)."""
    handling = sys.exc_info()[1]
    if handling is not None and debug_enabled() and not _passthrough(handling):
        raise handling
    click.echo(f"netmorph: error: {bounded(message)}", err=True)
    sys.exit(code)


def report(e: BaseException, subject: str | None = None) -> None:
    """Print ``e`` as ``netmorph: error: …`` and exit with its code (1 for a failed verification)."""
    if _is_verification_failure(e):
        fail(first_line(e), EXIT_FAILED)
    if isinstance(e, _expected_errors()) and not isinstance(e, OSError):
        fail(first_line(e))
    fail(describe(e, subject))


def _passthrough(e: BaseException) -> bool:
    """Exceptions click or the interpreter must see: usage errors, exits, Ctrl-C."""
    return isinstance(e, click.exceptions.ClickException | click.exceptions.Exit | click.exceptions.Abort
                      | SystemExit | KeyboardInterrupt | GeneratorExit)


def handle_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn every error of a command into ``netmorph: error: …`` and its exit code."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if debug_enabled():
            return fn(*args, **kwargs)
        # Python warnings (numpy, torch …) are held back: shown after a command that succeeds, dropped
        # when it fails, so a failure reads as its one error line (``--debug`` shows them as they come).
        held: list[warnings.WarningMessage] = []
        try:
            with warnings.catch_warnings(record=True) as caught:
                try:
                    result = fn(*args, **kwargs)
                finally:
                    held = list(caught)
        except BaseException as e:
            if isinstance(e, SystemExit) and e.code in (0, None):
                _show(held)
            if _passthrough(e):
                raise
            if isinstance(e, ModuleNotFoundError):  # an optional extra (torch …) is not installed
                from netmorph.extras import missing_extra_message

                hint = missing_extra_message(e)
                if hint is not None:
                    fail(f"netmorph {click.get_current_context().info_name}: {hint}")
            subject = next((str(kwargs[k]) for k in _SUBJECT_PARAMS if kwargs.get(k) is not None), None)
            report(e, subject)
        _show(held)
        return result

    return wrapper


def _show(held: list[warnings.WarningMessage]) -> None:
    for w in held:
        warnings.showwarning(w.message, w.category, w.filename, w.lineno)
