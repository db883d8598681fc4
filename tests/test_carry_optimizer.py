"""``carry_optimizer = true``: a real 3-stage synthetic pipeline carrying its optimizer state.

The state written between stages is checked against the previous stage's checkpoint (unchanged
parameters bit for bit, new ones zero); an interrupted run resumes bit-identically; the carried
state changes training (a run without it ends elsewhere); TOML and the CLI flag round-trip.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from netmorph.cli.main import cli

import netmorph
from netmorph.lowering import lower
from netmorph.pipeline import Pipeline, Results, Stage, Start, dumps_pipeline, loads_pipeline, run_pipeline
from netmorph.pipeline.carry import CARRIED_NAME
from netmorph.train import CHECKPOINT_NAME

TRAIN = {"batch_size": 32, "device": "cpu", "num_threads": 2, "pad": 2}


def _pipeline(data: str, *, carry: bool = True, policy: str = "continue", optimizer: str = "sgd") -> Pipeline:
    return Pipeline(
        start=Start(family="plain", options={"blocks": 2, "channels": (4, 8, 8), "seed": 1}),
        data=data,
        stages=(Stage(1), Stage(2, grow="deepen"), Stage(1, grow="deepen")),
        train={**TRAIN, "optimizer": optimizer}, lr_policy=policy, name="carry", seed=2,
        carry_optimizer=carry,
    )


@pytest.fixture(scope="module")
def carried_run(tmp_path_factory, tiny_data):
    """The carrying pipeline, interrupted (for real) after epoch 1 of stage 2, then resumed."""
    out = tmp_path_factory.mktemp("carry") / "run"
    pipeline = _pipeline(tiny_data)
    state = {"stages": 0, "interrupt": True}

    def on_stage(record):
        state["stages"] += 1

    def on_epoch(record):
        if state["interrupt"] and state["stages"] == 1 and record["epoch"] == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_pipeline(pipeline, out, progress=False, on_stage=on_stage, on_epoch=on_epoch, baseline=False)
    assert Results.load(out).status == "interrupted"
    stage1_state = torch.load(out / "stage_1" / CHECKPOINT_NAME, weights_only=True)["optimizer"]
    state["interrupt"] = False
    results = run_pipeline(pipeline, out, progress=False, on_stage=on_stage, baseline=False)
    return {"out": out, "results": results, "pipeline": pipeline, "stage1_state": stage1_state}


def _params(path) -> dict[str, np.ndarray]:
    return {v.name: v.const.array for v in netmorph.load(path).parameters}


@pytest.mark.slow
def test_carried_state_follows_the_lineage(carried_run):
    out = carried_run["out"]
    parent = lower(netmorph.load(out / "stage_1.onnx"))
    child = lower(netmorph.load(out / "stage_2" / "init.onnx"))
    carried = torch.load(out / "stage_2" / CARRIED_NAME, weights_only=True)["state"]
    before = carried_run["stage1_state"]["state"]
    p_names = [n for n, p in parent.named_parameters() if p.requires_grad]
    c_names = [n for n, p in child.named_parameters() if p.requires_grad]
    assert len(carried) == len(c_names) > len(p_names)
    same = [n for n in c_names if n in p_names]
    assert len(same) >= 6  # the switch convs, their BNs, the head
    for n in same:
        a, b = carried[c_names.index(n)]["momentum_buffer"], before[p_names.index(n)]["momentum_buffer"]
        assert torch.equal(a, b), n
    new = [n for n in c_names if n not in p_names and "_a" in n]  # F1 factors of the split convs
    assert new
    for n in new:
        assert not carried[c_names.index(n)]["momentum_buffer"].any(), n


@pytest.mark.slow
def test_interrupted_carrying_run_resumes_bit_identically(carried_run, tmp_path):
    straight = tmp_path / "straight"
    results = run_pipeline(carried_run["pipeline"], straight, progress=False, baseline=False)
    assert results.status == "complete" and len(results.stages) == 3
    assert [s.test_err for s in results.stages] == [s.test_err for s in carried_run["results"].stages]
    for k in (2, 3):
        a, b = _params(carried_run["out"] / f"stage_{k}.onnx"), _params(straight / f"stage_{k}.onnx")
        assert sorted(a) == sorted(b)
        for n, arr in a.items():
            np.testing.assert_array_equal(arr, b[n], err_msg=n)
    assert (straight / "stage_3" / CARRIED_NAME).is_file()


@pytest.mark.slow
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_carrying_changes_training_with_warmup(tiny_data, tmp_path, optimizer):
    """Same pipeline with and without carried state (warmup policy): stage 2 ends elsewhere."""
    runs = {}
    for carry in (True, False):
        p = _pipeline(tiny_data, carry=carry, policy="warmup:1", optimizer=optimizer)
        p = p.replace(stages=p.stages[:2])
        run_pipeline(p, tmp_path / str(carry), progress=False, baseline=False)
        runs[carry] = _params(tmp_path / str(carry) / "stage_2.onnx")
    assert (tmp_path / "True" / "stage_2" / CARRIED_NAME).is_file()
    assert not (tmp_path / "False" / "stage_2" / CARRIED_NAME).exists()
    assert sorted(runs[True]) == sorted(runs[False])
    assert any(not np.array_equal(runs[True][n], runs[False][n]) for n in runs[True])
    if optimizer == "adam":
        carried = torch.load(tmp_path / "True" / "stage_2" / CARRIED_NAME, weights_only=True)["state"]
        steps = {float(s["step"]) for s in carried.values()}
        assert steps == {0.0, 3.0}  # new parameters start at step 0; kept ones go on (96/32 steps)


def test_toml_and_cli_flag(tiny_data, tmp_path):
    p = _pipeline(tiny_data)
    text = dumps_pipeline(p)
    assert "carry_optimizer = true" in text and loads_pipeline(text) == p
    assert "carry_optimizer" not in dumps_pipeline(p.replace(carry_optimizer=False))
    dest = tmp_path / "p.toml"
    r = CliRunner().invoke(cli, ["iterate", "plain:2", "--epochs-per-stage", "1", "--data", tiny_data,
                                 "--out-dir", str(tmp_path / "o"), "--carry-optimizer", "--lr-policy",
                                 "continue", "--write-pipeline", str(dest)])
    assert r.exit_code == 0, r.output
    assert loads_pipeline(dest.read_text()).carry_optimizer is True
    r = CliRunner().invoke(cli, ["run", "/dev/null"])  # not a pipeline: one line, exit 2
    assert r.exit_code == 2
    bad = tmp_path / "bad.toml"
    bad.write_text(text.replace("carry_optimizer = true", 'carry_optimizer = "yes"'))
    r = CliRunner().invoke(cli, ["run", str(bad), "--out-dir", str(tmp_path / "b")])
    assert r.exit_code == 2 and "carry_optimizer" in r.output
