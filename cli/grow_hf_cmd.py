"""``netmorph grow-hf DIR --pass deepen -o OUT_DIR``: grow a Hugging Face model folder."""

from __future__ import annotations

from pathlib import Path

import click

from .errors import EXIT_FAILED, fail
from .grow_cmd import build_passes


@click.command("grow-hf")
@click.argument("model_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--pass", "pass_names", multiple=True, required=True,
              help="Pass to apply (repeatable): deepen, widen-mlp, widen-hidden, add-heads.")
@click.option("--layers", type=int, default=None, help="deepen: identity layers to insert.")
@click.option("--after", default=None, help="deepen: layers to insert identity layers after.")
@click.option("--factor", type=float, default=None, help="widen-mlp / widen-hidden: width factor.")
@click.option("--heads", type=int, default=None,
              help="add-heads: heads to add (a multiple of the KV groups).")
@click.option("--level", default=None, help="Comma list of layer indices.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the passes and the checks.")
@click.option("--rtol", type=float, help="Verification rtol (overrides the pass contract).")
@click.option("--atol", type=float, help="Verification atol (overrides the pass contract).")
@click.option("--no-verify", is_flag=True, help="Skip verification (prints a warning).")
@click.option("--state", type=click.Choice(["map", "reset"]), default="map", show_default=True,
              help="An optimizer saved in MODEL_DIR (optimizer.safetensors): carry its state or reset it.")
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True,
              help="The folder to write (must not exist).")
def grow_hf(model_dir: Path, pass_names: tuple[str, ...], layers, after, factor, heads, level, seed: int,
            rtol: float | None, atol: float | None, no_verify: bool, state: str, output: Path) -> None:
    """Grow the transformers checkpoint in MODEL_DIR; write a folder that from_pretrained loads as the
    same class with the updated config, plus the lineage and the carried optimizer state.

    --rtol / --atol also bound the check of the rebuilt model's own forward: max|child - parent|
    <= atol + rtol * max|parent logits| (default: rtol 1e-4, atol 0).

    Example: netmorph grow-hf gpt2-small/ --pass deepen -o gpt2-deeper/
    """
    import netmorph.hf as nmh
    from netmorph.errors import NetmorphError, VerificationError
    from netmorph.limits import check_optional_float

    passes = build_passes(pass_names, {"layers": layers, "after": after, "factor": factor, "heads": heads,
                                       "level": level}, 1)
    rtol, atol = check_optional_float("--rtol", rtol), check_optional_float("--atol", atol)
    if output.exists():
        fail(f"{output}: already exists (a grown checkpoint is written as a new folder)")
    model = nmh.load_folder(model_dir)
    optimizer = None
    if (model_dir / nmh.folder.OPTIMIZER_META).is_file():
        optimizer = nmh.load_optimizer(model_dir, model)
    if no_verify:
        click.echo("netmorph: warning: --no-verify: the child is NOT checked against its parent", err=True)
    try:
        g = nmh.grow(model, passes, optimizer=optimizer, verify=not no_verify, state=state, seed=seed,
                     rtol=rtol, atol=atol)
    except VerificationError as e:
        fail(f"{output} not written: {e}", code=EXIT_FAILED if type(e) is VerificationError else 2)
        return
    except NetmorphError as e:
        fail(f"{model_dir}: {str(e).strip().splitlines()[0]}")
        return
    nmh.write_folder(output, g.model, g.report, g.optimizer)
    changed = ", ".join(f"{k} {a} -> {b}" for k, (a, b) in g.report["config"].items() if a != b)
    click.echo(f"{type(g.model).__name__}: {changed or 'config unchanged'}")
    if g.report.get("untied"):
        click.echo(f"note: {g.report['untied']}")
    click.echo(f"wrote {output}")
