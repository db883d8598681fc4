"""``netmorph inspect MODEL``: interface, op counts, parameters, opsets and DynamicNet structure."""

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
    if as_json:
        if structure is not None:
            d["structure"] = structure.to_dict()
        elif reason is not None:
            d["structure"] = None
            d["structure_error"] = reason
        click.echo(json.dumps(d, indent=2))
        return
    click.echo(format_description(d))
    if structure is not None:
        click.echo("structure: " + structure.summary())
    elif reason is not None:
        click.echo(f"structure: not recognised ({reason})")
