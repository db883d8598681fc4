"""The paper's CIFAR-10 numbers and the scaffolding shared by ``examples/reproduce_*.py``.

Test errors (%) from Tables 1a, 1b (r = 0.5) and 4 (PlainNet-100), keyed by depth. The
``--scale`` options (epochs, data subset, depth cap, device …) make the same experiment small
enough for a laptop or a short GPU lease; :func:`compare` puts a run next to the paper.
"""

from __future__ import annotations

import argparse
from typing import Any

from .presets import PAPER_EPOCHS, paper_pipeline
from .results import Results
from .spec import Pipeline

TABLE_1A = {  # PlainNet, CIFAR-10
    "fixlearn": {7: 11.44, 10: 10.04, 16: 9.87, 28: 9.45, 52: 11.54, 100: 17.77},
    "iterlearn": {10: 9.83, 16: 8.36, 28: 7.96, 52: 7.43, 100: 7.57},
}
TABLE_1B_R05 = {  # ResNet(r = 0.5), CIFAR-10
    "fixlearn": {8: 11.47, 14: 9.08, 26: 8.30, 50: 8.64, 98: 10.89},
    "iterlearn": {14: 8.37, 26: 8.04, 50: 6.81, 98: 6.05},
}
TABLE_4 = {  # PlainNet-100, CIFAR-10: morph solvers
    "fixlearn": {100: 17.77}, "optgd": {100: 7.57}, "lsq": {100: 12.55},
}
TABLE_3 = {"fixlearn": 17.77, "iterlearn_full": 7.57, "iterlearn_half": 7.54}  # PlainNet-100
DEFAULT_DATA = "npz:data/cifar10_small.npz"  # relative to the working folder (netmorph data prepare)
SCALES: dict[str, dict[str, Any]] = {
    "paper": {"epochs": PAPER_EPOCHS, "batch_size": 256},
    "small": {"epochs": 30, "max_depth": 52, "batch_size": 256},
    "smoke": {"epochs": 1, "max_depth": 16, "train_subset": 512, "batch_size": 128, "max_iter": 50},
}
"""``--scale`` presets; an option given explicitly wins over its preset value."""


def add_scale_arguments(parser: argparse.ArgumentParser, *, solver: str = "optgd") -> None:
    """The options every reproduction script takes (the "scale" of the experiment)."""
    g = parser.add_argument_group("scale")
    g.add_argument("--scale", choices=sorted(SCALES), default="paper",
                   help="preset for --epochs/--max-depth/--train-subset/--batch-size/--max-iter: paper "
                        "(320 epochs), small (30 epochs, depth <= 52), smoke (1 epoch, depth <= 16, 512 "
                        "images) [%(default)s]")
    g.add_argument("--data", default=DEFAULT_DATA, help="data spec (paper: cifar10:PATH) [%(default)s]")
    g.add_argument("--epochs", type=int, default=None, help="epochs per stage [scale's]")
    g.add_argument("--half", action="store_true", help="half the epochs per stage (Table 3)")
    g.add_argument("--max-depth", type=int, default=None, help="stop the schedule at this depth [scale's]")
    g.add_argument("--train-subset", type=int, default=None, help="train on N images (seeded subset)")
    g.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N [%(default)s]")
    g.add_argument("--batch-size", type=int, default=None, help="global batch [scale's]")
    g.add_argument("--amp", choices=["bf16", "fp16"], default=None, help="mixed precision")
    g.add_argument("--channels-last", action="store_true", help="CUDA channels_last memory format")
    g.add_argument("--solver", default=solver, choices=["exact", "optgd", "lsq"], help="[%(default)s]")
    g.add_argument("--max-iter", type=int, default=None, help="iteration cap of optgd / lsq")
    g.add_argument("--lr-policy", default="restart", help="restart | restart:LR | warmup:E[:LR] | continue")
    g.add_argument("--baseline-budget", choices=["stage", "total"], default="stage", help="[%(default)s]")
    g.add_argument("--no-baseline", action="store_true", help="skip FixLearn")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--quiet", action="store_true", help="no progress output")
    g.add_argument("--dry-run", action="store_true", help="write DIR/pipeline.toml and stop")


def pipeline_from_args(args: argparse.Namespace, family: str, *, residual_ratio: float = 0.5,
                       solver: str | None = None, name: str | None = None,
                       baseline: bool | None = None) -> Pipeline:
    """:func:`~.presets.paper_pipeline` with the scale options of :func:`add_scale_arguments`."""
    preset = SCALES[args.scale]
    for key in ("epochs", "max_depth", "train_subset", "batch_size", "max_iter"):
        if getattr(args, key) is None:
            setattr(args, key, preset.get(key))
    train: dict[str, Any] = {"device": args.device, "batch_size": args.batch_size}
    if args.amp:
        train["amp"] = args.amp
    if args.channels_last:
        train["channels_last"] = True
    p = paper_pipeline(
        family, data=args.data, epochs=args.epochs, half=args.half, residual_ratio=residual_ratio,
        solver=solver or args.solver, max_depth=args.max_depth, lr_policy=args.lr_policy,
        baseline=not args.no_baseline if baseline is None else baseline,
        baseline_budget=args.baseline_budget, train=train, seed=args.seed, name=name,
    )
    if args.max_iter is not None:
        from dataclasses import replace

        p = p.replace(stages=tuple(replace(s, options={**s.options, "max_iter": args.max_iter})
                                   if s.grow else s for s in p.stages))
    if args.train_subset is not None:
        p = p.replace(train_subset=args.train_subset)
    return p


def compare(results: Results, paper: dict[str, dict[int, float]], run_key: str = "iterlearn"
            ) -> list[dict[str, Any]]:
    """One row per depth: this run's IterLearn / FixLearn test error next to the paper's (%)."""
    it = {s.depth: s for s in results.stages}
    fx = {s.depth: s for s in results.baseline}
    rows = []
    for depth in sorted(set(it) | set(fx), key=lambda d: (d is None, d)):
        i, f = it.get(depth), fx.get(depth)
        rows.append({
            "depth": depth,
            "iterlearn": _pct(i.test_err) if i else None,
            "iterlearn_lossless": _pct(i.test_err_lossless) if i else None,
            "fixlearn": _pct(f.test_err) if f else None,
            "fixlearn_lossless": _pct(f.test_err_lossless) if f else None,
            "paper_iterlearn": paper.get(run_key, {}).get(depth),
            "paper_fixlearn": paper.get("fixlearn", {}).get(depth),
            "epochs": i.epochs if i else None,
            "morph_max_abs": (i.morph or {}).get("max_abs") if i else None,
        })
    return rows


def format_rows(rows: list[dict[str, Any]]) -> str:
    """The rows of :func:`compare` as a text table."""
    cols = ("depth", "iterlearn", "fixlearn", "paper_iterlearn", "paper_fixlearn", "epochs")
    out = ["  ".join(f"{c:>15}" for c in cols)]
    for r in rows:
        out.append("  ".join(f"{_cell(r[c]):>15}" for c in cols))
    return "\n".join(out)


def write_comparison(path: Any, rows: list[dict[str, Any]], extra: dict[str, Any] | None = None) -> None:
    """Write ``rows`` (and ``extra``) as JSON to ``path``."""
    from ..atomic import atomic_write_json

    atomic_write_json(path, {"rows": rows, **(extra or {})}, indent=1)


def run_or_write(pipeline: Pipeline, out: Any, args: argparse.Namespace) -> Results | None:
    """The scripts' common start: with ``--dry-run`` write ``out/pipeline.toml`` and return ``None``,
    otherwise run the pipeline in ``out`` and return its results."""
    from pathlib import Path

    from .runner import run_pipeline
    from .toml_io import save_pipeline

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if args.dry_run:
        save_pipeline(pipeline, out / "pipeline.toml")
        print(f"wrote {out / 'pipeline.toml'}")
        return None
    return run_pipeline(pipeline, out, progress=not args.quiet)


def report_table(results: Results, out: Any, paper: dict[str, dict[int, float]],
                 extra: dict[str, Any]) -> None:
    """Plot the run in ``out``, compare it with the paper's table, write and print the comparison."""
    from pathlib import Path

    from .plots import plot_run

    plot_run(out)
    rows = compare(results, paper)
    write_comparison(Path(out) / "comparison.json", rows, extra)
    print(format_rows(rows))


def _pct(v: float | None) -> float | None:
    return None if v is None else round(100 * v, 3)


def _cell(v: Any) -> str:
    if v is None:
        return "-"
    return f"{v:.2f}" if isinstance(v, float) else str(v)
