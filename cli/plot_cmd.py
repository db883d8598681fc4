"""``netmorph plot DIR``: PNG plots of an iterate / run directory."""

from __future__ import annotations

import click

from .errors import handle_errors


@click.command("plot")
@click.argument("run_dir", metavar="DIR", type=click.Path(file_okay=False))
@click.option("--out", "dest", type=click.Path(file_okay=False), default=None,
              help="Folder for the PNG files (default: DIR).")
@handle_errors
def plot(run_dir, dest):
    """Write DIR/error_vs_depth.png (IterLearn vs FixLearn, Fig. 2c) and DIR/error_vs_epochs.png
    (error against cumulative epochs with the growth points marked, Fig. 2e)."""
    from netmorph.pipeline import Results, plot_run

    for path in plot_run(run_dir, dest):
        click.echo(str(path))
    click.echo(Results.load(run_dir).table())
