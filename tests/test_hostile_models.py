"""Hostile model files: sparse side files, huge model files, FIFOs, odd external-data names, data that
does not match its declared dims, deep nesting, invalid UTF-8. Every case: the exit code, one
``netmorph: error:`` line, no traceback, and (in a subprocess) peak memory under a stated bound."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import onnx
import pytest
from hostile_util import MiB, check_error, invoke, one_line, run_cli
from onnx import TensorProto, helper, numpy_helper

import netmorph

MEMORY_BOUND = 400 * MiB
"""Peak RSS allowed to a CLI process reading a hostile model (a clean `inspect` needs about 150 MiB)."""


def _external(small: Path, folder: Path, location: str, **entries: str) -> tuple[Path, str]:
    """``small`` with its first weight (4x3x3x3 floats, 432 bytes) moved to external ``location``."""
    folder.mkdir(exist_ok=True)
    model = onnx.load(small)
    t = model.graph.initializer[0]
    assert list(t.dims) == [4, 3, 3, 3]
    raw = numpy_helper.to_array(t).tobytes()
    t.ClearField("raw_data")
    t.data_location = TensorProto.EXTERNAL
    for k, v in {"location": location, **entries}.items():
        e = t.external_data.add()
        e.key, e.value = k, v
    path = folder / "model.onnx"
    path.write_bytes(model.SerializeToString())
    return path, raw


def test_sparse_side_file_with_a_lying_length_is_refused_without_reading_it(small, tmp_path):
    path, _ = _external(small, tmp_path / "m", "w.bin", length=str(3 << 30))
    side = tmp_path / "m" / "w.bin"
    subprocess.run(["truncate", "-s", "3G", str(side)], check=True)
    for cmd in (("inspect", path), ("verify", small, path)):
        r = run_cli(*cmd)
        one_line(r.stderr, 2, r.code, contains="does not match its dims")
        assert r.max_rss < MEMORY_BOUND, f"{cmd[0]}: {r.max_rss / MiB:.0f} MiB"


def test_sparse_side_file_without_length_reads_only_the_declared_bytes(small, tmp_path):
    path, raw = _external(small, tmp_path / "m", "w.bin")
    side = tmp_path / "m" / "w.bin"
    side.write_bytes(raw)
    subprocess.run(["truncate", "-s", "20G", str(side)], check=True)  # 20 GiB, nearly all a hole
    r = run_cli("inspect", path)
    assert r.code == 0, r.stderr
    assert r.max_rss < MEMORY_BOUND, f"{r.max_rss / MiB:.0f} MiB"
    g = netmorph.load(path)
    assert g.parameters[0].const.array.tobytes() == raw


def test_huge_sparse_model_file_is_refused_by_its_size(tmp_path):
    path = tmp_path / "huge.onnx"
    subprocess.run(["truncate", "-s", "20G", str(path)], check=True)
    r = run_cli("inspect", path)
    one_line(r.stderr, 2, r.code, contains="above the model file limit")
    assert r.max_rss < MEMORY_BOUND


def test_model_file_limit_is_configurable(small):
    res = invoke("inspect", small, env={"NETMORPH_MAX_MODEL_BYTES": "1000"})
    check_error(res, contains="above the model file limit")


def test_fifo_as_the_model_or_the_side_file_never_blocks(small, tmp_path):
    """A FIFO where a model or its data should be: refused at once (opened non-blocking, fstat)."""
    fifo = tmp_path / "pipe.onnx"
    os.mkfifo(fifo)
    r = run_cli("inspect", fifo, timeout=30)
    assert not r.timed_out
    one_line(r.stderr, 2, r.code, contains="not a regular file")
    path, _ = _external(small, tmp_path / "m", "w.bin")
    os.mkfifo(tmp_path / "m" / "w.bin")
    r = run_cli("inspect", path, timeout=30)
    assert not r.timed_out
    one_line(r.stderr, 2, r.code, contains="not a regular file")
    # a FIFO swapped in after the path check: the descriptor is opened non-blocking and fstat'ed
    code = ("import sys; from pathlib import Path; from netmorph.onnx_io.external import _open_checked\n"
            "try:\n    _open_checked(Path(sys.argv[1]), 'w')\nexcept Exception as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "m" / "w.bin")], capture_output=True,
                         text=True, timeout=30)
    assert "changed while being opened" in out.stdout


@pytest.mark.parametrize(("location", "reason"), [
    ("w\0.bin", "not a usable file name"),
    ("x" * 5000, "not a usable file name"),
    ("under/w.bin", "cannot be used"),
    ("../w.bin", "leaves the model's folder"),
    ("/etc/passwd", "absolute location"),
])
def test_unusable_external_names_are_one_line(small, tmp_path, location, reason):
    path, _ = _external(small, tmp_path / "m", location)
    (tmp_path / "m" / "under").write_bytes(b"a regular file, not a folder")
    check_error(invoke("inspect", path), contains=reason)
    check_error(invoke("grow", path, "--pass", "deepen", "-o", tmp_path / "out.onnx"), contains=reason)
    assert not (tmp_path / "out.onnx").exists()


def _tampered(small: Path, path: Path, change) -> Path:
    model = onnx.load(small)
    change(model.graph.initializer[0])
    path.write_bytes(model.SerializeToString())
    return path


@pytest.mark.parametrize(("change", "reason"), [
    (lambda t: setattr(t, "raw_data", t.raw_data[:-4]), "need 432"),
    (lambda t: t.dims.__setitem__(0, -4), "negative dimension"),
    (lambda t: t.dims.__setitem__(0, 4000), "need 432000"),
])
def test_data_not_matching_declared_dims(small, tmp_path, change, reason):
    bad = _tampered(small, tmp_path / "bad.onnx", change)
    for args in (("inspect", bad), ("grow", bad, "--pass", "deepen", "-o", tmp_path / "o.onnx"),
                 ("verify", small, bad)):
        check_error(invoke(*args), contains=reason)
    assert not (tmp_path / "o.onnx").exists()


def _nested_if(depth: int) -> onnx.ModelProto:
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    one = helper.make_tensor("c", TensorProto.FLOAT, [1], [1.0])
    leaf = helper.make_graph([helper.make_node("Constant", [], ["y"], value=one)], "leaf", [], [y])
    g = leaf
    for i in range(depth):
        cond = helper.make_node("Constant", [], [f"c{i}"],
                                value=helper.make_tensor(f"cv{i}", TensorProto.BOOL, [], [True]))
        branch = helper.make_node("If", [f"c{i}"], ["y"], then_branch=g, else_branch=leaf)
        g = helper.make_graph([cond, branch], f"g{i}", [], [y])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def test_deeply_nested_subgraphs_are_one_line(tmp_path):
    path = tmp_path / "nested.onnx"
    path.write_bytes(_nested_if(32).SerializeToString())
    check_error(invoke("inspect", path), contains="nested")
    check_error(invoke("grow", path, "--pass", "deepen", "-o", tmp_path / "o.onnx"), contains="nested")


def test_invalid_utf8_names_are_one_line(small, tmp_path):
    data = small.read_bytes()
    name = b"level1.block1.conv1.weight"
    assert name in data
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(data.replace(name, name[:-1] + b"\xff"))
    check_error(invoke("grow", bad, "--pass", "deepen", "-o", tmp_path / "o.onnx"), contains="bad.onnx")
    assert not (tmp_path / "o.onnx").exists()


def test_debug_shows_the_traceback(small, tmp_path):
    bad = tmp_path / "bad.onnx"
    name = b"level1.block1.conv1.weight"
    bad.write_bytes(small.read_bytes().replace(name, name[:-1] + b"\xff"))
    r = run_cli("--debug", "grow", bad, "--pass", "deepen", "-o", tmp_path / "o.onnx")
    assert r.code == 1 and "Traceback" in r.stderr
    r = run_cli("grow", bad, "--pass", "deepen", "-o", tmp_path / "o.onnx", env={"NETMORPH_DEBUG": "1"})
    assert "Traceback" in r.stderr
    assert not (tmp_path / "o.onnx").exists()


def test_truncated_and_garbage_files(small, tmp_path):
    data = small.read_bytes()
    for i, blob in enumerate((data[: len(data) // 2], b"", os.urandom(3000), b"\x08" * 10)):
        p = tmp_path / f"t{i}.onnx"
        p.write_bytes(blob)
        check_error(invoke("inspect", p), contains=p.name)
    check_error(invoke("inspect", tmp_path), contains="not a regular file")
