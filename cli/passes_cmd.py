"""``netmorph passes``: list the morph passes, their contracts and options."""

from __future__ import annotations

import json

import click

from .errors import handle_errors


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
            flag = "--" + o["name"].replace("_", "-")
            default = "" if o["default"] is None else f" (default {o['default']})"
            choices = f" [{'|'.join(map(str, o['choices']))}]" if o["choices"] else ""
            click.echo(f"  {flag} {o['type'].upper()}{choices}: {o['help']}{default}")
