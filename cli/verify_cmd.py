"""``netmorph verify A B``: do two ONNX models compute the same function?"""

from __future__ import annotations

import contextlib
import sys
from typing import Any

import click

from .errors import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK, UserError, describe, first_line, handle_errors
from .verify_options import input_options, input_policy


def _write_json(path: str, data: dict[str, Any]) -> None:
    from netmorph.atomic import atomic_write_json

    try:
        atomic_write_json(path, data, allow_nan=False)
    except OSError as e:
        raise UserError(f"{path}: cannot write the JSON report ({e.strerror or e})") from None


@click.command("verify")
@click.argument("a", type=click.Path())
@click.argument("b", type=click.Path())
@click.option("--inputs", "inputs", type=click.Path(), default=None,
              help="Run on these inputs instead of random ones: a .npz (keys = input names for one batch, "
                   "or batchK/NAME for several) or a folder of them.")
@click.option("--rtol", "rtol", multiple=True, metavar="[NAME=]V",
              help="Relative tolerance against A's values (1e-4); NAME=V for one output. A global "
                   "value selects the fixed rule. Repeatable.")
@click.option("--atol", "atol", multiple=True, metavar="[NAME=]V",
              help="Absolute tolerance (1e-5); NAME=V for one output. A global value selects the fixed "
                   "rule. Repeatable.")
@click.option("--tolerance", "tolerance", default=None, metavar="calibrated[:K]|fixed",
              help="calibrated[:K] (default, the rule grow uses): fail where |a-b| > K x A's own rounding "
                   "noise at that element (K default 8); fixed: Polygraphy's rtol/atol rule.")
@click.option("--allow-nan", is_flag=True, default=False,
              help="NaN/Inf at the same places in both models count as equal (default: they fail).")
@click.option("--map", "name_map", multiple=True, metavar="A_NAME=B_NAME",
              help="An input or output named differently in B (repeatable).")
@click.option("--seed", type=str, default="0", show_default=True, help="Seed of the random inputs.")
@input_options
@click.option("--optimize-b", is_flag=True, default=False,
              help="Run B only with ONNX Runtime's graph optimisations (default: as written, then "
                   "optimised; A always runs unoptimised).")
@click.option("--report", "--json", "json_path", type=click.Path(), default=None,
              help="Write the full report as JSON here, atomically, on every exit (0, 1 and 2); "
                   "--json: the same.")
@handle_errors
def verify(a, b, inputs, rtol, atol, tolerance, allow_nan, name_map, seed, optimize_b, json_path, **shared):
    """Check that model B computes the same function as the reference A.

    Both run in ONNX Runtime on the same inputs (B as written and ORT-optimised). By
    default a float element fails iff |a-b| > 8 x A's own rounding noise there (the rule
    grow uses); with --rtol/--atol or --tolerance fixed iff |a-b| > atol and
    |a-b| > rtol*|a|. Integer and bool outputs: a != b. Exit 0: equivalent; 1: not
    equivalent, or B fails where A runs (table of the worst differences); 2: bad input
    (unreadable model, mismatched interfaces, bad --inputs or options).
    """
    from netmorph.atomic import check_outputs
    from netmorph.errors import NetmorphError

    # refused before any work: a report that cannot be written, or would replace an input, is bad input
    check_outputs({"--json": json_path}, {"A": a, "B": b, "--inputs": inputs})
    try:
        report = _run(a, b, inputs, rtol, atol, tolerance, allow_nan, name_map, seed, optimize_b, shared)
    except Exception as e:  # exit 2: the report says why, in the line stderr gets
        if json_path:
            line = first_line(e) if isinstance(e, NetmorphError | UserError) else describe(e, str(a))
            error = {"ok": False, "exit_code": EXIT_BAD_INPUT, "error": " ".join(line.split()),
                     "a": str(a), "b": str(b)}
            with contextlib.suppress(NetmorphError, UserError, OSError):  # the original error wins
                _write_json(json_path, error)
        raise
    code = EXIT_OK if report.ok else EXIT_FAILED
    if json_path:
        _write_json(json_path, {**report.to_dict(), "exit_code": code, "error": None})
    click.echo(report.summary())
    if not report.ok:
        click.echo(report.failure_line())
        click.echo(report.table())
    sys.exit(code)


def _run(a, b, inputs, rtol, atol, tolerance, allow_nan, name_map, seed, optimize_b, shared):
    from netmorph.limits import MAX_SEED, check_int
    from netmorph.verification import OptionsError, VerifyOptions, verify_models
    from netmorph.verification.options import parse_map, parse_tolerances

    try:
        seed_value = int(seed)
    except ValueError:
        raise OptionsError(f"--seed must be an integer, got {seed!r}") from None
    seed_value = check_int("--seed", seed_value, 0, MAX_SEED)
    rtol_all, rtol_per = parse_tolerances(rtol, "--rtol")
    atol_all, atol_per = parse_tolerances(atol, "--atol")
    options = VerifyOptions().replace(
        output_rtol=rtol_per, output_atol=atol_per, allow_nan=allow_nan, name_map=parse_map(name_map),
        seed=seed_value, optimize_b=optimize_b, **input_policy(**shared),
    )
    # a global --rtol/--atol selects the fixed rule unless --tolerance names one
    return verify_models(a, b, inputs=inputs, options=options, rtol=rtol_all, atol=atol_all,
                         tolerance=tolerance)
