"""Iterative learning pipelines: spec/TOML, lr policies, presets, a real interrupted run, plots, CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from netmorph.cli.main import cli

import netmorph
from netmorph.pipeline import (
    Baseline,
    Pipeline,
    PipelineError,
    Results,
    Stage,
    Start,
    dumps_pipeline,
    load_pipeline,
    loads_pipeline,
    paper_depth,
    paper_depths,
    paper_pipeline,
    parse_lr_policy,
    parse_schedule,
    plot_run,
    run_pipeline,
    save_pipeline,
    stage_config,
)
from netmorph.pipeline.lr_policy import LrPolicyError
from netmorph.train import TrainConfig, lr_factor

TINY_CHANNELS = (4, 8, 8)
TRAIN = {"batch_size": 32, "device": "cpu", "num_threads": 2, "pad": 2}


# -- spec and TOML --------------------------------------------------------------------------------


def test_toml_round_trip_keeps_every_field(tmp_path):
    p = Pipeline(
        start=Start(family="resnet", options={"blocks": 1, "residual_ratio": 0.5, "channels": (4, 8, 8)}),
        data='npz:quote " and \\ path.npz',  # a pipeline name must be a safe folder name; quotes go here
        stages=(Stage(3), Stage(2, grow="deepen", solver="lsq", options={"max_iter": 7}),
                Stage(2, grow="deepen-level", options={"level": "2"}, lr_policy="warmup:0.5:0.05")),
        train={"batch_size": 16, "milestones": (0.25, 0.5), "amp": None, "device": "cpu"},
        lr_policy="restart:0.02", seed=5, name="round trip",
        baseline=Baseline(budget="total", depths="final", epochs=9, seed=1), verify=False,
    )
    text = dumps_pipeline(p)
    assert loads_pipeline(text) == p
    save_pipeline(p, tmp_path / "p.toml")
    assert load_pipeline(tmp_path / "p.toml") == p
    for preset in (paper_pipeline("plain", half=True), paper_pipeline("resnet", residual_ratio=0.7,
                                                                         lr_policy="continue")):
        assert loads_pipeline(dumps_pipeline(preset)) == preset


@pytest.mark.parametrize("path", sorted((Path(__file__).parents[1] / "examples").glob("*.toml")),
                         ids=lambda p: p.name)
def test_example_pipelines_load(path):
    p = load_pipeline(path)
    assert p.stages[0].grow is None and all(s.grow for s in p.stages[1:])
    assert loads_pipeline(dumps_pipeline(p)) == p


def test_relative_start_path_is_relative_to_the_file(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "p.toml").write_text(
        'data = "synthetic"\n[start]\npath = "m.onnx"\n[[stages]]\nepochs = 1\n', encoding="utf-8")
    p = load_pipeline(tmp_path / "sub" / "p.toml")
    assert Path(p.start.path) == (tmp_path / "sub" / "m.onnx").resolve()


@pytest.mark.parametrize("text, needle", [
    ('data = "synthetic"\n[start\nfamily = "plain"', "invalid TOML"),
    ('data = "synthetic"\n[start]\nfamily = "plain"\n[[stages]]\nepoch = 3\n', "unknown key 'epoch'"),
    ('data = "synthetic"\n[start]\nfamily = "plain"\n', "missing 'stages'"),
    ('data = "mnist:x"\n[start]\nfamily = "plain"\n[[stages]]\nepochs = 1\n', "unknown kind 'mnist'"),
    ('data = "synthetic"\n[start]\nfamily = "plain"\nblocks = 0\n[[stages]]\nepochs = 1\n', "blocks"),
    ('data = "synthetic"\nlr_policy = "sometimes"\n[start]\nfamily = "plain"\n[[stages]]\nepochs = 1\n',
     "unknown lr policy"),
    ('data = "synthetic"\n[start]\nfamily = "plain"\n[train]\nepochs = 4\n[[stages]]\nepochs = 1\n',
     "set per stage"),
    ('data = "synthetic"\n[start]\nfamily = "plain"\n[train]\nlr = -1.0\n[[stages]]\nepochs = 1\n', "lr"),
    ('data = "synthetic"\n[start]\nfamily = "plain"\npath = "a.onnx"\n[[stages]]\nepochs = 1\n',
     "exactly one of"),
])
def test_bad_pipeline_file_is_one_line_exit_2(tmp_path, text, needle):
    path = tmp_path / "bad.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(PipelineError, match="bad.toml"):
        load_pipeline(path)
    res = CliRunner().invoke(cli, ["run", str(path), "--out-dir", str(tmp_path / "out")])
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("netmorph: error: ") and "bad.toml" in lines[0]
    assert needle in lines[0]
    assert not (tmp_path / "out").exists()


def test_missing_pipeline_file_exit_2(tmp_path):
    res = CliRunner().invoke(cli, ["run", str(tmp_path / "nope.toml")])
    assert res.exit_code == 2 and "no such pipeline file" in res.output


# -- learning-rate policies -----------------------------------------------------------------------


def test_lr_policy_parsing():
    assert parse_lr_policy("restart").lr is None
    assert parse_lr_policy("restart:0.02").lr == pytest.approx(0.02)
    w = parse_lr_policy("warmup:2:0.05")
    assert (w.kind, w.warmup, w.lr) == ("warmup", 2.0, 0.05)
    assert parse_lr_policy("continue").kind == "continue"
    for bad in ("restart:-1", "warmup", "warmup:x", "continue:3", "cosine", 3):
        with pytest.raises(LrPolicyError):
            parse_lr_policy(bad)


def _stage_lrs(cfg: TrainConfig, steps: int) -> list[float]:
    return [cfg.lr * lr_factor(i, cfg, steps) for i in range(cfg.epochs * steps)]


@pytest.mark.parametrize("schedule", ["step", "cosine"])
def test_continue_policy_follows_the_pipeline_wide_schedule(schedule):
    base = TrainConfig(epochs=1, lr=0.1, milestones=(0.5, 0.75), schedule=schedule, warmup_epochs=1)
    stage_epochs = [3, 5, 4, 4]
    total = sum(stage_epochs)
    expected = _stage_lrs(base.replace(epochs=total), 10)
    got, offset = [], 0
    for i, e in enumerate(stage_epochs):
        cfg = stage_config(base, "continue", epochs=e, offset=offset, total=total, first=i == 0)
        got += _stage_lrs(cfg, 10)
        offset += e
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    assert expected[0] == pytest.approx(0.01) and max(expected) == pytest.approx(0.1)
    assert expected[-1] < 0.002  # the end of the one schedule, not a restart


def test_restart_and_warmup_policies():
    base = TrainConfig(epochs=1, lr=0.1)
    first = stage_config(base, "restart:0.01", epochs=8, offset=0, total=16, first=True)
    assert first.lr == pytest.approx(0.1) and first.epochs == 8  # the first stage keeps the recipe
    r = stage_config(base, "restart:0.01", epochs=8, offset=8, total=16, first=False)
    assert r.lr == pytest.approx(0.01) and _stage_lrs(r, 4)[-1] == pytest.approx(0.01 * 0.01)
    w = stage_config(base, "warmup:2", epochs=8, offset=8, total=16, first=False)
    assert w.warmup_epochs == 2 and lr_factor(0, w, 4) == pytest.approx(1 / 8)


# -- presets ----------------------------------------------------------------------------------------


def test_paper_presets_have_the_papers_depths():
    assert paper_depths("plain") == [7, 10, 16, 28, 52, 100]
    assert paper_depths("resnet") == [8, 14, 26, 50, 98]
    p = paper_pipeline("plain", data="synthetic", epochs=320, half=True, max_depth=52)
    assert [s.epochs for s in p.stages] == [160] * 5
    assert [s.grow for s in p.stages] == [None] + ["deepen"] * 4
    assert {s.solver for s in p.stages[1:]} == {"optgd"}
    assert p.baseline.epochs_for(p.stages, 4) == 320  # FixLearn keeps the full budget (Table 3)
    r = paper_pipeline("resnet", residual_ratio=0.5, epochs=10, baseline_budget="total")
    assert r.start.options["residual_ratio"] == 0.5 and r.start.options["blocks"] == 1
    assert r.baseline.epochs_for(r.stages, 2) == 30
    stages = parse_schedule("deepen:2,deepen-level:1", 4, solver="lsq", options={"level": 1})
    assert [s.grow for s in stages] == [None, "deepen", "deepen", "deepen-level"]
    with pytest.raises(PipelineError):
        parse_schedule("deepen:x", 4)


# -- a real run: 3 IterLearn stages + FixLearn, interrupted mid-stage, resumed, plotted -----------


def _tiny_pipeline(data: str) -> Pipeline:
    return Pipeline(
        start=Start(family="plain", options={"blocks": 2, "channels": TINY_CHANNELS, "seed": 1}),
        data=data,
        stages=(Stage(1), Stage(2, grow="deepen"),
                Stage(1, grow="deepen", solver="optgd", options={"max_iter": 20, "approx_atol": 1.0})),
        train=TRAIN, baseline=Baseline(), name="tiny-plain", seed=2,
    )


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, tiny_data):
    """Run the tiny pipeline, interrupt it (for real) after epoch 1 of stage 2, then resume it."""
    out = tmp_path_factory.mktemp("run") / "plain"
    pipeline = _tiny_pipeline(tiny_data)
    seen: list[tuple[str, int]] = []
    epochs_seen: list[int] = []
    state = {"interrupt": True}

    def on_epoch(record):
        epochs_seen.append(record["epoch"])
        if state["interrupt"] and len(seen) == 1 and record["epoch"] == 1:
            raise KeyboardInterrupt  # like Ctrl-C in the middle of stage 2

    def on_stage(record):
        seen.append((record.run, record.index))

    with pytest.raises(KeyboardInterrupt):
        run_pipeline(pipeline, out, progress=False, on_stage=on_stage, on_epoch=on_epoch)
    interrupted = Results.load(out)
    stage1 = (out / "stage_1.onnx").stat().st_mtime_ns, (out / "stage_1" / "metrics.jsonl").read_text()
    first_run = (list(seen), list(epochs_seen))
    seen.clear()
    epochs_seen.clear()
    state["interrupt"] = False
    results = run_pipeline(pipeline, out, progress=False, on_stage=on_stage, on_epoch=on_epoch)
    return {"out": out, "results": results, "interrupted": interrupted, "stage1": stage1,
            "first_run": first_run, "second_run": (list(seen), list(epochs_seen)), "pipeline": pipeline}


def test_interrupted_run_resumes_without_redoing_stages(finished_run):
    out = finished_run["out"]
    interrupted = finished_run["interrupted"]
    assert interrupted.status == "interrupted" and [s.index for s in interrupted.stages] == [1]
    assert finished_run["first_run"] == ([("iterlearn", 1)], [1, 1])
    seen, epochs = finished_run["second_run"]
    # stage 1 is not redone; stage 2 continues with its epoch 2 from the checkpoint
    assert seen == [("iterlearn", 2), ("iterlearn", 3), ("fixlearn", 1), ("fixlearn", 2), ("fixlearn", 3)]
    assert epochs == [2, 1, 1, 1, 2, 1]
    assert (out / "stage_1.onnx").stat().st_mtime_ns == finished_run["stage1"][0]
    assert (out / "stage_1" / "metrics.jsonl").read_text() == finished_run["stage1"][1]
    stage2 = [json.loads(ln) for ln in (out / "stage_2" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in stage2] == [1, 2]


def test_results_json_schema_and_depths(finished_run):
    out, pipeline = finished_run["out"], finished_run["pipeline"]
    data = json.loads((out / "results.json").read_text())
    assert data["format"] == "netmorph-pipeline-results/1" and data["status"] == "complete"
    assert Pipeline.from_dict(data["pipeline"]).stages == pipeline.stages
    assert json.loads(json.dumps(load_pipeline(out / "pipeline.toml").to_dict())) == data["pipeline"]
    keys = {"index", "run", "depth", "blocks_per_level", "params", "epochs", "cumulative_epochs", "train_err",
            "test_err", "lr", "lr_policy", "train_time_s", "morph_time_s", "wall_time_s", "morph", "model",
            "metrics"}
    for run, records in (("iterlearn", data["stages"]), ("fixlearn", data["baseline"])):
        assert [r["index"] for r in records] == [1, 2, 3]
        for r in records:
            assert keys <= set(r) and r["run"] == run
            assert 0.0 <= r["test_err"] <= 1.0 and 0.0 <= r["train_err"] <= 1.0
            assert r["train_time_s"] > 0 and r["wall_time_s"] > 0
            assert (out / r["model"]).is_file() and (out / r["metrics"]).is_file()
    it, fx = data["stages"], data["baseline"]
    blocks = [2, 3, 5]  # PlainNet n -> 2n - 1
    assert [r["blocks_per_level"] for r in it] == [[n] * 3 for n in blocks]
    assert [r["depth"] for r in it] == [3 * n + 1 for n in blocks]
    assert [r["depth"] for r in it] == [paper_depth("plain", n) for n in blocks]
    assert [r["depth"] for r in fx] == [r["depth"] for r in it]
    assert [r["epochs"] for r in it] == [1, 2, 1] and [r["cumulative_epochs"] for r in it] == [1, 3, 4]
    assert [r["epochs"] for r in fx] == [1, 2, 1]
    assert it[0]["morph"] is None
    exact, approx = it[1]["morph"], it[2]["morph"]
    assert exact["solver"] == "exact" and exact["verified"] and exact["max_abs"] < 1e-4
    assert exact["depth_before"] == 7 and exact["depth_after"] == 10
    assert approx["solver"] == "optgd" and approx["verified"] and approx["contract"]["kind"] == "approx"
    assert math.isfinite(approx["max_rel"]) and approx["max_residual"] > 0
    assert it[1]["params"] > it[0]["params"] and it[2]["params"] > it[1]["params"]
    # the FixLearn model of a depth is a plain DynamicNet: fewer parameters than the grown one
    assert fx[2]["params"] < it[2]["params"]


def test_growth_is_function_preserving_between_stages(finished_run):
    out = finished_run["out"]
    parent, child = netmorph.load(out / "stage_1.onnx"), netmorph.load(out / "stage_2" / "init.onnx")
    report = netmorph.verify(parent, child)
    assert report.ok and report.max_abs < 1e-4


def test_plots_are_valid_pngs(finished_run, tmp_path):
    import matplotlib.image as mpimg

    out = finished_run["out"]
    paths = plot_run(out, tmp_path / "plots")
    assert [p.name for p in paths] == ["error_vs_depth.png", "error_vs_epochs.png"]
    for p in paths:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        img = mpimg.imread(p)
        assert img.ndim == 3 and img.shape[0] > 200 and img.shape[1] > 300
        assert float(img[..., :3].std()) > 0.01  # not a blank canvas
    res = CliRunner().invoke(cli, ["plot", str(out)])
    assert res.exit_code == 0, res.output
    assert (out / "error_vs_depth.png").is_file() and "IterLearn" in res.output


def test_resume_refuses_a_different_pipeline(finished_run):
    other = finished_run["pipeline"].replace(seed=99)
    with pytest.raises(PipelineError, match="different pipeline"):
        run_pipeline(other, finished_run["out"], progress=False)
    with pytest.raises(PipelineError, match="already holds a run"):
        run_pipeline(finished_run["pipeline"], finished_run["out"], resume=False, progress=False)


def test_cli_iterate_onnx_start_with_fixlearn(tmp_path, tiny_data):
    start = tmp_path / "start.onnx"
    netmorph.save(netmorph.build("resnet", blocks=1, residual_ratio=0.5, channels=TINY_CHANNELS,
                                 input_shape=(3, 16, 16), seed=4), start)
    out = tmp_path / "iter"
    args = ["iterate", str(start), "--schedule", "deepen:1", "--epochs-per-stage", "2", "--half",
            "--data", tiny_data, "--out-dir", str(out), "--baseline", "fixlearn",
            "--baseline-depths", "final",
            "--batch-size", "48", "--device", "cpu", "--lr-policy", "restart:0.05", "--quiet"]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    results = Results.load(out)
    assert [s.depth for s in results.stages] == [8, 14]  # ResNet 6n + 2, n -> 2n
    assert [s.epochs for s in results.stages] == [1, 1] and results.stages[1].lr == pytest.approx(0.05)
    assert [(b.index, b.depth, b.epochs) for b in results.baseline] == [(2, 14, 2)]  # full budget
    assert results.stages[1].morph["max_abs"] < 1e-4
    written = load_pipeline(out / "pipeline.toml")
    assert written.start.path == str(start.resolve()) and written.lr_policy == "restart:0.05"
    res = CliRunner().invoke(cli, ["run", str(out / "pipeline.toml"), "--out-dir", str(out), "--quiet"])
    assert res.exit_code == 0 and "14" in res.output  # a finished run: nothing left to do


def test_cli_iterate_writes_a_pipeline_and_refuses_bad_input(tmp_path):
    path = tmp_path / "p.toml"
    args = ["iterate", "resnet:2:0.7", "--schedule", "deepen:2,deepen-level:1", "--epochs-per-stage", "10",
            "--half", "--solver", "lsq", "--option", "max_iter=50", "--option", "level=all",
            "--lr-policy", "continue", "--data", "synthetic:100", "--out-dir", str(tmp_path / "run"),
            "--baseline", "fixlearn", "--baseline-budget", "total", "--write-pipeline", str(path)]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    p = load_pipeline(path)
    assert p.start == Start(family="resnet", options={"blocks": 2, "residual_ratio": 0.7})
    assert [s.epochs for s in p.stages] == [5] * 4 and [s.grow for s in p.stages][1:] == [
        "deepen", "deepen", "deepen-level"]
    assert p.stages[1].solver == "lsq" and p.stages[1].options == {"max_iter": 50, "level": "all"}
    assert p.baseline == Baseline(budget="total", epochs=10) and p.lr_policy == "continue"
    assert not (tmp_path / "run").exists()
    res = CliRunner().invoke(cli, ["run", str(path), "--check"])
    assert res.exit_code == 0 and "stage 4: deepen-level" in res.output
    for bad, needle in ((["squeezenet"], "not a builder spec"), (["plain:2:0.5"], "resnet only"),
                        (["plain", "--lr-policy", "often"], "unknown lr policy"),
                        (["plain", "--schedule", "deepen:two"], "expected PASS")):
        res = CliRunner().invoke(cli, ["iterate", *bad[:1], "--epochs-per-stage", "1", "--data", "synthetic",
                                       "--out-dir", str(tmp_path / "x"), *bad[1:]])
        assert res.exit_code == 2 and needle in res.output, res.output
        assert len(res.output.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("script, family, depths", [
    ("reproduce_table1a.py", "plain", [7, 10, 16]),
    ("reproduce_table1b.py", "resnet", [8, 14]),
    ("reproduce_table4.py", "plain", [7, 10, 16]),
])
def test_reproduction_scripts_build_the_papers_pipelines(tmp_path, script, family, depths):
    import importlib.util

    path = Path(__file__).parents[1] / "examples" / script
    spec = importlib.util.spec_from_file_location(script[:-3], path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(["--scale", "smoke", "--out-dir", str(tmp_path), "--dry-run", "--data", "synthetic"])
    written = sorted(tmp_path.rglob("pipeline.toml"))
    assert len(written) == (2 if script.endswith("table4.py") else 1)
    for toml_path in written:
        p = load_pipeline(toml_path)
        assert p.start.family == family and len(p.stages) == len(depths)
        blocks = p.start.options["blocks"]
        assert paper_depth(family, blocks) == depths[0]
        assert [s.epochs for s in p.stages] == [1] * len(depths) and p.train_subset == 512
        assert {s.options.get("max_iter") for s in p.stages[1:]} == {50}
    assert not list(tmp_path.rglob("results.json"))


def test_resumed_run_matches_an_uninterrupted_one(finished_run, tmp_path):
    out = tmp_path / "straight"
    pipeline = finished_run["pipeline"].replace(baseline=None)
    results = run_pipeline(pipeline, out, progress=False)
    assert [s.test_err for s in results.stages] == [s.test_err for s in finished_run["results"].stages]
    for k in (2, 3):
        a = netmorph.load(finished_run["out"] / f"stage_{k}.onnx")
        b = netmorph.load(out / f"stage_{k}.onnx")
        pa = {v.name: v.const.array for v in a.parameters}
        pb = {v.name: v.const.array for v in b.parameters}
        assert sorted(pa) == sorted(pb) and len(pa) > 10
        for n, arr in pa.items():
            np.testing.assert_array_equal(arr, pb[n], err_msg=n)


def test_resume_may_change_stages_not_started_yet(finished_run, tmp_path):
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(finished_run["out"], out)
    pipeline = finished_run["pipeline"]
    longer = pipeline.replace(stages=(*pipeline.stages, Stage(0, grow="deepen", options={"level": "1"})),
                              baseline=None)
    changed_started = pipeline.replace(stages=(*pipeline.stages[:2], Stage(1, grow="deepen")))
    with pytest.raises(PipelineError, match="'stages' differs"):
        run_pipeline(changed_started, out, progress=False)
    with pytest.raises(PipelineError, match="'baseline' differs"):
        run_pipeline(longer, out, progress=False)
    with pytest.raises(PipelineError, match=r"FixLearn of stage 4: the levels have different block counts"):
        run_pipeline(longer.replace(baseline=pipeline.baseline), out, progress=False)
    results = Results.load(out)
    assert results.status == "interrupted" and len(results.baseline) == 3
    assert [s.depth for s in results.stages] == [7, 10, 16, 20]  # level 1 only: 5 -> 9 blocks, 9+5+5+1
    assert results.stages[3].blocks_per_level == [9, 5, 5] and results.stages[3].epochs == 0
    assert results.stages[3].test_err is not None and results.stages[3].metrics is None


def test_plot_refuses_a_broken_run_dir(tmp_path):
    (tmp_path / "results.json").write_text("{not json", encoding="utf-8")
    res = CliRunner().invoke(cli, ["plot", str(tmp_path)])
    assert res.exit_code == 2 and "results.json: cannot read" in res.output
    (tmp_path / "results.json").write_text('{"format": "other"}', encoding="utf-8")
    res = CliRunner().invoke(cli, ["plot", str(tmp_path)])
    assert res.exit_code == 2 and "not a netmorph results file" in res.output
    assert not list(tmp_path.glob("*.png"))
