r"""Table 1(b) / Fig. 2(d, e): ResNet(r) 8 -> 14 -> 26 -> 50 -> 98, IterLearn vs FixLearn on CIFAR-10.

Paper scale (r = 0.5, 320 epochs per stage)::

    python examples/reproduce_table1b.py --data cifar10:/data/cifar-10-batches-py --out-dir runs/table1b

A small run::

    python examples/reproduce_table1b.py --epochs 10 --max-depth 26 --train-subset 5000 \
        --out-dir runs/t1b-small

Residual ratios other than the paper's headline 0.5 with ``--residual-ratio`` (Table 1b has
0.5 ... 0.9). Exact growth (identity blocks) needs no solver, so ``--solver`` only names the
split method recorded in the results.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from netmorph.pipeline import plot_run, run_pipeline, save_pipeline
from netmorph.pipeline.paper import (
    TABLE_1B_R05,
    add_scale_arguments,
    compare,
    format_rows,
    pipeline_from_args,
    write_comparison,
)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", default="runs/table1b", help="run directory [%(default)s]")
    parser.add_argument("--residual-ratio", type=float, default=0.5, help="r of ResNet(r) [%(default)s]")
    add_scale_arguments(parser, solver="exact")
    args = parser.parse_args(argv)
    out = Path(args.out_dir)
    r = args.residual_ratio
    pipeline = pipeline_from_args(args, "resnet", residual_ratio=r, name=f"table1b-resnet-r{r:g}")
    out.mkdir(parents=True, exist_ok=True)
    if args.dry_run:
        save_pipeline(pipeline, out / "pipeline.toml")
        print(f"wrote {out / 'pipeline.toml'}")
        return
    results = run_pipeline(pipeline, out, progress=not args.quiet)
    plot_run(out)
    rows = compare(results, TABLE_1B_R05 if r == 0.5 else {})
    write_comparison(out / "comparison.json", rows, {"table": "1b", "residual_ratio": r})
    print(format_rows(rows))


if __name__ == "__main__":
    main()
