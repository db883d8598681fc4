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
- Every folder and file a run will write (:func:`check_writes`) is checked after the lock is taken and
  before anything is written: a stage folder must be a real folder (not a symlink, which would make
  the run write into someone else's folder) and a file missing or a regular single-link file.
- ``DIR/.netmorph-files.json`` records the SHA-256 of every stage file the run wrote (models,
  ``morph.json``, carried optimizer state). A resumed run checks them before it reuses anything
  (:class:`RunFiles`): a file changed since the run wrote it is refused; one never recorded is
  made again.
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
DIGESTS_NAME = ".netmorph-files.json"
MARKER_FORMAT = "netmorph-run/1"
DIGESTS_FORMAT = "netmorph-run-files/1"
MAX_DIGESTS_BYTES = 16 << 20
OWN_FILES = (MARKER_NAME, LOCK_NAME, DIGESTS_NAME)


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


def check_writes(out: Path, folders: list[str], files: list[str]) -> None:
    """Refuse ``out`` when a folder the run writes into is a symlink or not a folder, or a file it
    writes is a symlink, a folder, a special file or hard-linked (:func:`netmorph.atomic.check_target`)."""
    from ..atomic import OutputError, check_target

    for rel in folders:
        path = out / rel
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            continue
        except OSError as e:
            raise PipelineError(f"{path}: cannot use the run's folder ({e.strerror})") from None
        if stat.S_ISLNK(st.st_mode):
            raise PipelineError(f"{path}: is a symlink; a run writes only into its own folders (refused, "
                                "nothing written)")
        if not stat.S_ISDIR(st.st_mode):
            raise PipelineError(f"{path}: should be the run's folder but is not a folder (refused)")
    for rel in files:
        try:
            check_target(out / rel)
        except OutputError as e:
            raise PipelineError(f"{e} (a run file; refused, nothing written)") from None


@contextlib.contextmanager
def claim(out: Path, name: str, resume: bool, writes: tuple[list[str], list[str]] = ([], [])
          ) -> Iterator[None]:
    """Check, lock and mark ``out`` for a run of pipeline ``name``; the lock is held in the block.

    ``writes`` (folders, files relative to ``out``) are checked with :func:`check_writes` before the
    folder is touched and again once the lock is held."""
    import fcntl

    check_claimable(out, name, resume)
    check_writes(out, *writes)
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
        check_writes(out, *writes)
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


def _sha256(path: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class RunFiles:
    """The digests of the stage files a run wrote (``DIR/.netmorph-files.json``)."""

    def __init__(self, out: Path, digests: dict[str, str], legacy: bool = False):
        self.out, self.digests, self.legacy = out, digests, legacy

    @classmethod
    def open(cls, out: Path, has_results: bool) -> RunFiles:
        """The run's record; a run with results but no record (made before records existed) is legacy:
        its files are trusted as they are and recorded from now on."""
        path = out / DIGESTS_NAME
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return cls(out, {}, legacy=has_results)
        if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_DIGESTS_BYTES:
            raise PipelineError(f"{path}: not a netmorph file record")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise PipelineError(f"{path}: unreadable file record ({str(e).splitlines()[0]})") from None
        files = data.get("files") if isinstance(data, dict) and data.get("format") == DIGESTS_FORMAT else None
        if not isinstance(files, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                  for k, v in files.items()):
            raise PipelineError(f"{path}: not a netmorph file record (format {DIGESTS_FORMAT})")
        return cls(out, dict(files))

    def record(self, relative: str) -> None:
        """Remember the digest of ``relative`` (just written) and save the record atomically."""
        self.digests[relative] = _sha256(self.out / relative)
        self.save()

    def forget(self, relative: str) -> None:
        if self.digests.pop(relative, None) is not None:
            self.save()

    def save(self) -> None:
        atomic_write_json(self.out / DIGESTS_NAME, {"format": DIGESTS_FORMAT, "files": self.digests})

    def trusted(self, relative: str, required: bool = False) -> bool:
        """Whether ``relative`` may be reused: it exists and has the digest the run recorded.

        A file whose digest differs is refused (:class:`PipelineError`); one never recorded is not
        trusted (it is made again), unless the run is legacy. With ``required`` a finished stage's
        file must be there and recorded."""
        path = self.out / relative
        if not os.path.lexists(path):
            if required:
                raise PipelineError(f"{self.out}: {relative} is missing; the run cannot be resumed")
            return False
        if self.legacy:  # trusted on first use, recorded from now on
            self.digests.setdefault(relative, _sha256(path))
            return True
        want = self.digests.get(relative)
        if want is None:
            if required:
                raise PipelineError(f"{path}: not a file this run wrote (no recorded digest); refusing "
                                    "to resume from it")
            return False
        if _sha256(path) != want:
            raise PipelineError(f"{path}: changed since the run wrote it (SHA-256 differs); refusing to "
                                "resume from it (restore it or start a new run)")
        return True
