"""``netmorph iterate START``: network iterative learning in one command (IterLearn, optionally FixLearn)."""

from __future__ import annotations

import re
from pathlib import Path

import click

from .errors import UserError, handle_errors

_BUILDER = re.compile(r"^(plain|plainnet|resnet)(?::(\d+))?(?::([0-9.]+))?$", re.IGNORECASE)


def parse_start(text: str):
    """An existing ONNX file, or a builder spec ``plain[:N]`` / ``resnet[:N[:R]]``."""
    from netmorph.pipeline import Start

    if Path(text).exists():
        return Start(path=str(Path(text).resolve()))
    m = _BUILDER.match(text.strip())
    if m is None:
        raise UserError(f"{text}: no such ONNX file, and not a builder spec (plain[:N] or resnet[:N[:R]])")
    family = "plain" if m.group(1).lower().startswith("plain") else "resnet"
    options: dict = {"blocks": int(m.group(2)) if m.group(2) else (2 if family == "plain" else 1)}
    if m.group(3):
        if family != "resnet":
            raise UserError(f"{text}: a residual ratio applies to resnet only")
        options["residual_ratio"] = float(m.group(3))
    return Start(family=family, options=options)


def parse_options(pairs: tuple[str, ...]) -> dict:
    """``KEY=VALUE`` pairs; values that read as TOML scalars (numbers, true/false) are converted."""
    from netmorph.pipeline.toml_io import toml_module

    toml = toml_module()
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--option {pair!r}: expected KEY=VALUE")
        try:
            options[key.strip()] = toml.loads(f"v = {value.strip()}")["v"]
        except toml.TOMLDecodeError:
            options[key.strip()] = value.strip()
    return options


def run_name(out_dir: str) -> str:
    """A safe pipeline name from the run folder's name (unsafe characters become ``_``)."""
    name = re.sub(r"[^A-Za-z0-9._ +-]", "_", Path(out_dir).name).lstrip(".- ").rstrip(". ")[:100]
    return name or "iterate"


def check_schedule(schedule: str) -> None:
    """Bound the stage count of ``PASS:COUNT,…`` before any stage list is built."""
    from netmorph.limits import MAX_STAGES, check_int

    total = 0
    for part in schedule.split(","):
        count = part.partition(":")[2].strip()
        if count.isdigit():
            total += check_int(f"--schedule {part.strip()!r} count", int(count), 0, MAX_STAGES)
    check_int("--schedule: total growth stages", total, 0, MAX_STAGES)


@click.command("iterate")
@click.argument("start")
@click.option("--schedule", default="deepen:5", show_default=True,
              help="Growth passes after the first stage: PASS[:COUNT][,PASS[:COUNT]...].")
@click.option("--epochs-per-stage", "epochs", type=click.IntRange(min=0), required=True,
              help="Training epochs of every stage (the paper: 320).")
@click.option("--half", is_flag=True, default=False,
              help="Each stage trains half the epochs (Table 3); FixLearn keeps the full budget.")
@click.option("--solver", type=click.Choice(["exact", "optgd", "lsq"]), default=None,
              help="Kernel solver of the growth passes (default: the pass's, exact).")
@click.option("--option", "pass_options", multiple=True, metavar="KEY=VALUE",
              help="A further option for every growth pass (repeatable), e.g. max_iter=500.")
@click.option("--lr-policy", default="restart", show_default=True,
              help="Learning rate after a growth: restart | restart:LR | warmup:E[:LR] | continue.")
@click.option("--carry-optimizer", is_flag=True, default=False,
              help="Carry the optimizer state (momentum, Adam moments) through each growth.")
@click.option("--data", required=True, help="synthetic[:N] | cifar10:PATH | cifar100:PATH | npz:PATH")
@click.option("--train-subset", type=click.IntRange(min=1), default=None,
              help="Train on a seeded subset of N training images.")
@click.option("--out-dir", type=click.Path(file_okay=False), required=True, help="The run directory.")
@click.option("--baseline", type=click.Choice(["fixlearn", "none"]), default="none", show_default=True,
              help="Also train every stage's architecture from scratch (FixLearn).")
@click.option("--baseline-budget", type=click.Choice(["stage", "total"]), default="stage", show_default=True,
              help="FixLearn epochs: the matching stage's, or IterLearn's cumulative epochs.")
@click.option("--baseline-depths", type=click.Choice(["all", "final"]), default="all", show_default=True,
              help="FixLearn at every stage's depth or only at the final one.")
@click.option("--device", default=None, help="auto | cpu | cuda | cuda:N (default: auto).")
@click.option("--batch-size", type=click.IntRange(min=1), default=None, help="Global batch (default 256).")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Peak lr (default 0.1).")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--resume/--no-resume", default=True, show_default=True,
              help="Continue a run already in --out-dir (--no-resume refuses to touch one).")
@click.option("--write-pipeline", type=click.Path(dir_okay=False), default=None,
              help="Only write the pipeline as TOML here (for `netmorph run`) and exit.")
@click.option("--quiet", is_flag=True, default=False, help="No progress output.")
@handle_errors
def iterate(start, schedule, epochs, half, solver, pass_options, lr_policy, carry_optimizer, data,
            train_subset, out_dir, baseline, baseline_budget, baseline_depths, device, batch_size, lr, seed,
            resume, write_pipeline, quiet):
    """Train START, grow it by SCHEDULE (each growth verified in ONNX Runtime), train, repeat.

    START is an ONNX model or a builder spec: plain[:N] (PlainNet, N blocks per level, default
    2 = depth 7) or resnet[:N[:R]] (ResNet(R), default 1 = depth 8). Every stage writes
    DIR/stage_K.onnx and DIR/stage_K/metrics.jsonl; DIR/results.json is rewritten after each
    stage; an interrupted run resumes when the same command is run again.
    """
    from netmorph.pipeline import Baseline, Pipeline, parse_schedule, run_pipeline, save_pipeline

    check_schedule(schedule)
    per_stage = max(1, epochs // 2) if half and epochs else epochs
    train = {k: v for k, v in (("device", device), ("batch_size", batch_size), ("lr", lr)) if v is not None}
    pipeline = Pipeline(
        start=parse_start(start),
        data=data,
        stages=parse_schedule(schedule, per_stage, solver=solver, options=parse_options(pass_options)),
        train=train,
        lr_policy=lr_policy,
        seed=seed,
        baseline=None if baseline == "none" else Baseline(
            budget=baseline_budget, depths=baseline_depths, epochs=epochs if half else None),
        name=run_name(out_dir),
        train_subset=train_subset,
        carry_optimizer=carry_optimizer,
    )
    if write_pipeline:
        from netmorph.atomic import check_outputs
        from netmorph.data import parse_data_spec

        check_outputs({"--write-pipeline": write_pipeline},
                      {"START": pipeline.start.path, "--data": parse_data_spec(data).path})
        save_pipeline(pipeline, write_pipeline)
        click.echo(f"wrote {write_pipeline}")
        return
    try:
        results = run_pipeline(pipeline, out_dir, resume=resume, progress=not quiet)
    except KeyboardInterrupt:
        click.echo(f"interrupted; run the same command again to resume from {out_dir}", err=True)
        raise SystemExit(130) from None
    click.echo(results.table())
