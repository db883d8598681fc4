"""Atomic file writes: a temporary file in the same folder, fsync, then one rename.

Every path in netmorph that writes a user-visible file (models, reports, checkpoints, pipeline files,
plots) goes through :func:`atomic_open` / :func:`atomic_path`, so a crash or an error never leaves a
half-written file and an existing file at the path stays intact until the new one is complete.

Rules (see ``docs/security.md``):

- The target must be missing or a regular file with one link. A symlink, a directory, a device, a
  FIFO or a socket is refused (:class:`OutputError`), never replaced; so is a file with more than
  one hard link (replacing it by rename would silently break the link).
- An existing file keeps its permission bits; a new one gets ``0o666 & ~umask``.
- Temporary files are named ``.<name>.nmtmp-<host>-<pid>-<random>`` (a name too long for that is
  shortened to fit 255 bytes, its digest keeping it specific). One left behind by a killed process
  of this host (its pid no longer runs) is removed by the next write to the same path.
- :func:`check_outputs` refuses, before any work, an output that is (the same file as) an input or
  another output, lies inside an input folder, names a folder or ends in a separator, or whose
  folder does not exist.
- Any ``OSError`` (read-only folder, disk full …) becomes one :class:`OutputError` naming the target.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from .errors import NetmorphError

TEMP_TAG = ".nmtmp-"


class OutputError(NetmorphError):
    """An output path cannot or must not be written (special file, hard link, read-only, full …)."""


def _umask() -> int:
    m = os.umask(0)
    os.umask(m)
    return m


def _reason(e: OSError) -> str:
    if e.errno == errno.ENOSPC:
        return "no space left on the device"
    return e.strerror or str(e)


def check_target(path: str | os.PathLike) -> int | None:
    """Refuse anything at ``path`` but a regular single-link file; return its mode bits (or ``None``).

    Raises
    ------
    OutputError
        ``path`` is a symlink, directory, device, FIFO, socket, or a file with several hard links,
        or its folder cannot be used.
    """
    p = Path(path)
    try:
        st = os.lstat(p)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise OutputError(f"{p}: cannot write here ({_reason(e)})") from None
    if stat.S_ISLNK(st.st_mode):
        raise OutputError(f"{p}: is a symlink; refusing to replace it (write to the real path instead)")
    if stat.S_ISDIR(st.st_mode):
        raise OutputError(f"{p}: is a directory")
    if not stat.S_ISREG(st.st_mode):
        raise OutputError(f"{p}: is not a regular file (device, FIFO or socket); refusing to replace it")
    if st.st_nlink > 1:
        raise OutputError(
            f"{p}: has {st.st_nlink} hard links; replacing it would break them (remove it or write elsewhere)"
        )
    return stat.S_IMODE(st.st_mode)


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True
    return True


def _host_tag() -> str:
    """8 hex digits naming this machine: a pid is only meaningful on the host that wrote it."""
    import hashlib
    import socket

    return hashlib.sha1(socket.gethostname().encode()).hexdigest()[:8]


NAME_MAX = 255
_TEMP_TAIL = len(TEMP_TAG) + 8 + 1 + 10 + 1 + 8  # tag, host, pid (up to 10 digits), random


def _temp_stem(name: str) -> str:
    """``.<name>`` or, when the temporary name would pass 255 bytes, a shortened one with a digest."""
    import hashlib

    if len(os.fsencode(name)) + 1 + _TEMP_TAIL <= NAME_MAX:
        return f".{name}"
    room = NAME_MAX - _TEMP_TAIL - 1 - 9  # '.', '~' and 8 hex digits of the full name's digest
    short = os.fsencode(name)[:room].decode("utf-8", "ignore")
    return f".{short}~{hashlib.sha1(os.fsencode(name)).hexdigest()[:8]}"


def clean_stale_temps(path: str | os.PathLike) -> list[Path]:
    """Remove our temporary files for ``path`` left by processes of this host that no longer run;
    return them. (Temporaries written on another host, e.g. into a shared folder, are left alone.)"""
    p = Path(path)
    pattern = re.compile(re.escape(f"{_temp_stem(p.name)}{TEMP_TAG}{_host_tag()}-") + r"(\d+)-[0-9a-f]+$")
    removed = []
    try:
        entries = list(os.scandir(p.parent if str(p.parent) else "."))
    except OSError:
        return removed
    for entry in entries:
        m = pattern.match(entry.name)
        if m is None or _pid_alive(int(m.group(1))):
            continue
        with contextlib.suppress(OSError):
            if entry.is_file(follow_symlinks=False):
                os.unlink(entry.path)
                removed.append(Path(entry.path))
    return removed


def make_temp(path: str | os.PathLike) -> tuple[int, str]:
    """``(fd, name)`` of a new temporary file beside ``path`` (mode 0600, opened for writing)."""
    p = Path(path)
    for _ in range(100):
        tmp = p.with_name(f"{_temp_stem(p.name)}{TEMP_TAG}{_host_tag()}-{os.getpid()}-{secrets.token_hex(4)}")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
        except FileExistsError:
            continue
        return fd, str(tmp)
    raise OutputError(f"{p}: cannot create a temporary file beside it")  # pragma: no cover


def prepare(path: str | os.PathLike) -> int | None:
    """Check ``path`` (see :func:`check_target`), create its folder, clean stale temporaries.

    Returns the mode the written file gets (the existing file's, or ``None`` for the default).
    """
    p = Path(path)
    mode = check_target(p)
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"{p}: cannot create its folder ({_reason(e)})") from None
    clean_stale_temps(p)
    return mode


def commit(tmp: str, path: str | os.PathLike, mode: int | None) -> None:
    """Give ``tmp`` its final mode and rename it onto ``path`` (re-checked just before)."""
    os.chmod(tmp, (0o666 & ~_umask()) if mode is None else mode)
    check_target(path)
    os.replace(tmp, path)


def ensure_writable(path: str | os.PathLike) -> None:
    """Fail now, not after hours of training, if ``path`` could not be written atomically later.

    Nothing is created: a missing folder is checked through its nearest existing ancestor (it is
    made when the file is written); an existing one by creating and removing a temporary file.
    """
    p = Path(path)
    check_target(p)
    folder = p.parent if str(p.parent) else Path(".")
    while not os.path.lexists(folder) and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise OutputError(f"{p}: cannot write here ({folder} is not a folder)")
    if folder != (p.parent if str(p.parent) else Path(".")):
        if not os.access(folder, os.W_OK | os.X_OK):
            raise OutputError(f"{p}: cannot create its folder under {folder} (permission denied)")
        return
    clean_stale_temps(p)
    try:
        fd, tmp = make_temp(p)
    except OSError as e:
        raise OutputError(f"{p}: cannot write here ({_reason(e)})") from None
    os.close(fd)
    os.unlink(tmp)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` when the block succeeds.

    For writers that insist on a file name (e.g. matplotlib's ``savefig``). The caller writes the file;
    on an exception it is removed and ``path`` is untouched.
    """
    path = Path(path)
    mode = prepare(path)
    tmp = None
    try:
        fd, tmp = make_temp(path)
        os.close(fd)
        yield Path(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        commit(tmp, path, mode)
    except OSError as e:
        raise OutputError(f"{path}: cannot write ({_reason(e)})") from None
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb", **kwargs: Any) -> Iterator[IO[Any]]:
    """Open a temporary file for writing; it replaces ``path`` only when the block succeeds."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open writes whole files (mode 'w' or 'wb'), not {mode!r}")
    with atomic_path(path) as tmp, open(tmp, mode, **kwargs) as f:
        yield f
        f.flush()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_open(path, "wb") as f:
        f.write(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    with atomic_open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return Path(path)


def atomic_write_json(path: str | os.PathLike, data: Any, **json_kwargs: Any) -> Path:
    """``json.dump`` with ``indent=2`` (overridable), a trailing newline and no NaN/Infinity, atomically.

    Non-finite floats are written as ``null`` (standard JSON has no NaN).
    """
    json_kwargs.setdefault("indent", 2)
    json_kwargs["allow_nan"] = False  # callers asking for NaN tokens get null instead: standard JSON
    return atomic_write_text(path, json.dumps(finite_json(data), **json_kwargs) + "\n")


def finite_json(data: Any) -> Any:
    """``data`` with every non-finite float replaced by ``None`` (dicts, lists and tuples recursed)."""
    if isinstance(data, float):
        return data if data == data and data not in (float("inf"), float("-inf")) else None
    if isinstance(data, dict):
        return {k: finite_json(v) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [finite_json(v) for v in data]
    return data


PathLike = str | os.PathLike


def _identity(path: PathLike) -> tuple:
    """What ``path`` is on disk: ``(device, inode)`` of an existing file, else its resolved path."""
    try:
        st = os.stat(path)
    except OSError:
        return ("path", os.path.realpath(path))
    return ("inode", st.st_dev, st.st_ino)


def _inside(path: PathLike, folder: PathLike) -> bool:
    real, root = os.path.realpath(path), os.path.realpath(folder)
    return os.path.commonpath([real, root]) == root


def check_output_name(label: str, path: PathLike) -> None:
    """Refuse an output path that names a folder (ends in a separator, or is one) or whose folder is
    missing (a missing folder is never created for a named output: a typo must not make one)."""
    text = os.fspath(path)
    if not text or text.endswith(os.sep) or (os.altsep and text.endswith(os.altsep)):
        raise OutputError(f"{label} {text!r}: names a folder, not a file; give a file name")
    if os.path.isdir(text):
        raise OutputError(f"{label} {text}: is a directory; give a file name")
    folder = os.path.dirname(text) or "."
    if not os.path.isdir(folder):
        raise OutputError(f"{label} {text}: the output folder does not exist ({folder}); create it first")


def check_outputs(outputs: dict[str, PathLike | None], inputs: dict[str, PathLike | None] | None = None,
                  *, run_files: dict[str, PathLike] | None = None) -> None:
    """Refuse, before any work, outputs that would replace what the command reads or writes twice.

    ``outputs`` maps an option (``"-o"``, ``"--report"`` …) to the file the user named; each must be
    a file name in an existing folder (:func:`check_output_name`) that can be written atomically
    (:func:`ensure_writable`). ``run_files`` are further files the command writes inside folders it
    creates itself (checkpoints, metrics), checked like outputs but for the folder. No output may be
    the same file (after symlinks and hard links) as an input, as another output, or lie inside an
    input folder (``--inputs DIR``).

    Raises
    ------
    OutputError
        The first offending output, named with what it collides with.
    """
    named = {k: v for k, v in outputs.items() if v is not None}
    for label, path in named.items():
        check_output_name(label, path)
        ensure_writable(path)
    every = {**named, **(run_files or {})}
    for path in (run_files or {}).values():
        check_target(path)
    sources = {k: v for k, v in (inputs or {}).items() if v is not None and os.fspath(v)}
    seen: dict[tuple, tuple[str, PathLike]] = {}
    for label, path in every.items():
        ident = _identity(path)
        for what, src in sources.items():
            if os.path.isdir(src) and _inside(path, src):
                raise OutputError(f"{label} {os.fspath(path)}: lies inside the {what} folder "
                                  f"{os.fspath(src)}; write it elsewhere")
            if ident == _identity(src):
                raise OutputError(f"{label} {os.fspath(path)}: is the {what} file {os.fspath(src)}; "
                                  "it would be replaced: write elsewhere")
        if ident in seen:
            other, other_path = seen[ident]
            raise OutputError(f"{label} {os.fspath(path)}: is also {other} ({os.fspath(other_path)}); "
                              "one file cannot hold both: give two names")
        seen[ident] = (label, path)
