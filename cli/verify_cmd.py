"""``netmorph verify A B``: do two ONNX models compute the same function?"""

from __future__ import annotations

import sys

import click

from .errors import EXIT_FAILED, EXIT_OK, UserError, handle_errors


@click.command("verify")
@click.argument("a", type=click.Path())
@click.argument("b", type=click.Path())
@click.option("--inputs", "inputs", type=click.Path(), default=None,
              help="Run on these inputs (.npz, keys = input names, one batch) instead of random ones.")
@click.option("--rtol", type=click.FloatRange(min=0), default=1e-4, show_default=True,
              help="Relative tolerance (against A's values).")
@click.option("--atol", type=click.FloatRange(min=0), default=1e-5, show_default=True,
              help="Absolute tolerance.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random inputs.")
@click.option("--batches", type=click.IntRange(min=1), default=2, show_default=True,
              help="Number of random input batches.")
@click.option("--batch-size", type=click.IntRange(min=1), default=2, show_default=True,
              help="Size given to a symbolic batch dim (dim 0) of random inputs.")
@click.option("--optimize-b", is_flag=True, default=False,
              help="Run B with ONNX Runtime's graph optimisations (A always runs unoptimised).")
@click.option("--json", "json_path", type=click.Path(), default=None,
              help="Also write the full report as JSON here (atomically; written on failure too).")
@handle_errors
def verify(a, b, inputs, rtol, atol, seed, batches, batch_size, optimize_b, json_path):
    """Check that model B computes the same function as the reference A.

    Both run in ONNX Runtime on the same inputs. An element fails iff |a-b| > atol and
    |a-b| > rtol*|a|. Exit 0: equivalent; 1: not equivalent (table of the worst
    differences); 2: bad input (unreadable model, mismatched interfaces, bad --inputs).
    """
    from netmorph.verification import verify_models

    report = verify_models(
        a, b, inputs=inputs, rtol=rtol, atol=atol, seed=seed, batches=batches,
        batch_size=batch_size, optimize_b=optimize_b,
    )
    if json_path:
        try:
            report.write_json(json_path)
        except OSError as e:
            raise UserError(f"{json_path}: cannot write the JSON report ({e.strerror or e})") from None
    if report.ok:
        click.echo(report.summary())
        sys.exit(EXIT_OK)
    click.echo(report.summary())
    click.echo(report.failure_line())
    click.echo(report.table())
    sys.exit(EXIT_FAILED)
