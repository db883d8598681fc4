"""Network iterative learning pipelines (paper §3.1): train, grow by a verified morph, train, …

>>> from netmorph.pipeline import paper_pipeline, run_pipeline
>>> p = paper_pipeline("plain", data="cifar10:/data/cifar10", epochs=320, half=True)
>>> results = run_pipeline(p, "runs/plainnet")     # IterLearn 7 -> 100, then FixLearn
>>> print(results.table())

A pipeline is a start model, a data spec and a list of stages; it is also a TOML file
(:func:`load_pipeline`, :func:`save_pipeline`) run by ``netmorph run``.
"""

from .lr_policy import LrPolicy, LrPolicyError, parse_lr_policy, stage_config
from .presets import paper_blocks, paper_depth, paper_depths, paper_pipeline, parse_schedule
from .results import RESULTS_NAME, Results, StageRecord
from .spec import Baseline, Pipeline, PipelineError, Stage, Start
from .toml_io import dumps_pipeline, load_pipeline, loads_pipeline, save_pipeline


def run_pipeline(pipeline, out_dir, resume=True, progress=True, **kwargs):
    """Run a pipeline into ``out_dir``; see :func:`netmorph.pipeline.runner.run_pipeline`."""
    from .runner import run_pipeline as _run

    return _run(pipeline, out_dir, resume=resume, progress=progress, **kwargs)


def plot_run(out_dir, dest=None):
    """Write the run's PNG plots; see :func:`netmorph.pipeline.plots.plot_run`."""
    from .plots import plot_run as _plot

    return _plot(out_dir, dest)


__all__ = [
    "RESULTS_NAME", "Baseline", "LrPolicy", "LrPolicyError", "Pipeline", "PipelineError", "Results",
    "Stage", "StageRecord", "Start", "dumps_pipeline", "load_pipeline", "loads_pipeline", "paper_blocks",
    "paper_depth", "paper_depths", "paper_pipeline", "parse_lr_policy", "parse_schedule", "plot_run",
    "run_pipeline", "save_pipeline", "stage_config",
]
