"""Run folders, pipelines and training runs under attack: names that escape, foreign or busy folders,
tampered results, bad numbers in TOML and flags, absurd sizes, diverging training, existing runs."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import onnx
import pytest
from hostile_util import MiB, check_error, invoke, one_line, run_cli, tree_digest
from onnx import TensorProto, helper, numpy_helper

import netmorph
from netmorph.pipeline.run_folder import LOCK_NAME, MARKER_NAME, claim

TRAIN = 'batch_size = 32\ndevice = "cpu"\nnum_threads = 1\npad = 2\n'


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> str:
    from netmorph.data import make_synthetic

    train, test = make_synthetic(64, 32, size=16, seed=3)
    path = tmp_path_factory.mktemp("data") / "tiny.npz"
    np.savez(path, x_train=train.images, y_train=train.labels, x_test=test.images, y_test=test.labels)
    return f"npz:{path}"


def _toml(tmp_path: Path, data: str, *, name: str = "tiny", train: str = TRAIN, stages: int = 1,
          extra: str = "", stage_extra: str = "") -> Path:
    text = (f'name = "{name}"\ndata = "{data}"\n{extra}[start]\nfamily = "plain"\nblocks = 2\n'
            f"channels = [4, 4, 4]\n[train]\n{train}")
    text += "[[stages]]\nepochs = 1\n"
    for _ in range(stages - 1):
        text += f'[[stages]]\nepochs = 1\ngrow = "deepen"\n{stage_extra}'
    path = tmp_path / (re.sub(r"[^a-z]", "", name)[:20] + "-pipeline.toml")
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, tiny_data) -> Path:
    """A real one-stage run (1 epoch) to copy and tamper with."""
    root = tmp_path_factory.mktemp("run")
    res = invoke("run", _toml(root, tiny_data), "--out-dir", root / "out", "--quiet")
    assert res.exit_code == 0, res.output
    return root / "out"


def _copy_run(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


@pytest.mark.parametrize("name", ["/abs", "../..", "..", ".hidden", "a/b", "x" * 101, "-rf"])
def test_pipeline_name_must_be_one_safe_folder_name(tmp_path, tiny_data, monkeypatch, name):
    monkeypatch.chdir(tmp_path)
    path = _toml(tmp_path, tiny_data, name=name.replace('"', ""))
    before = tree_digest(tmp_path)
    for extra in ((), ("--check",)):
        check_error(invoke("run", path, "--quiet", *extra), contains="not a safe folder name")
    assert tree_digest(tmp_path) == before and not Path("/abs").exists()


def test_foreign_non_empty_folder_is_refused_untouched(tmp_path, tiny_data, finished_run):
    foreign = tmp_path / "foreign"
    (foreign / "stage_1").mkdir(parents=True)
    (foreign / "pipeline.toml").write_text("someone else's")
    (foreign / "stage_1" / "init.onnx").write_bytes((finished_run / "stage_1.onnx").read_bytes())
    before = tree_digest(foreign)
    for flag in ("--resume", "--no-resume"):
        res = invoke("run", _toml(tmp_path, tiny_data), "--out-dir", foreign, "--quiet", flag)
        check_error(res, contains="not a netmorph run folder")
    assert tree_digest(foreign) == before


def test_another_pipelines_folder_is_refused(tmp_path, tiny_data, finished_run):
    out = _copy_run(finished_run, tmp_path / "out")
    before = tree_digest(out)
    res = invoke("run", _toml(tmp_path, tiny_data, name="other"), "--out-dir", out, "--quiet")
    check_error(res, contains="belongs to pipeline 'tiny'")
    res = invoke("run", _toml(tmp_path, tiny_data), "--out-dir", out, "--quiet", "--no-resume")
    check_error(res, contains="already holds a run")
    assert tree_digest(out) == before


def test_a_second_run_on_a_busy_folder_exits_2_naming_the_holder(tmp_path, tiny_data, finished_run):
    out = _copy_run(finished_run, tmp_path / "out")
    path = _toml(tmp_path, tiny_data, stages=2)
    with claim(out, "tiny", resume=True):
        before = tree_digest(out)
        res = invoke("run", path, "--out-dir", out, "--quiet")
        line = check_error(res, contains="in use by another run")
        assert "pid " in line
        assert tree_digest(out) == before
    assert (out / MARKER_NAME).is_file() and (out / LOCK_NAME).is_file()


@pytest.mark.parametrize("model", ["../evil.onnx", "/tmp/evil.onnx", "link.onnx"])
def test_resume_loads_only_files_inside_the_run_folder(tmp_path, tiny_data, finished_run, model):
    out = _copy_run(finished_run, tmp_path / "out")
    evil = tmp_path / "evil.onnx"
    evil.write_bytes((finished_run / "stage_1.onnx").read_bytes())
    (out / "link.onnx").symlink_to(evil)
    results = json.loads((out / "results.json").read_text())
    results["stages"][0]["model"] = model
    (out / "results.json").write_text(json.dumps(results))
    res = invoke("run", _toml(tmp_path, tiny_data, stages=2), "--out-dir", out, "--quiet")
    check_error(res, contains="leaves the run folder" if model != "link.onnx" else "symlink")
    assert not (out / "stage_2.onnx").exists()


@pytest.mark.parametrize(("train", "reason"), [
    ('milestones = ["a"]\n', "milestone must be a number"),
    ("device = 5\n", "device must be one of"),
    ("num_threads = 1.5\n", "num_threads must be an integer"),
    ("pad = 1.5\n", "pad must be an integer"),
    ("eval_batch_size = 2.5\n", "eval_batch_size must be an integer"),
    ("warmup_epochs = inf\n", "warmup_epochs must be finite"),
    ("lr = inf\n", "lr must be finite"),
    ("weight_decay = inf\n", "weight_decay must be finite"),
    ("lr = nan\n", "lr must be finite"),
    ("batch_size = 100000000000\n", "batch_size must be <="),
])
def test_train_table_numbers_are_validated_before_any_work(tmp_path, tiny_data, train, reason):
    path = _toml(tmp_path, tiny_data, train=train)
    for extra in (("--check",), ("--out-dir", tmp_path / "out")):
        check_error(invoke("run", path, "--quiet", *extra), contains=reason)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("stage_extra", "extra", "reason"), [
    ('solver = "magic"\n', "", "not one of"),
    ("options = { bogus = 1 }\n", "", "has no option 'bogus'"),
    ("options = { cmid = 1000000000000 }\n", "", "cmid must be <="),
    ("options = { max_iter = 1.5 }\n", "", "max_iter must be an integer"),
    ("", 'lr_policy = "restart:inf"\n', "must be finite"),
])
def test_check_resolves_passes_and_options(tmp_path, tiny_data, stage_extra, extra, reason):
    path = _toml(tmp_path, tiny_data, stages=2, stage_extra=stage_extra, extra=extra)
    for more in (("--check",), ("--out-dir", tmp_path / "out")):
        check_error(invoke("run", path, "--quiet", *more), contains=reason)
    assert not (tmp_path / "out" / "stage_1.onnx").exists()


def test_unknown_pass_fails_before_stage_1_trains(tmp_path, tiny_data):
    path = _toml(tmp_path, tiny_data, stages=2)
    path.write_text(path.read_text().replace('grow = "deepen"', 'grow = "widen-magic"'))
    check_error(invoke("run", path, "--check"), contains="no pass named 'widen-magic'")
    res = invoke("iterate", "plain:2", "--schedule", "nope:1", "--epochs-per-stage", "1", "--data", tiny_data,
                 "--out-dir", tmp_path / "it", "--quiet")
    check_error(res, contains="no pass named 'nope'")
    assert not (tmp_path / "it" / "stage_1.onnx").exists()


@pytest.mark.parametrize("args", [
    ("new", "plain", "-n", "2", "--levels", "1000000000000", "-o", "x.onnx"),
    ("new", "plain", "-n", "1000000000", "-o", "x.onnx"),
    ("new", "plain", "-n", "2", "--channels", "100000000,2,2", "-o", "x.onnx"),
    ("new", "plain", "-n", "2", "--classes", "100000000000", "-o", "x.onnx"),
    ("new", "plain", "-n", "2", "--input", "3x100000000x100000000", "-o", "x.onnx"),
    ("iterate", "plain:2", "--schedule", "deepen:1000000000", "--epochs-per-stage", "1", "--data",
     "synthetic:32", "--out-dir", "it"),
])
def test_absurd_sizes_are_refused_up_front(tmp_path, args):
    r = run_cli(*args, cwd=tmp_path, timeout=60, mem_limit=6 << 30)
    one_line(r.stderr, 2, r.code, contains="<=")
    assert r.max_rss < 500 * MiB, f"{r.max_rss / MiB:.0f} MiB"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("args", "reason"), [
    (("--rtol", "nan"), "--rtol must be finite"), (("--atol", "-1"), "--atol must be >= 0"),
    (("--seed", "-1"), "--seed must be >= 0"), (("--cmid", "1000000000"), "cmid must be <="),
    (("--repeat", "100000000"), "--repeat must be <="),
])
def test_grow_numeric_options(tmp_path, args, reason):
    model = _plain(tmp_path / "m.onnx")
    check_error(invoke("grow", model, "--pass", "deepen", *args, "-o", tmp_path / "o.onnx"), contains=reason)
    assert not (tmp_path / "o.onnx").exists()


# -- netmorph train ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def plain16(tmp_path_factory) -> Path:
    return _plain(tmp_path_factory.mktemp("plain16") / "m.onnx")


def _plain(path: Path) -> Path:
    netmorph.save(netmorph.build("plain", levels=3, blocks=2, channels=(4, 4, 4), input_shape=(3, 16, 16)),
                  path)
    return path


def _train(model, data, output, *more):
    return invoke("train", model, "--data", data, "-o", output, "--epochs", "1", "--batch-size", "32",
                  "--device", "cpu", "--num-threads", "1", "-q", *more)


def test_train_refuses_an_existing_run_without_resume_or_overwrite(tmp_path, plain16, tiny_data):
    out = tmp_path / "t.onnx"
    assert _train(plain16, tiny_data, out).exit_code == 0
    run_dir = tmp_path / "t.run"
    before = tree_digest(run_dir)
    model_before = out.read_bytes()
    check_error(_train(plain16, tiny_data, out), contains="--resume to continue it or --overwrite")
    assert tree_digest(run_dir) == before and out.read_bytes() == model_before
    res = _train(plain16, tiny_data, out, "--overwrite")
    assert res.exit_code == 0, res.output
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():  # standard JSON: no NaN tokens
        json.loads(line, parse_constant=lambda c: pytest.fail(f"non-standard JSON token {c}"))
    check_error(_train(plain16, tiny_data, out, "--overwrite", "--resume"), contains="contradict")


@pytest.mark.parametrize(("more", "reason"), [
    (("--lr", "inf"), "lr must be finite"), (("--weight-decay", "inf"), "weight_decay must be finite"),
    (("--warmup", "nan"), "warmup_epochs must be finite"), (("--nproc", "100000"), "--nproc must be <="),
    (("--num-threads", "100000"), "num_threads must be <="), (("--seed", "-1"), "seed must be >= 0"),
])
def test_train_numbers_are_validated_before_any_work(tmp_path, plain16, tiny_data, more, reason):
    check_error(_train(plain16, tiny_data, tmp_path / "t.onnx", *more), contains=reason)
    assert list(tmp_path.iterdir()) == []


def test_train_into_an_unwritable_output_fails_before_training(tmp_path, plain16, tiny_data):
    link = tmp_path / "t.onnx"
    link.symlink_to("/proc/self/fd/1")
    check_error(_train(plain16, tiny_data, link), contains="symlink")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.onnx"]


def test_diverging_training_stops_with_a_clear_error(tmp_path, plain16, tiny_data):
    out = tmp_path / "t.onnx"
    res = _train(plain16, tiny_data, out, "--lr", "1e30", "--weight-decay", "0")
    check_error(res, contains="diverged")
    assert not out.exists()


def test_divergence_keeps_the_last_good_checkpoint(tmp_path, plain16):
    """Epoch 2 diverges (its weights are poisoned after epoch 1): the error names the kept epoch-1
    checkpoint, which is untouched and finite."""
    import torch

    from netmorph.data import make_synthetic
    from netmorph.train import TrainConfig, fit, load_checkpoint
    from netmorph.train.loop import TrainingDiverged

    train, test = make_synthetic(32, 16, size=16, seed=1)
    module = netmorph.lower(netmorph.load(plain16))

    def poison(record):
        with torch.no_grad():
            next(module.parameters()).fill_(float("nan"))

    config = TrainConfig(epochs=3, batch_size=16, device="cpu", num_threads=1, pad=0)
    with pytest.raises(TrainingDiverged, match=r"epoch 2 .*last good checkpoint \(epoch 1\)"):
        fit(module, train, test, config, out_dir=tmp_path, progress=False, on_epoch=poison)
    state = load_checkpoint(tmp_path / "checkpoint.pt")
    assert state["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 1 and math.isfinite(json.loads(lines[0])["train_loss"])


def test_bn_folded_model_gets_a_warning_with_restore_bn(tmp_path, tiny_data):
    rng = np.random.default_rng(0)
    init = [numpy_helper.from_array((rng.standard_normal(s) * 0.3).astype(np.float32), n)
            for n, s in (("conv.weight", (4, 3, 3, 3)), ("conv.bias", (4,)), ("fc.weight", (10, 4)),
                         ("fc.bias", (10,)))]
    nodes = [helper.make_node("Conv", ["x", "conv.weight", "conv.bias"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]), helper.make_node("GlobalAveragePool", ["r"], ["p"]),
             helper.make_node("Flatten", ["p"], ["f"]),
             helper.make_node("Gemm", ["f", "fc.weight", "fc.bias"], ["logits"], transB=1)]
    graph = helper.make_graph(nodes, "folded", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                                ["N", 3, 16, 16])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])], init)
    model = tmp_path / "folded.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), model)
    res = _train(model, tiny_data, tmp_path / "t.onnx")
    assert res.exit_code == 0, res.output
    assert "no BatchNorm" in res.output and "--pass restore-bn" in res.output


@pytest.mark.parametrize("kind", ["empty", "directory", "other-model", "missing-key", "garbage"])
def test_bad_checkpoints_on_resume_are_one_line(tmp_path, plain16, tiny_data, kind):
    import torch

    out = tmp_path / "t.onnx"
    assert _train(plain16, tiny_data, out).exit_code == 0
    ckpt = tmp_path / "t.run" / "checkpoint.pt"
    if kind == "empty":
        ckpt.write_bytes(b"")
    elif kind == "directory":
        ckpt.unlink()
        ckpt.mkdir()
    elif kind == "garbage":
        ckpt.write_bytes(b"PK\x03\x04" + bytes(100))
    elif kind == "missing-key":
        state = torch.load(ckpt, weights_only=True)
        del state["model"]
        torch.save(state, ckpt)
    else:
        other = tmp_path / "wide.onnx"
        wide = netmorph.build("plain", levels=3, blocks=2, channels=(8, 8, 8), input_shape=(3, 16, 16))
        netmorph.save(wide, other)
        assert _train(other, tiny_data, tmp_path / "w.onnx").exit_code == 0
        ckpt.write_bytes((tmp_path / "w.run" / "checkpoint.pt").read_bytes())
    model_before = out.read_bytes()
    check_error(_train(plain16, tiny_data, out, "--resume", "--epochs", "2"), contains="checkpoint")
    assert out.read_bytes() == model_before


def test_a_huge_sparse_results_file_is_not_read(tmp_path, tiny_data, finished_run):
    import subprocess

    # the same refusal on a 1 KiB file: what the process needs anyway (PyTorch's import alone is
    # 300-650 MiB, by build); reading the 20 GB file would take far more than 200 MiB beyond that
    small = _copy_run(finished_run, tmp_path / "small")
    (small / "results.json").write_bytes(b"x" * 1024)
    r0 = run_cli("run", _toml(tmp_path, tiny_data, stages=2), "--out-dir", small, "--quiet",
                 mem_limit=6 << 30)
    one_line(r0.stderr, 2, r0.code, contains="cannot read")
    out = _copy_run(finished_run, tmp_path / "out")
    subprocess.run(["truncate", "-s", "20G", str(out / "results.json")], check=True)
    r = run_cli("run", _toml(tmp_path, tiny_data, stages=2), "--out-dir", out, "--quiet", mem_limit=6 << 30)
    one_line(r.stderr, 2, r.code, contains="not a results file")
    assert r.max_rss < r0.max_rss + 200 * MiB, f"{r.max_rss / MiB:.0f} MiB vs {r0.max_rss / MiB:.0f} MiB"
    assert not (out / "stage_2.onnx").exists()


def test_a_run_made_before_markers_is_adopted_on_resume_only(tmp_path, tiny_data, finished_run):
    out = _copy_run(finished_run, tmp_path / "out")
    (out / MARKER_NAME).unlink()
    (out / LOCK_NAME).unlink()
    before = tree_digest(out)
    check_error(invoke("run", _toml(tmp_path, tiny_data), "--out-dir", out, "--quiet", "--no-resume"),
                contains="not a netmorph run folder")
    check_error(invoke("run", _toml(tmp_path, tiny_data, name="other"), "--out-dir", out, "--quiet"),
                contains="not a netmorph run folder")
    assert tree_digest(out) == before
    res = invoke("run", _toml(tmp_path, tiny_data), "--out-dir", out, "--quiet")
    assert res.exit_code == 0, res.output
    assert (out / MARKER_NAME).is_file()


def test_a_diverging_pipeline_is_not_complete(tmp_path, tiny_data):
    path = _toml(tmp_path, tiny_data, train=TRAIN + "lr = 1e30\nweight_decay = 0.0\n")
    check_error(invoke("run", path, "--out-dir", tmp_path / "out", "--quiet"), contains="diverged")
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["status"] == "interrupted" and results["stages"] == []
    assert not (tmp_path / "out" / "stage_1.onnx").exists()
    for line in (tmp_path / "out" / "stage_1" / "metrics.jsonl").read_text().splitlines():
        json.loads(line, parse_constant=lambda c: pytest.fail(f"non-standard JSON token {c}"))


def test_fifos_as_pipeline_or_data_files_never_block(tmp_path, plain16):
    import os

    fifo = tmp_path / "p.toml"
    os.mkfifo(fifo)
    r = run_cli("run", fifo, "--check", timeout=30)
    assert not r.timed_out
    one_line(r.stderr, 2, r.code, contains="not a regular file")
    folder = tmp_path / "c" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    (folder / "test_batch").write_bytes(b"")
    os.mkfifo(folder / "data_batch_1")
    r = run_cli("train", plain16, "--data", f"cifar10:{tmp_path / 'c'}", "-o", tmp_path / "t.onnx",
                timeout=30)
    assert not r.timed_out
    one_line(r.stderr, 2, r.code, contains="not a regular file")
