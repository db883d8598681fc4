"""Output paths: -o / --json / --report never replace a device, FIFO, symlink, folder or hard-linked
file; an existing file keeps its mode; stale temporaries of killed writers are cleaned."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from hostile_util import check_error, invoke

import netmorph
from netmorph.atomic import OutputError, atomic_write_bytes, clean_stale_temps


def _writers(small: Path, target: Path):
    """Every CLI path that writes a file the user names, aimed at ``target``."""
    return [
        ("grow", small, "--pass", "insert-identity-bn", "--value", "level1.block1.relu1", "-o", target),
        ("grow", small, "--pass", "insert-identity-bn", "--value", "level1.block1.relu1", "-o",
         target.parent / "child.onnx", "--report", target),
        ("verify", small, small, "--json", target),
        ("new", "plain", "-n", "2", "--channels", "4,4,4", "-o", target),
    ]


def _assert_refused(small: Path, target: Path, reason: str) -> None:
    before = os.lstat(target)
    for args in _writers(small, target):
        res = invoke(*args)
        check_error(res, contains=reason)
        after = os.lstat(target)
        assert (after.st_ino, after.st_mode, after.st_rdev) == (before.st_ino, before.st_mode, before.st_rdev)
    assert not (target.parent / "child.onnx").exists()


def test_symlink_to_stdout_is_not_replaced(small, tmp_path):
    link = tmp_path / "out.onnx"
    link.symlink_to("/proc/self/fd/1")
    _assert_refused(small, link, "symlink")
    assert os.readlink(link) == "/proc/self/fd/1"


def test_fifo_is_not_replaced(small, tmp_path):
    fifo = tmp_path / "out.onnx"
    os.mkfifo(fifo)
    _assert_refused(small, fifo, "not a regular file")
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


def test_device_node_is_not_replaced(small, tmp_path):
    node = tmp_path / "null"
    try:
        os.mknod(node, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    except (PermissionError, OSError) as e:
        pytest.skip(f"mknod not permitted here ({e})")
    _assert_refused(small, node, "not a regular file")
    assert stat.S_ISCHR(os.lstat(node).st_mode)


def test_directory_is_not_replaced(small, tmp_path):
    folder = tmp_path / "out.onnx"
    folder.mkdir()
    (folder / "keep").write_text("mine")
    res = invoke("new", "plain", "-n", "2", "-o", folder)
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert (folder / "keep").read_text() == "mine"


def test_hard_link_is_refused_and_both_names_unchanged(small, tmp_path):
    target = tmp_path / "out.onnx"
    target.write_bytes(b"the user's file")
    (tmp_path / "other-name").hardlink_to(target)
    _assert_refused(small, target, "hard links")
    assert (tmp_path / "other-name").read_bytes() == b"the user's file" == target.read_bytes()
    assert os.stat(target).st_nlink == 2


def test_existing_file_keeps_its_mode(small, tmp_path):
    target = tmp_path / "child.onnx"
    target.write_bytes(b"old")
    os.chmod(target, 0o600)
    res = invoke("grow", small, "--pass", "insert-identity-bn", "--value", "level1.block1.relu1",
                 "-o", target)
    assert res.exit_code == 0, res.output
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o600
    assert netmorph.load(target).parameter_count() > netmorph.load(small).parameter_count()
    atomic_write_bytes(target, b"again")
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o600


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".nmtmp-" in p.name)


def test_sigkill_during_a_write_leaves_a_temp_that_the_next_write_cleans(tmp_path):
    target = tmp_path / "out.bin"
    target.write_bytes(b"complete old file")
    code = ("import os, signal, sys\nfrom netmorph.atomic import atomic_open\n"
            "with atomic_open(sys.argv[1]) as f:\n    f.write(b'half' * 1000); f.flush()\n"
            "    os.kill(os.getpid(), signal.SIGKILL)\n")
    proc = subprocess.run([sys.executable, "-c", code, str(target)], timeout=60)
    assert proc.returncode == -signal.SIGKILL
    stale = _leftovers(tmp_path)
    assert len(stale) == 1 and target.read_bytes() == b"complete old file"
    # a live writer's temp (this process) is never touched
    from netmorph.atomic import _host_tag

    live = tmp_path / f".out.bin.nmtmp-{_host_tag()}-{os.getpid()}-0000abcd"
    live.write_bytes(b"in progress")
    other_host = tmp_path / ".out.bin.nmtmp-00000000-999999999-0000abcd"  # a pid of another machine
    other_host.write_bytes(b"someone else's")
    atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"new"
    assert _leftovers(tmp_path) == sorted([live.name, other_host.name])
    assert clean_stale_temps(target) == []


def test_unwritable_output_folder_is_one_line(small, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a file, not a folder")
    res = invoke("new", "plain", "-n", "2", "-o", blocker / "x.onnx")
    check_error(res, contains="x.onnx")
    if os.geteuid() != 0:  # root writes into read-only folders anyway
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        check_error(invoke("new", "plain", "-n", "2", "-o", ro / "x.onnx"), contains="x.onnx")
    with pytest.raises(OutputError):
        atomic_write_bytes(blocker / "y", b"")


def _two_models(tmp_path):
    a, b = (netmorph.build("plain", levels=2, blocks=2, channels=(16, 16), classes=3, input_shape=(3, 8, 8),
                           seed=s) for s in (1, 2))
    a.name, b.name = "model_a", "model_b"
    return a, b


def test_model_and_side_file_of_different_saves_are_refused(tmp_path):
    from netmorph.onnx_io.external import ExternalDataMismatch

    a, b = _two_models(tmp_path)
    path = tmp_path / "m.onnx"
    netmorph.save(a, path, external_data=True)
    side_a = (tmp_path / "m.onnx.data").read_bytes()
    netmorph.save(b, path, external_data=True)
    assert netmorph.load(path).name == "model_b"
    (tmp_path / "m.onnx.data").write_bytes(side_a)  # what a crash between the two renames leaves
    with pytest.raises(ExternalDataMismatch, match="does not belong to this model"):
        netmorph.load(path)
    check_error(invoke("inspect", path), contains="does not belong to this model")


def test_concurrent_writers_never_pair_one_graph_with_the_other_weights(tmp_path):
    """Two processes save different models to one path in a loop while this one loads: every load is
    one whole model or a clear refusal, never a mix."""
    import time

    from netmorph.onnx_io.convert import OnnxFormatError

    a, b = _two_models(tmp_path)
    expected = {}
    for g in (a, b):
        src = tmp_path / f"{g.name}.onnx"
        netmorph.save(g, src, external_data=True)
        expected[g.name] = [v.const.array.copy() for v in netmorph.load(src).parameters]
    path = tmp_path / "shared.onnx"
    netmorph.save(a, path, external_data=True)
    code = ("import sys, time, netmorph\ng = netmorph.load(sys.argv[1])\nend = time.time() + 2.5\n"
            "while time.time() < end:\n    netmorph.save(g, sys.argv[2], external_data=True)\n")
    writers = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path / f"{n}.onnx"), str(path)])
               for n in ("model_a", "model_b")]
    loads = refused = 0
    end = time.time() + 2.5
    while time.time() < end:
        try:
            g = netmorph.load(path)
        except OnnxFormatError:
            refused += 1
            continue
        loads += 1
        got = [v.const.array for v in g.parameters]
        assert all((x == y).all() for x, y in zip(got, expected[g.name], strict=True)), g.name
    for w in writers:
        assert w.wait(timeout=60) == 0
    assert loads > 0
    print(f"{loads} consistent loads, {refused} refused")


def test_a_write_that_fails_midway_is_one_line_and_keeps_the_old_file(tmp_path):
    """Files may not grow past 4 KiB (RLIMIT_FSIZE: the write fails with EFBIG, as on a full disk):
    `new -o` and `grow -o … --report` fail with one line, the old files are intact, no temporary is left."""
    from hostile_util import one_line, run_cli

    target = tmp_path / "model.onnx"
    target.write_bytes(b"the old model")
    r = run_cli("new", "plain", "-n", "2", "-o", target, file_limit=4096)
    one_line(r.stderr, 2, r.code, contains="model.onnx: cannot write")
    assert target.read_bytes() == b"the old model" and _leftovers(tmp_path) == []
    small = tmp_path / "small.onnx"
    netmorph.save(netmorph.build("plain", levels=2, blocks=2, channels=(4, 4), input_shape=(3, 8, 8)), small)
    report = tmp_path / "report.json"
    report.write_text("old report")
    r = run_cli("grow", small, "--pass", "insert-identity-bn", "--value", "level1.block1.relu1", "-o",
                tmp_path / "child.onnx", "--report", report, file_limit=4096)
    one_line(r.stderr, 2, r.code, contains="cannot write")
    assert report.read_text() == "old report" and _leftovers(tmp_path) == []


def test_checking_an_output_creates_nothing(small, tmp_path):
    """`grow` checks -o before growing; a missing folder is refused, never made (not even on success)."""
    target = tmp_path / "new" / "deeper" / "child.onnx"
    res = invoke("grow", small, "--pass", "insert-identity-bn", "--value", "no-such-value", "-o", target)
    assert res.exit_code == 2, res.output
    assert not (tmp_path / "new").exists()
    ok = ("grow", small, "--pass", "insert-identity-bn", "--value", "level1.block1.relu1", "-o", target)
    check_error(invoke(*ok), contains="output folder does not exist")
    assert not (tmp_path / "new").exists()
    target.parent.mkdir(parents=True)
    res = invoke(*ok)
    assert res.exit_code == 0, res.output
    assert target.is_file()
