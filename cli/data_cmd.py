"""``netmorph data prepare`` / ``netmorph data check``: the CIFAR-10 subset the examples read.

``prepare`` builds ``data/cifar10_small.npz`` (relative to the working folder) from the official
CIFAR-10 "python version" batches and records its SHA-256 beside it; ``check`` re-computes it.
See :mod:`netmorph.data.prepare`."""

from __future__ import annotations

import os
from pathlib import Path

import click

from .errors import handle_errors

DEFAULT = os.path.join("data", "cifar10_small.npz")


@click.group("data")
def data() -> None:
    """Build and check the CIFAR-10 subset the examples and reproductions read."""


@data.command("prepare")
@click.option("--from", "source", required=True, type=click.Path(),
              help="The extracted cifar-10-batches-py folder (or its parent) of cifar-10-python.tar.gz.")
@click.option("--output", "-o", default=DEFAULT, show_default=True, type=click.Path(dir_okay=False),
              help="The .npz to write (its SHA-256 goes to OUTPUT.sha256).")
@click.option("--train-per-class", default=1500, show_default=True, type=click.IntRange(min=1),
              help="Training images per class (the first of each class, official order).")
@click.option("--test-per-class", default=300, show_default=True, type=click.IntRange(min=1),
              help="Test images per class (the first of each class, official order).")
@click.option("--any-source", is_flag=True,
              help="Build from files whose MD5 is not the official one (a re-packed or test copy).")
@handle_errors
def prepare(source, output, train_per_class, test_per_class, any_source):
    """Write the class-balanced CIFAR-10 subset (15,000 training, 3,000 test images by default)."""
    from netmorph.data.prepare import prepare_cifar10

    out = Path(output)
    if not out.is_absolute() and ".." not in out.parts and not out.parent.exists():
        out.parent.mkdir(parents=True)  # the default data/ folder under the working folder
    r = prepare_cifar10(source, out, train_per_class=train_per_class, test_per_class=test_per_class,
                        any_source=any_source)
    origin = "official CIFAR-10 files (MD5 checked)" if r.official else "files not checked against CIFAR-10"
    click.echo(f"wrote {r.path}: {r.train} training and {r.test} test images from {origin}; "
               f"SHA-256 {r.sha256} in {r.path}.sha256")


@data.command("check")
@click.argument("path", default=DEFAULT, type=click.Path(dir_okay=False))
@handle_errors
def check(path):
    """Check PATH against its recorded SHA-256 (PATH.sha256) and that it loads."""
    from netmorph.data.npz import load_npz
    from netmorph.data.prepare import check_file

    digest = check_file(path)
    train, test = load_npz(path)
    click.echo(f"{path}: SHA-256 {digest} as recorded; {len(train.labels)} training and "
               f"{len(test.labels)} test images")
