"""``netmorph inspect MODEL``: interface, op counts, parameters, opsets, units / stages and structure.

Two readings of the graph are shown (``docs/structure.md``): the units and stages any CNN has
(residual units with their shortcut kind, plain convs, concat regions), and the paper's
DynamicNet reading (stem, levels, tail) where it applies."""

from __future__ import annotations

import json
from typing import Any

import click

from .errors import handle_errors


def structure_of(graph) -> tuple[Any, str | None]:
    """``(structure, None)`` when recognised, ``(None, reason)`` when not, ``(None, None)`` when
    structure recognition is not available in this install."""
    import netmorph
    from netmorph.errors import StructureError

    try:
        return netmorph.recognise(graph), None
    except StructureError as e:
        reason = str(e).strip()
    except (ImportError, AttributeError):
        return None, None
    from netmorph.structure.transformer import recognise_transformer  # transformers (issue 10)

    try:
        return recognise_transformer(graph), None
    except StructureError as e:
        if graph.find_nodes("Softmax") and not graph.find_nodes("Conv"):  # say why it is no transformer
            reason = str(e).strip()
    return None, reason.splitlines()[0] if reason else "no reason given"


def anatomy_of(graph) -> tuple[Any, str | None]:
    """``(anatomy, None)`` for a CNN, ``(None, reason)`` otherwise (see :func:`structure_of`)."""
    from netmorph.errors import StructureError
    from netmorph.structure import anatomy

    try:
        return anatomy(graph), None
    except StructureError as e:
        return None, str(e).strip().splitlines()[0] if str(e).strip() else "no reason given"


@click.command("inspect")
@click.argument("model", type=click.Path())
@click.option("--json", "as_json", is_flag=True, default=False, help="Print one JSON object.")
@handle_errors
def inspect(model, as_json):
    """Show MODEL's inputs/outputs, op counts, parameter count, opset and structure."""
    import netmorph
    from netmorph.verification.describe import describe_model, format_description

    graph = netmorph.load(model)
    d = {"path": model, **describe_model(graph)}
    structure, reason = structure_of(graph)
    layout, layout_reason = anatomy_of(graph)
    if as_json:
        d["units"] = None if layout is None else layout.to_dict()
        if layout is None:
            d["units_error"] = layout_reason
        if structure is not None:
            d["structure"] = structure.to_dict()
        elif reason is not None:
            d["structure"] = None
            d["structure_error"] = reason
        click.echo(json.dumps(d, indent=2))
        return
    click.echo(format_description(d))
    if layout is not None:
        click.echo("units: " + layout.summary())
    else:
        click.echo(f"units: none ({layout_reason})")
    if structure is not None:
        click.echo("structure: " + structure.summary())
    elif reason is not None:
        click.echo(f"structure: not recognised ({reason})")
