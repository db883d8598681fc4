"""``netmorph train``: lower an ONNX model to PyTorch, train it, write the trained weights back."""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path

import click
from netmorph.cli.errors import UserError, handle_errors

# the paper's recipe (TrainConfig's defaults), repeated here so that --help does not import torch
_DEFAULTS = {"epochs": 320, "batch_size": 256, "lr": 0.1, "seed": 0}


def lowered_module(model_path: str):
    """The model at ``model_path`` lowered to a ``torch.fx.GraphModule`` (picklable for DDP workers)."""
    import netmorph

    return netmorph.lower(netmorph.load(model_path))


def check_interface(graph, model: str, image_shape: tuple[int, int, int], num_classes: int) -> None:
    """Refuse a model whose input/output shapes cannot take the data set's images/classes."""
    if len(graph.inputs) != 1:
        raise UserError(f"{model}: expected one image input, found {len(graph.inputs)}")
    shape = graph.inputs[0].type.shape if graph.inputs[0].type is not None else None
    if shape is not None:
        if len(shape) != 4:
            raise UserError(f"{model}: input {graph.inputs[0].name!r} has rank {len(shape)}, expected NCHW")
        for got, want, what in zip(shape[1:], image_shape, ("channels", "height", "width"), strict=True):
            if isinstance(got, int) and got != want:
                raise UserError(
                    f"{model}: input {graph.inputs[0].name!r} expects {what} {got} but the data has {want}"
                )
    out = graph.outputs[0].type.shape if graph.outputs and graph.outputs[0].type is not None else None
    if out is not None and len(out) == 2 and isinstance(out[1], int) and out[1] != num_classes:
        raise UserError(
            f"{model}: output {graph.outputs[0].name!r} has {out[1]} classes, the data has {num_classes}"
        )


def check_run_dir(run_dir: Path, *, resume: bool, overwrite: bool) -> None:
    """Refuse to replace an existing run's checkpoint and metrics unless asked; check it is writable."""
    from netmorph.atomic import ensure_writable
    from netmorph.train import CHECKPOINT_NAME, METRICS_NAME

    if os.path.islink(run_dir):
        raise UserError(f"{run_dir}: is a symlink; refusing to write the run's checkpoint and metrics "
                        "through it")
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"{run_dir}: exists and is not a folder (the run folder for checkpoints and metrics)")
    existing = [n for n in (CHECKPOINT_NAME, METRICS_NAME) if os.path.lexists(run_dir / n)]
    if existing and not (resume or overwrite):
        raise UserError(f"{run_dir}: already holds a run ({', '.join(existing)}); "
                        "pass --resume to continue it or --overwrite to start afresh")
    for name in (CHECKPOINT_NAME, METRICS_NAME):
        ensure_writable(run_dir / name)


def warn_if_bn_folded(graph, model: str, lr: float) -> None:
    """Say so when a model with convolutions has no BatchNorm (an exporter folded them into the convs)."""
    ops = {n.op_type for n in graph.nodes}
    if "Conv" in ops and "BatchNormalization" not in ops:
        click.echo(
            f"netmorph: warning: {model} has convolutions but no BatchNorm (folded away by the exporter?); "
            f"training it at lr {lr:g} may diverge. Restore them first: "
            f"netmorph grow {model} --pass restore-bn -o RESTORED.onnx",
            err=True,
        )


@click.command("train")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--data", "data_spec", default="synthetic", show_default=True,
              help="synthetic | synthetic:N | cifar10:PATH | cifar100:PATH | npz:PATH")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="Trained model (.onnx).")
@click.option("--epochs", type=int, default=_DEFAULTS["epochs"], show_default=True)
@click.option("--batch-size", type=int, default=_DEFAULTS["batch_size"], show_default=True,
              help="Global batch (split across --nproc processes).")
@click.option("--lr", type=float, default=_DEFAULTS["lr"], show_default=True)
@click.option("--optimizer", type=click.Choice(["sgd", "nesterov", "adam", "adamw"]), default="sgd",
              show_default=True)
@click.option("--schedule", type=click.Choice(["step", "cosine", "constant"]), default="step",
              show_default=True, help="step: lr/10 at 50% and 75% of the epochs (paper).")
@click.option("--warmup", type=float, default=0.0, show_default=True, help="Linear warm-up epochs.")
@click.option("--weight-decay", type=float, default=1e-4, show_default=True)
@click.option("--device", default="auto", show_default=True, help="auto | cpu | cuda | cuda:N")
@click.option("--amp", type=click.Choice(["bf16", "fp16"]), default=None, help="Mixed precision.")
@click.option("--channels-last", is_flag=True, help="channels_last memory format (CUDA).")
@click.option("--compile", "compile_", is_flag=True, help="torch.compile the training module.")
@click.option("--seed", type=int, default=_DEFAULTS["seed"], show_default=True)
@click.option("--num-threads", type=int, default=None, help="CPU threads per process.")
@click.option("--nproc", type=int, default=1, show_default=True,
              help="Local DDP processes (gloo on CPU, nccl on CUDA). Under torchrun leave at 1.")
@click.option("--out-dir", type=click.Path(file_okay=False), default=None,
              help="Run folder for metrics.jsonl and checkpoint.pt [default: OUTPUT without .onnx + '.run'].")
@click.option("--resume", is_flag=True, help="Continue from OUT_DIR/checkpoint.pt.")
@click.option("--overwrite", is_flag=True,
              help="Start afresh even if OUT_DIR holds a run (its checkpoint and metrics are replaced).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@click.option("--json", "as_json", is_flag=True, help="Print the final metrics as JSON on stdout.")
@handle_errors
def train(model, data_spec, output, epochs, batch_size, lr, optimizer, schedule, warmup, weight_decay,
          device, amp, channels_last, compile_, seed, num_threads, nproc, out_dir, resume, overwrite, quiet,
          as_json):
    """Train MODEL.onnx on a data set and write the trained model to OUTPUT.

    The model is lowered to PyTorch (netmorph.lower), trained with the paper's recipe unless
    overridden, and its weights (BatchNorm statistics included) are written back into the ONNX
    graph (netmorph.write_back), saved atomically. Per-epoch metrics go to OUT_DIR/metrics.jsonl
    and a checkpoint to OUT_DIR/checkpoint.pt after every epoch.

    Several GPUs/CPU processes: --nproc N, or `torchrun --nproc_per_node N --no-python netmorph train …`.
    """
    import netmorph
    from netmorph.atomic import check_outputs
    from netmorph.data import parse_data_spec
    from netmorph.limits import MAX_PROCESSES, check_int
    from netmorph.train import (
        CHECKPOINT_NAME,
        METRICS_NAME,
        TrainConfig,
        fit,
        init_from_env,
        launched_by_torchrun,
        spawn_fit,
    )

    spec = parse_data_spec(data_spec)
    if not Path(model).is_file():
        raise UserError(f"{model}: no such model file")
    check_int("--nproc", nproc, 1, MAX_PROCESSES)
    if resume and overwrite:
        raise UserError("--resume and --overwrite contradict each other; choose one")
    config = TrainConfig(
        epochs=epochs, batch_size=batch_size, lr=lr, optimizer=optimizer, schedule=schedule,
        warmup_epochs=warmup, weight_decay=weight_decay, device=device, amp=amp,
        channels_last=channels_last, compile=compile_, seed=seed, num_threads=num_threads,
    )
    run_dir = Path(out_dir) if out_dir else Path(output).with_suffix(".run")
    check_run_dir(run_dir, resume=resume, overwrite=overwrite)
    # fail now, not after training; -o must not be the model, the data or the run's own files
    check_outputs({"-o": output}, {"MODEL": model, "--data": spec.path},
                  run_files={n: run_dir / n for n in (CHECKPOINT_NAME, METRICS_NAME)})
    graph = netmorph.load(model)
    splits = spec.load(graph)  # synthetic data follows the model's input shape
    check_interface(graph, model, splits.train.image_shape, splits.train.num_classes)
    warn_if_bn_folded(graph, model, config.lr)

    rank = 0
    if launched_by_torchrun():
        if nproc != 1:
            raise UserError("--nproc cannot be combined with torchrun (it already started the processes)")
        rank, _ = init_from_env(device)
    if nproc > 1:
        result = spawn_fit(functools.partial(lowered_module, model), spec.load, config, nproc,
                           out_dir=run_dir, resume=resume, progress=not quiet)
    else:
        result = fit(netmorph.lower(graph), splits.train, splits.test, config, out_dir=run_dir,
                     resume=resume, progress=not quiet)
    if launched_by_torchrun():
        import torch.distributed as dist

        dist.barrier()
        dist.destroy_process_group()
    if rank != 0:
        return
    trained = netmorph.write_back(graph, result.module.cpu())
    netmorph.save(trained, output)
    final = result.final
    if as_json:
        click.echo(json.dumps({**final, "output": str(output), "out_dir": str(run_dir)}))
        return
    if not final:
        click.echo(f"no epochs trained; wrote {output}")
        return
    lossless = final.get("test_err_lossless")
    extra = f" (lossless images: {100 * lossless:.2f}%)" if lossless is not None else ""
    click.echo(f"test error {100 * final['test_err']:.2f}%{extra} after {final['epoch']} epochs; "
               f"wrote {output} (metrics: {run_dir / 'metrics.jsonl'})")
