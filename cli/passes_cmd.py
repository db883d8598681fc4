"""``netmorph passes``: list the morph passes, their contracts and options (their declarations)."""

from __future__ import annotations

import json

import click

from .errors import handle_errors

_TYPES = {"int": "INT", "float": "X", "str": "TEXT"}


def option_line(o: dict) -> str:
    """``  --factor X: help (default 2; > 1, <= 64)`` for one declared option."""
    meta = "|".join(map(str, o["choices"])) if o["choices"] else _TYPES.get(o["type"], o["type"].upper())
    notes = ["required"] if o["required"] else []
    if o["default"] is not None:
        d = o["default"]
        notes.append(f"default {d:g}" if isinstance(d, float) else f"default {d}")
    if o["range"]:
        notes.append(o["range"])
    flags = ", ".join([o["flag"], *o["aliases"]])
    return f"  {flags} {meta}: {o['help']}" + (f" ({'; '.join(notes)})" if notes else "")


@click.command("passes")
@click.option("--json", "as_json", is_flag=True, help="Print the list as JSON.")
@handle_errors
def passes(as_json: bool) -> None:
    """List the morph passes with their contracts and options."""
    from netmorph.passes import list_passes

    rows = list_passes()
    if as_json:
        click.echo(json.dumps(rows, indent=2, default=str))
        return
    for row in rows:
        click.echo(f"{row['name']}: {row['summary']}")
        click.echo(f"  contract: {row['contract']}")
        for o in row["options"]:
            click.echo(option_line(o))
        for group in row["one_of"]:
            click.echo(f"  give at most one of {' / '.join('--' + g.replace('_', '-') for g in group)}")
