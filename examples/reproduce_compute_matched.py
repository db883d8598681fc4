r"""Compute-matched IterLearn vs FixLearn (Table 3 "half"), with and without carried optimizer state.

For each target (PlainNet 7 -> 28, PlainNet 7 -> 52, ResNet(0.5) 8 -> 50), FixLearn trains the
final depth from scratch for E epochs; IterLearn grows by ``deepen`` through the paper's depths
with two schedules:

- ``half``: every stage trains E/2 epochs (Table 3);
- ``total``: every stage trains 1 epoch, so IterLearn's *total* epochs equal FixLearn's
  (E = number of stages: 4 for PlainNet-28 and ResNet-50, 5 for PlainNet-52, whose FixLearn
  then also trains 5 epochs);

each once with a fresh optimizer per stage and once with ``carry_optimizer = true``. All runs
use one lr schedule spanning the whole budget (``lr_policy = "continue"``). Compute is counted
as training MACs: epochs x training images x forward MACs per image of the stage's model x 3
(forward + backward), read from each stage's ONNX graph; epochs x parameters is printed too.

Small run on CPU (what docs/results.md reports: half-width networks, 500 training images, a
class-balanced 500 of the test images in data/cifar10_test500.npz, made as docs/results.md shows)::

    python examples/reproduce_compute_matched.py --data npz:data/cifar10_test500.npz \
        --train-subset 500 --fix-epochs 4 --channels 8,16,32 --batch-size 32 --lr 0.05 \
        --out-dir runs/compute_matched

Re-running the same command resumes; ``--table`` only prints the table of finished runs.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

import netmorph
from netmorph.pipeline import Baseline, Pipeline, Results, Stage, Start, run_pipeline

TARGETS = {
    "plain28": ("plain", {"blocks": 2}, 3),  # 7 -> 10 -> 16 -> 28: 3 growths
    "plain52": ("plain", {"blocks": 2}, 4),
    "resnet50": ("resnet", {"blocks": 1, "residual_ratio": 0.5}, 3),  # 8 -> 14 -> 26 -> 50
}


def pipelines(target: str, args) -> dict[str, Pipeline]:
    family, options, growths = TARGETS[target]
    n_stages = growths + 1
    train = {"device": "cpu", "batch_size": args.batch_size, "num_threads": args.threads, "lr": args.lr}
    half = max(1, args.fix_epochs // 2)
    out: dict[str, Pipeline] = {}
    for schedule, per_stage in (("half", half), ("total", 1)):
        fix = args.fix_epochs if schedule == "half" else n_stages
        for carry in (False, True):
            # FixLearn once per budget: with the fresh-optimizer run ("total" only when E differs)
            base = None
            if not carry and (schedule == "half" or fix != args.fix_epochs):
                base = Baseline(depths="final", epochs=fix)
            stages = (Stage(per_stage),) + tuple(Stage(per_stage, grow="deepen") for _ in range(growths))
            name = f"{target}_{schedule}{'_carry' if carry else ''}"
            start = {**options, "channels": args.channels} if args.channels else dict(options)
            out[name] = Pipeline(
                start=Start(family=family, options=start), data=args.data, stages=stages,
                train=train, lr_policy="continue", seed=args.seed, baseline=base, name=name,
                train_subset=args.train_subset, carry_optimizer=carry,
            )
    return out


def forward_macs(path: Path) -> int:
    """Multiply-accumulates of one image's forward pass (Conv and Gemm nodes), from the graph."""
    from netmorph.ir import infer_types

    g = netmorph.load(path)
    infer_types(g)
    total = 0
    for n in g.nodes:
        w = n.param(1)
        if w is None:
            continue
        if n.op_type == "Conv":
            shape = n.output.type.shape
            total += int(np.prod(w.shape)) * int(shape[2]) * int(shape[3])
        elif n.op_type in ("Gemm", "MatMul"):
            total += int(np.prod(w.shape))
    return total


def summarise(out: Path, names: list[str], n_train: int) -> list[dict]:
    rows = []
    for name in names:
        run = out / name
        if not (run / "results.json").exists():
            continue
        res = Results.load(run)
        if not res.stages:
            continue
        macs = sum(s.epochs * n_train * 3 * forward_macs(run / s.model) for s in res.stages)
        ep_params = sum(s.epochs * s.params for s in res.stages)
        last = res.stages[-1]
        rows.append({"run": name, "kind": "iterlearn", "depth": last.depth, "epochs": last.cumulative_epochs,
                     "epoch_params": ep_params, "train_macs": macs, "test_err": last.test_err,
                     "complete": len(res.stages) == len(res.pipeline["stages"])})
        for b in res.baseline:
            rows.append({"run": f"{name}:fixlearn", "kind": "fixlearn", "depth": b.depth, "epochs": b.epochs,
                         "epoch_params": b.epochs * b.params,
                         "train_macs": b.epochs * n_train * 3 * forward_macs(run / b.model),
                         "test_err": b.test_err, "complete": True})
    return rows


def markdown(rows: list[dict]) -> str:
    """One table: every run's final depth, epochs, compute relative to its FixLearn, test error."""
    fix = {r["run"].split(":")[0]: r for r in rows if r["kind"] == "fixlearn"}
    lines = ["| target | run | epochs | epochs x params (M) | training TMAC | compute / FixLearn's | "
             "test error % |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        target, _, rest = r["run"].partition("_")
        if r["kind"] == "fixlearn":
            label = f"FixLearn {r['epochs']} epochs"
            ref = r
        else:
            schedule = rest.split("_")[0]
            label = f"IterLearn {schedule}{', carried optimizer' if rest.endswith('carry') else ''}"
            ref = fix.get(f"{target}_{schedule}") or fix.get(f"{target}_half")
            if schedule == "total" and f"{target}_total" not in fix:
                ref = fix.get(f"{target}_half")
        ratio = "" if ref is None else f"{r['train_macs'] / ref['train_macs']:.2f}"
        err = "-" if r["test_err"] is None else f"{100 * r['test_err']:.1f}"
        done = "" if r["complete"] else " (unfinished)"
        lines.append(f"| {target} (depth {r['depth']}) | {label}{done} | {r['epochs']} | "
                     f"{r['epoch_params'] / 1e6:.2f} | {r['train_macs'] / 1e12:.2f} | {ratio} | {err} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="data spec, e.g. npz:data/cifar10_test500.npz")
    parser.add_argument("--out-dir", default="runs/compute_matched")
    parser.add_argument("--targets", default=",".join(TARGETS), help="[%(default)s]")
    parser.add_argument("--train-subset", type=int, default=2000)
    parser.add_argument("--fix-epochs", type=int, default=4, help="FixLearn's epochs E [%(default)s]")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=0.1, help="peak lr [%(default)s]")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--channels", type=lambda s: tuple(int(c) for c in s.split(",")), default=None,
                        help="channels of the three levels (default: the paper's 16,32,64)")
    parser.add_argument("--table", action="store_true", help="only print the table of what has run")
    args = parser.parse_args(argv)
    out = Path(args.out_dir)
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    names: list[str] = []
    for target in targets:
        for name, p in pipelines(target, args).items():
            names.append(name)
            if not args.table:
                run_pipeline(p, out / name, progress=True)
    rows = summarise(out, names, args.train_subset)
    print(json.dumps(rows, indent=1))
    print(markdown(rows))


if __name__ == "__main__":
    main()
