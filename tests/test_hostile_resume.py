"""Resumed runs under attack: a stage folder that is a symlink to someone else's folder, a stage
model swapped for another architecture, files the run never wrote."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from hostile_util import check_error, invoke
from hostile_util import tree_digest as _tree

import netmorph
from netmorph.pipeline.run_folder import DIGESTS_NAME, LOCK_NAME

TRAIN = 'batch_size = 32\ndevice = "cpu"\nnum_threads = 1\npad = 2\n'


def tree_digest(folder: Path) -> dict[str, str]:
    """The folder's entries and contents, but the lock (its holder line is rewritten by every run)."""
    return {k: v for k, v in _tree(folder).items() if Path(k).name != LOCK_NAME}


def _toml(folder: Path, data: str, stages: int, name: str = "res") -> Path:
    text = (f'name = "{name}"\ndata = "{data}"\n[start]\nfamily = "plain"\nblocks = 2\n'
            f"channels = [4, 4, 4]\n[train]\n{TRAIN}[[stages]]\nepochs = 1\n")
    text += '[[stages]]\nepochs = 1\ngrow = "deepen"\n' * (stages - 1)
    path = folder / f"p{stages}.toml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def one_stage(tmp_path_factory, tiny_data) -> Path:
    """A finished one-stage run: resuming it with a two-stage pipeline appends stage 2."""
    root = tmp_path_factory.mktemp("res")
    res = invoke("run", _toml(root, tiny_data, 1), "--out-dir", root / "out", "--quiet")
    assert res.exit_code == 0, res.output
    return root / "out"


def _resume(tmp_path, tiny_data, run: Path):
    return invoke("run", _toml(tmp_path, tiny_data, 2), "--out-dir", run, "--quiet")


def test_symlinked_stage_folder_is_refused_and_the_foreign_folder_untouched(tmp_path, tiny_data, one_stage):
    run = shutil.copytree(one_stage, tmp_path / "run")
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "metrics.jsonl").write_text("someone else's metrics\n")
    (run / "stage_2").symlink_to(foreign, target_is_directory=True)
    before, before_run = tree_digest(foreign), tree_digest(run)
    check_error(_resume(tmp_path, tiny_data, run), contains="is a symlink")
    assert tree_digest(foreign) == before  # nothing replaced, nothing added
    assert tree_digest(run) == before_run


@pytest.mark.parametrize("where", ["stage_2/metrics.jsonl", "stage_2/checkpoint.pt", "stage_2.onnx"])
def test_symlinked_run_file_is_refused(tmp_path, tiny_data, one_stage, where):
    run = shutil.copytree(one_stage, tmp_path / "run")
    victim = tmp_path / "victim.txt"
    victim.write_text("mine\n")
    (run / where).parent.mkdir(exist_ok=True)
    (run / where).symlink_to(victim)
    before = tree_digest(run)
    check_error(_resume(tmp_path, tiny_data, run), contains="is a symlink")
    assert victim.read_text() == "mine\n" and tree_digest(run) == before


def test_swapped_stage_model_is_refused_on_resume(tmp_path, tiny_data, one_stage):
    run = shutil.copytree(one_stage, tmp_path / "run")
    other = netmorph.build("plain", blocks=3, channels=(4, 4, 4), classes=10, input_shape=(3, 16, 16))
    netmorph.save(other, run / "stage_1.onnx")  # another architecture under the finished stage's name
    before = tree_digest(run)
    check_error(_resume(tmp_path, tiny_data, run), contains="changed since the run wrote it")
    assert tree_digest(run) == before
    assert not (run / "stage_2").exists()


def test_unrecorded_init_is_made_again_and_a_changed_one_refused(tmp_path, tiny_data, one_stage):
    run = shutil.copytree(one_stage, tmp_path / "run")
    (run / "stage_2").mkdir()
    planted = netmorph.build("plain", blocks=5, channels=(4, 4, 4), classes=10, input_shape=(3, 16, 16))
    netmorph.save(planted, run / "stage_2" / "init.onnx")  # never written by the run: not reused
    (run / "stage_2" / "morph.json").write_text('{"summary": {"seconds": 0}}')
    res = _resume(tmp_path, tiny_data, run)
    assert res.exit_code == 0, res.output
    grown = netmorph.load(run / "stage_2" / "init.onnx")
    parent = netmorph.load(run / "stage_1.onnx")
    assert netmorph.recognise(grown).depth == netmorph.recognise(parent).depth + 3
    assert "stage_2/init.onnx" in (run / DIGESTS_NAME).read_text()
    # a recorded file edited afterwards is refused
    netmorph.save(planted, run / "stage_2.onnx")
    res = invoke("run", _toml(tmp_path, tiny_data, 2), "--out-dir", run, "--quiet")
    check_error(res, contains="changed since the run wrote it")


def test_run_file_may_not_be_the_start_model(tmp_path, tiny_data):
    out = tmp_path / "out"
    out.mkdir()
    start = out / "stage_1.onnx"
    netmorph.save(netmorph.build("plain", blocks=2, channels=(4, 4, 4), classes=10, input_shape=(3, 16, 16)),
                  start)
    (tmp_path / "p.toml").write_text(f'name = "s"\ndata = "{tiny_data}"\n[start]\npath = "{start}"\n'
                                     f"[train]\n{TRAIN}[[stages]]\nepochs = 1\n")
    before = tree_digest(tmp_path)
    check_error(invoke("run", tmp_path / "p.toml", "--out-dir", out, "--quiet"), contains="start model")
    assert tree_digest(tmp_path) == before
