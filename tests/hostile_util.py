"""Helpers of the hostile-input tests: run the real CLI in a subprocess and measure its memory."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from click.testing import CliRunner
from netmorph.cli.main import cli

MiB = 1 << 20


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str
    max_rss: int
    """Peak resident memory of the child in bytes (``wait4``'s ``ru_maxrss``)."""
    timed_out: bool = False


def run_cli(*args, **kwargs) -> Run:
    """``python -m netmorph.cli.main ARGS`` in a child (see :func:`run_child`)."""
    return run_child([sys.executable, "-m", "netmorph.cli.main", *map(str, args)], **kwargs)


LAUNCHER = r"""
import os, resource, signal, sys
report, limit, fsize, argv = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4:]
pid = os.fork()
if pid == 0:
    if limit:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    if fsize:  # files may not grow beyond this: writes fail with EFBIG, like a full disk
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
    os.execv(argv[0], argv)
_, status, usage = os.wait4(pid, 0)
with open(report, "w") as f:
    f.write(f"{usage.ru_maxrss} {status}")
"""
"""A small process that runs the command and reports its exact peak RSS and wait status.

Linux carries a process's RSS high-water mark across fork + exec into the child's ``ru_maxrss``;
starting the command from this ~10 MB launcher (not from pytest, which may hold gigabytes) makes
the measured peak the command's own."""


def run_child(argv: list[str], env: dict | None = None, timeout: float = 60, cwd=None,
              mem_limit: int | None = None, file_limit: int | None = None) -> Run:
    """Run ``argv`` (through :data:`LAUNCHER`); ``mem_limit`` caps its address space, ``file_limit``
    the size of any file it writes (``RLIMIT_FSIZE``)."""
    import tempfile

    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "rusage"
        proc = subprocess.Popen([sys.executable, "-c", LAUNCHER, str(report), str(mem_limit or 0),
                                 str(file_limit or 0), *argv],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=full_env, cwd=cwd,
                                start_new_session=True)
        killed = False
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            killed = True
            os.killpg(proc.pid, 9)
            out, err = proc.communicate()
        maxrss, status = (int(x) for x in report.read_text().split()) if report.exists() else (0, 9)
    return Run(os.waitstatus_to_exitcode(status), out.decode(errors="replace"), err.decode(errors="replace"),
               maxrss * 1024, timed_out=killed)


def invoke(*args, env: dict | None = None):
    """The CLI in-process (click's runner), for cases where memory is not the point."""
    return CliRunner().invoke(cli, [str(a) for a in args], env=env)


def one_line(stderr: str, code: int, got: int, *, contains: str = "") -> str:
    """Assert an exit ``code`` with exactly one ``netmorph: error:`` line on stderr and no traceback."""
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("netmorph: error: ")]
    assert got == code, f"exit {got}, expected {code}; stderr: {stderr[-2000:]}"
    assert "Traceback" not in stderr, stderr[-3000:]
    assert len(errors) == 1, f"expected one error line, got: {lines}"
    assert contains.lower() in errors[0].lower(), f"{contains!r} not in {errors[0]!r}"
    return errors[0]


def check_error(res, code: int = 2, contains: str = "") -> str:
    """:func:`one_line` for a click runner result (stderr is mixed into ``output``)."""
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    return one_line(res.output, code, res.exit_code, contains=contains)


def tree_digest(folder: Path) -> dict[str, str]:
    """Every entry under ``folder`` (not following symlinks) with a digest of what it is."""
    out = {}
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            p = Path(root) / name
            st = os.lstat(p)
            if p.is_symlink():
                out[str(p.relative_to(folder))] = "link:" + os.readlink(p)
            elif p.is_file():
                digest = hashlib.sha256(p.read_bytes()).hexdigest()
                out[str(p.relative_to(folder))] = f"{st.st_mode:o}:{digest}"
            else:
                out[str(p.relative_to(folder))] = f"{st.st_mode:o}"
    return out
