r"""Table 1(b) / Fig. 2(d, e): ResNet(r) 8 -> 14 -> 26 -> 50 -> 98, IterLearn vs FixLearn on CIFAR-10.

Paper scale (r = 0.5, 320 epochs per stage)::

    python examples/reproduce_table1b.py --data cifar10:cifar-10-batches-py --out-dir runs/table1b

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

from netmorph.pipeline.paper import (
    TABLE_1B_R05,
    add_scale_arguments,
    pipeline_from_args,
    report_table,
    run_or_write,
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
    results = run_or_write(pipeline, out, args)
    if results is not None:
        report_table(results, out, TABLE_1B_R05 if r == 0.5 else {}, {"table": "1b", "residual_ratio": r})


if __name__ == "__main__":
    main()
