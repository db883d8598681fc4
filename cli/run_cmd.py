"""``netmorph run PIPELINE.toml``: run a growth pipeline written down as TOML."""

from __future__ import annotations

from pathlib import Path

import click

from .errors import handle_errors

MAX_PIPELINE_BYTES = 16 << 20


def check_pipeline_file(path: str) -> None:
    """Refuse a pipeline file that is not a regular file (a FIFO would block) or is absurdly large."""
    import os
    import stat

    from .errors import UserError

    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise UserError(f"{path}: no such pipeline file") from None
    if not stat.S_ISREG(st.st_mode):
        raise UserError(f"{path}: not a regular file")
    if st.st_size > MAX_PIPELINE_BYTES:
        raise UserError(f"{path}: {st.st_size:,} bytes, not a pipeline file (limit {MAX_PIPELINE_BYTES:,})")


@click.command("run")
@click.argument("pipeline_file", metavar="PIPELINE.toml", type=click.Path(dir_okay=False))
@click.option("--out-dir", type=click.Path(file_okay=False), default=None,
              help="The run directory (default: runs/<pipeline name>).")
@click.option("--device", default=None, help="Override [train].device (auto | cpu | cuda | cuda:N).")
@click.option("--resume/--no-resume", default=True, show_default=True,
              help="Continue a run already in the out dir (--no-resume refuses to touch one).")
@click.option("--no-baseline", is_flag=True, default=False, help="Skip the pipeline's FixLearn baseline.")
@click.option("--check", is_flag=True, default=False, help="Only validate the file and print its stages.")
@click.option("--quiet", is_flag=True, default=False, help="No progress output.")
@handle_errors
def run(pipeline_file, out_dir, device, resume, no_baseline, check, quiet):
    """Run PIPELINE.toml: stages of (grow, verify, train), then its FixLearn baseline if any.

    The run directory receives pipeline.toml (resolved), results.json (after every stage),
    stage_K.onnx and stage_K/metrics.jsonl. Running again resumes an interrupted run.
    """
    from netmorph.pipeline import load_pipeline, run_pipeline
    from netmorph.pipeline.runner import check_stages

    check_pipeline_file(pipeline_file)
    pipeline = load_pipeline(pipeline_file)
    if device is not None:
        pipeline = pipeline.replace(train={**pipeline.train, "device": device})
    check_stages(pipeline)
    if check:
        click.echo(f"{pipeline_file}: pipeline {pipeline.name!r}, start {pipeline.start.describe()}, "
                   f"data {pipeline.data}")
        for i, s in enumerate(pipeline.stages, start=1):
            policy = pipeline.stage_policy(i - 1)
            if i == 1 and policy != "continue":
                policy = "the recipe's schedule"
            click.echo(f"  stage {i}: {s.describe()} (lr: {policy})")
        return
    out = Path(out_dir) if out_dir is not None else Path("runs") / pipeline.name
    try:
        results = run_pipeline(pipeline, out, resume=resume, progress=not quiet, baseline=not no_baseline)
    except KeyboardInterrupt:
        click.echo(f"interrupted; run the same command again to resume from {out}", err=True)
        raise SystemExit(130) from None
    click.echo(results.table())
