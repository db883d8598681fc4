r"""Table 1(a) / Fig. 2(c): PlainNet 7 -> 10 -> 16 -> 28 -> 52 -> 100, IterLearn vs FixLearn on CIFAR-10.

Paper scale (320 epochs per stage, the whole of CIFAR-10, one GPU-day or so)::

    python examples/reproduce_table1a.py --data cifar10:cifar-10-batches-py --out-dir runs/table1a

A small run (see docs/pipelines.md for more)::

    python examples/reproduce_table1a.py --scale small --max-depth 28 --train-subset 5000 \
        --out-dir runs/t1a-small

Writes DIR/results.json, DIR/stage_K.onnx, the plots DIR/error_vs_depth.png and
DIR/error_vs_epochs.png, and DIR/comparison.json (this run next to the paper's numbers).
Re-running the same command resumes an interrupted run.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from netmorph.pipeline.paper import (
    TABLE_1A,
    add_scale_arguments,
    pipeline_from_args,
    report_table,
    run_or_write,
)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", default="runs/table1a", help="run directory [%(default)s]")
    add_scale_arguments(parser)
    args = parser.parse_args(argv)
    out = Path(args.out_dir)
    pipeline = pipeline_from_args(args, "plain", name="table1a-plainnet")
    results = run_or_write(pipeline, out, args)
    if results is not None:
        report_table(results, out, TABLE_1A, {"table": "1a", "pipeline": pipeline.name})


if __name__ == "__main__":
    main()
