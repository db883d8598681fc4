"""``netmorph new``: build a PlainNet / ResNet(r) DynamicNet model and write it as ONNX."""

from __future__ import annotations

import click

from .errors import UserError, handle_errors


def _ints(text: str, sep: str, what: str) -> tuple[int, ...]:
    try:
        vals = tuple(int(p) for p in text.lower().split(sep))
    except ValueError:
        raise UserError(f"{what} must be integers separated by {sep!r}, got {text!r}") from None
    if any(v < 1 for v in vals):
        raise UserError(f"{what} must be positive, got {text!r}")
    return vals


@click.command("new")
@click.argument("family", type=click.Choice(["plain", "resnet"]))
@click.option("--blocks", "-n", type=int, required=True, help="Blocks per level n (channel switch included).")
@click.option("--levels", "-k", type=int, default=3, show_default=True, help="Number of levels k.")
@click.option("--channels", default=None, help="Width per level, e.g. 16,32,64 (default: doubling from 16).")
@click.option("--residual-ratio", "-r", type=float, default=1.0, show_default=True,
              help="r of the ResNet(r) shortcut r·Id (resnet only).")
@click.option("--classes", type=int, default=10, show_default=True, help="Classifier outputs.")
@click.option("--input", "input_shape", default="3x32x32", show_default=True, help="Image shape CxHxW.")
@click.option("--stem/--no-stem", default=None,
              help="Force a stem on/off (default: conv3x3 for resnet, none for plain; ImageNet stem "
                   "for inputs of 128+ pixels).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the weight initialisation.")
@click.option("--bn-stats", is_flag=True, help="Random BatchNorm statistics (for testing).")
@click.option("--softmax", is_flag=True, help="End with Softmax (output 'probs').")
@click.option("--output", "-o", required=True, type=click.Path(dir_okay=False), help="Model file to write.")
@handle_errors
def new(family, blocks, levels, channels, residual_ratio, classes, input_shape, stem, seed, bn_stats,
        softmax, output):
    """Build a DynamicNet model: FAMILY is plain (PlainNet) or resnet (ResNet(r)).

    Example: netmorph new resnet --blocks 1 --residual-ratio 0.5 -o resnet8_r05.onnx
    """
    import netmorph
    from netmorph.atomic import check_outputs
    from netmorph.structure import recognise

    check_outputs({"-o": output})
    shape = _ints(input_shape, "x", "--input")
    if len(shape) != 3:
        raise UserError(f"--input must be CxHxW, got {input_shape!r}")
    widths = None if channels is None else _ints(channels, ",", "--channels")
    graph = netmorph.build(
        family, levels=levels, blocks=blocks, channels=widths, residual_ratio=residual_ratio,
        classes=classes, input_shape=shape, stem=stem, seed=seed, bn_stats=bn_stats, softmax=softmax,
    )
    netmorph.save(graph, output)
    s = recognise(graph)
    click.echo(
        f"wrote {output}: {family}, depth {s.depth}, {levels} levels x {blocks} blocks, "
        f"widths {','.join(str(lv.width) for lv in s.levels)}, {graph.parameter_count():,} parameters"
    )
