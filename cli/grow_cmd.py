"""``netmorph grow``: apply morph passes to a model, verify every step, write the child."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from netmorph.atomic import atomic_write_json
from netmorph.progress import Progress

from .errors import EXIT_FAILED, fail, handle_errors
from .verify_options import INPUT_OPTIONS, input_options, input_policy

GROW_OPTIONS = ("model", "pass_names", "repeat", "seed", "rtol", "atol", "inputs", "no_verify", "output",
                "report_path")
"""Parameters of ``grow`` itself; every other flag is a pass option, generated from the declarations."""


def _declared() -> dict[str, list[tuple[str, Any]]]:
    from netmorph.passes.registry import all_options

    return all_options()


def _metavar(decls: list[tuple[str, Any]]) -> str:
    choices = [c for _, o in decls for c in (o.choices or ())]
    if choices:
        return "|".join(dict.fromkeys(map(str, choices)))
    return {"int": "INT", "float": "X", "str": "TEXT"}[decls[0][1].type.__name__]


def _help(decls: list[tuple[str, Any]]) -> str:
    """One help text per option: each distinct declaration's help, with the passes that declare it."""
    by_help: dict[str, list[str]] = {}
    for pass_name, o in decls:
        d = o.default
        extra = [] if d is None else [f"default {d:g}" if isinstance(d, float) else f"default {d}"]
        if o.bounds():
            extra.append(o.bounds())
        text = o.help + (f" ({', '.join(extra)})" if extra else "")
        by_help.setdefault(text, []).append(pass_name)
    return "; ".join(f"{', '.join(names)}: {text}" for text, names in by_help.items())


def pass_option_flags(fn: Any) -> Any:
    """Give ``fn`` one click option per pass option any registered pass declares (values stay text:
    each pass's declaration converts and checks them, so the CLI, TOML and the API agree)."""
    for name, decls in reversed(list(_declared().items())):
        if name in GROW_OPTIONS:
            raise ValueError(f"pass option {name!r} ({decls[0][0]}) collides with a grow option")
        aliases = dict.fromkeys("--" + a.replace("_", "-") for _, o in decls for a in o.aliases)
        flags = [decls[0][1].flag, *aliases]
        fn = click.option(*flags, name, default=None, metavar=_metavar(decls), help=_help(decls))(fn)
    return fn


class GrowCommand(click.Command):
    """``grow`` with an unknown flag refused in one line (not click's usage block)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except click.NoSuchOption as e:
            fail(f"{e.option_name} is not an option of grow or of any pass (see `netmorph passes`)")
            raise


class _Progress:
    """The solve-by-solve bar of ``netmorph grow`` (tqdm, on a terminal only; erased when done)."""

    def __init__(self, steps: int, stream=None):
        self.stream = stream
        self.step, self.steps = 0, steps
        self.bar: Progress | None = None

    def start_step(self, index: int, total: int, pass_: Any) -> None:
        self.step, self.steps = index + 1, total

    def __call__(self, pass_name: str, done: int, total: int, item: str) -> None:
        desc = f"[{self.step}/{self.steps}] {pass_name}"
        if self.bar is None or self.bar.total != max(1, total) or self.bar.desc != desc:
            self.close()
            self.bar = Progress(total, desc, stream=self.stream, summary=False, leave=False)
        self.bar.update(done, item=item)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _fmt(x: Any, spec: str = ".3g") -> str:
    return "-" if x is None else format(x, spec)


def summary_table(reports: list[Any]) -> str:
    """The table printed after growing: one row per pass."""
    head = ("step", "pass", "depth", "params", "max abs", "max rel", "residual", "time s")
    rows = []
    for i, r in enumerate(reports, 1):
        v = r.verification or {}
        depth = f"{_fmt(r.depth_before, 'd')}->{_fmt(r.depth_after, 'd')}"
        rows.append((
            str(i), r.pass_name, depth, f"{r.params_before:,}->{r.params_after:,}",
            _fmt(v.get("max_abs")), _fmt(v.get("max_rel")), _fmt(r.max_residual), f"{r.seconds:.2f}",
        ))
    widths = [max(len(x[i]) for x in [head, *rows]) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(x, widths, strict=True)).rstrip()
                     for x in [head, *rows])


def unchanged_notes(reports: list[Any]) -> list[str]:
    """``note: step K (PASS): …`` for each pass that left the model as it was (and said why)."""
    return [f"note: step {i} ({r.pass_name}): {d['unchanged']}"
            for i, r in enumerate(reports, 1) for d in r.details if d.get("unchanged")]


def _write_json_atomic(path: Path, data: Any) -> None:
    atomic_write_json(path, data, default=str)


def build_passes(names: tuple[str, ...], given: dict[str, Any], repeat: int) -> list[Any]:
    """Pass instances for ``names`` (each ``repeat`` times); each pass takes the given options it
    declares, and an option no chosen pass declares is refused."""
    from netmorph.passes.registry import make_passes, passes

    from netmorph.errors import PreconditionError
    from netmorph.limits import MAX_REPEAT, check_int

    for n in names:  # an unknown name first, before any option is judged
        if n not in passes():
            raise PreconditionError(f"no pass named {n!r} (see `netmorph passes`)")
    repeat = check_int("--repeat", repeat, None, MAX_REPEAT)  # below 1: refused after the names
    built = make_passes(list(names), given, flags=True)
    if repeat < 1:
        raise PreconditionError(f"--repeat must be at least 1 (got {repeat})")
    return built * repeat


@click.command("grow", cls=GrowCommand)
@click.argument("model", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--pass", "pass_names", multiple=True, required=True,
              help="Pass to apply (repeatable; see `netmorph passes`).")
@click.option("--repeat", type=int, default=1, show_default=True, help="Apply the pass list N times.")
@click.option("--seed", type=int, default=0, show_default=True, help="Solver and input seed.")
@click.option("--rtol", type=float, help="Verification rtol (overrides the pass contract).")
@click.option("--atol", type=float, help="Verification atol (overrides the pass contract).")
@click.option("--inputs", "inputs", type=click.Path(),
              help="Verify on these inputs (.npz, batchK/NAME keys for several, or a folder of them).")
@input_options
@click.option("--no-verify", is_flag=True, help="Skip verification in ONNX Runtime (prints a warning).")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="Where to write the child model.")
@click.option("--report", "--json", "report_path", type=click.Path(dir_okay=False),
              help="Write the pass reports as JSON (--json: the same).")
@pass_option_flags
@handle_errors
def grow(model: Path, pass_names: tuple[str, ...], repeat: int, seed: int, rtol: float | None,
         atol: float | None, inputs: str | None, no_verify: bool, output: str, report_path: str | None,
         **opts: Any) -> None:
    """Apply morph passes to MODEL, verify each child against its parent, write the result.

    Example: netmorph grow plain7.onnx --pass deepen -o plain10.onnx
    """
    from netmorph.passes import PassManager

    import netmorph
    from netmorph.atomic import check_outputs
    from netmorph.checks import check_finite
    from netmorph.errors import NetmorphError, VerificationError
    from netmorph.limits import MAX_SEED, check_int, check_optional_float
    from netmorph.verification import VerifyOptions

    given = {k: opts.get(k) for k in _declared()}
    passes = build_passes(pass_names, given, repeat)
    rtol, atol = check_optional_float("--rtol", rtol), check_optional_float("--atol", atol)
    seed = check_int("--seed", seed, 0, MAX_SEED)
    policy = VerifyOptions().replace(**input_policy(**{k: opts.get(k) for k in INPUT_OPTIONS}))
    check_outputs({"-o": output, "--report": report_path}, {"MODEL": model, "--inputs": inputs})
    output, report_path = Path(output), report_path and Path(report_path)
    graph = check_finite(netmorph.load(model), model)
    if no_verify:
        click.echo("netmorph: warning: --no-verify: the child is NOT checked against its parent", err=True)
    progress = _Progress(len(passes))
    manager = PassManager(verify=not no_verify, rtol=rtol, atol=atol, inputs=inputs, seed=seed,
                          progress=progress, on_pass_start=progress.start_step, options=policy)
    try:
        child, reports = manager.run(graph, passes)
    except VerificationError as e:
        progress.close()
        # a child that differs is exit 1; a model ONNX Runtime cannot run at all is bad input (2)
        fail(f"{output} not written: {e}", code=EXIT_FAILED if type(e) is VerificationError else 2)
        return
    except NetmorphError as e:  # the pass does not apply to this model: name the file
        progress.close()
        fail(f"{model}: {e}")  # fail() keeps the first cause and counts the others
        return
    progress.close()
    netmorph.save(child, output)
    if report_path is not None:
        _write_json_atomic(report_path, {
            "model": str(model), "output": str(output), "verified": not no_verify,
            "passes": [r.to_dict() for r in reports],
        })
    click.echo(summary_table(reports))
    for line in unchanged_notes(reports):
        click.echo(line)
    click.echo(f"wrote {output}")

