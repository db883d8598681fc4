"""Run folders are owned: a marker file names the pipeline, a lock is held while a run writes.

Rules (``docs/security.md``):

- ``DIR/.netmorph-run`` (JSON: format, pipeline name, creation time) is written when a run first
  claims a missing or empty folder. A non-empty folder without it is someone else's and refused,
  untouched. A marker naming another pipeline is refused too. (A folder without a marker whose
  ``results.json`` is a netmorph results file of the same pipeline name, a run made before markers
  existed, is adopted on resume.)
- ``DIR/.netmorph-run.lock`` is locked (``flock``, exclusive) for the whole run and names its
  holder (pid, host, start time); a second run on the same folder fails at once naming the holder.
  The lock goes away with the process, so a killed run never leaves a stale lock.
- Files a resumed run loads (``results.json``'s model paths) must be plain relative paths that
  stay inside the folder (no absolute paths, no ``..``, no symlinks on the way).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import stat
import time
from collections.abc import Iterator
from pathlib import Path

from ..atomic import atomic_write_json
from .spec import PipelineError

MARKER_NAME = ".netmorph-run"
LOCK_NAME = ".netmorph-run.lock"
MARKER_FORMAT = "netmorph-run/1"
OWN_FILES = (MARKER_NAME, LOCK_NAME)


def _entries(out: Path) -> list[str]:
    try:
        return sorted(os.listdir(out))
    except FileNotFoundError:
        return []
    except OSError as e:
        raise PipelineError(f"{out}: cannot read the run folder ({e.strerror})") from None


def read_marker(out: Path) -> dict | None:
    """The marker of ``out`` (``None`` when there is none); a malformed one is an error."""
    path = out / MARKER_NAME
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    if not stat.S_ISREG(st.st_mode) or st.st_size > 65536:
        raise PipelineError(f"{path}: not a netmorph run marker")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise PipelineError(f"{path}: unreadable run marker ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict) or data.get("format") != MARKER_FORMAT:
        raise PipelineError(f"{path}: not a netmorph run marker (format {MARKER_FORMAT})")
    return data


def check_claimable(out: Path, name: str, resume: bool) -> None:
    """Refuse ``out`` before anything is written there: not a folder, foreign, another pipeline's,
    or (without ``resume``) holding a run already."""
    if os.path.lexists(out) and not out.is_dir():
        raise PipelineError(f"{out}: exists and is not a folder")
    entries = [e for e in _entries(out) if e not in OWN_FILES]
    marker = read_marker(out) if out.is_dir() else None
    if marker is None:
        if entries and resume and _legacy_run_of(out, name):
            return  # a run of this pipeline made before markers existed: adopted (claim() marks it)
        if entries:
            raise PipelineError(
                f"{out}: not empty and not a netmorph run folder (no {MARKER_NAME}; holds "
                f"{', '.join(entries[:3])}{' …' if len(entries) > 3 else ''}); refusing to write "
                "into it: choose an empty or new --out-dir"
            )
        return
    owner = marker.get("pipeline")
    if owner != name:
        raise PipelineError(f"{out}: belongs to pipeline {owner!r}, not {name!r}; use another out dir")
    if entries and not resume:
        raise PipelineError(f"{out}: already holds a run of {name!r}; resume it or use another out dir")


def _legacy_run_of(out: Path, name: str) -> bool:
    """Whether ``out`` holds a netmorph results file of pipeline ``name`` (written before markers)."""
    from .results import Results

    try:
        return Results.load(out).name == name
    except PipelineError:
        return False


@contextlib.contextmanager
def claim(out: Path, name: str, resume: bool) -> Iterator[None]:
    """Check, lock and mark ``out`` for a run of pipeline ``name``; the lock is held in the block."""
    import fcntl

    check_claimable(out, name, resume)
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd = os.open(out / LOCK_NAME, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
    except OSError as e:
        raise PipelineError(f"{out}: cannot create the run folder's lock ({e.strerror})") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip() or "another process"
            raise PipelineError(f"{out}: in use by another run ({holder}); wait for it or use another "
                                "out dir") from None
        info = f"pid {os.getpid()} on {socket.gethostname()}, since {time.strftime('%Y-%m-%d %H:%M:%S')}"
        os.ftruncate(fd, 0)
        os.pwrite(fd, info.encode(), 0)
        check_claimable(out, name, resume)  # again, now that no other run can change it
        if read_marker(out) is None:
            atomic_write_json(out / MARKER_NAME, {"format": MARKER_FORMAT, "pipeline": name,
                                                  "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
        yield
    finally:
        os.close(fd)  # releases the lock


def inside(out: Path, relative: str, what: str) -> Path:
    """``out / relative`` when it is a plain relative path staying inside ``out`` (no symlinks)."""
    if not isinstance(relative, str) or not relative or "\0" in relative:
        raise PipelineError(f"{out}: {what} {relative!r} is not a file name")
    rel = Path(relative)
    if rel.is_absolute() or any(part in ("..", "") for part in rel.parts):
        raise PipelineError(f"{out}: {what} {relative!r} leaves the run folder; refused")
    cur = out
    for part in rel.parts:
        cur = cur / part
        try:
            st = os.lstat(cur)
        except FileNotFoundError:
            raise PipelineError(f"{out}: {what} {relative!r} is missing") from None
        if stat.S_ISLNK(st.st_mode):
            raise PipelineError(f"{out}: {what} {relative!r} goes through a symlink; refused")
    return cur
