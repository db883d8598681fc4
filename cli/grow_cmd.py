"""``netmorph grow``: apply morph passes to a model, verify every step, write the child."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from netmorph.atomic import atomic_write_json
from netmorph.progress import Progress

from .errors import EXIT_FAILED, fail, handle_errors
from .verify_options import INPUT_OPTIONS, input_options, input_policy

# CLI option -> pass option name (only options a chosen pass declares are handed to it)
PASS_OPTIONS = ("level", "node", "value", "block", "cmid", "k1", "k2", "mid_bn", "residual_ratio", "solver",
                "max_iter", "mode", "init", "factor", "width", "noise", "mapping", "kernel", "from_kernel",
                "heads", "heads_mode", "after", "layers")


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


def _write_json_atomic(path: Path, data: Any) -> None:
    atomic_write_json(path, data, default=str)


def build_passes(names: tuple[str, ...], given: dict[str, Any], repeat: int) -> list[Any]:
    """Pass instances for ``names`` (each ``repeat`` times) with the options each declares."""
    from netmorph.passes import PASSES, get_pass

    from netmorph.errors import PreconditionError

    for n in names:
        if n not in PASSES:
            raise PreconditionError(f"no pass named {n!r} (see `netmorph passes`)")
    from netmorph.limits import MAX_REPEAT, check_int, check_pass_options

    given = check_pass_options(given, "option")
    repeat = check_int("--repeat", repeat, None, MAX_REPEAT)  # below 1: refused after the names
    used = set()
    built = []
    for n in names:
        declared = {o.name for o in PASSES[n].option_specs}
        opts = {k: v for k, v in given.items() if v is not None and k in declared}
        used |= set(opts)
        built.append(get_pass(n, **opts))
    unused = sorted(k for k, v in given.items() if v is not None and k not in used)
    if unused:
        flag = "--" + unused[0].replace("_", "-")
        raise PreconditionError(f"option {flag} does not apply to pass(es) {', '.join(names)}")
    if repeat < 1:
        raise PreconditionError(f"--repeat must be at least 1 (got {repeat})")
    return built * repeat


@click.command("grow")
@click.argument("model", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--pass", "pass_names", multiple=True, required=True,
              help="Pass to apply (repeatable; see `netmorph passes`).")
@click.option("--level", help="Level index, or 'all'.")
@click.option("--node", help="Node to act on (conv-split).")
@click.option("--value", help="Value to insert after (insert-identity-*).")
@click.option("--block", help="Block to follow (duplicate-block).")
@click.option("--cmid", type=int, help="Channels between F1 and F2 (default: Cout).")
@click.option("--k1", type=int, help="F1 kernel size.")
@click.option("--k2", type=int, help="F2 kernel size.")
@click.option("--mid-bn", type=click.Choice(["auto", "always", "never"]),
              help="Identity BN between F1 and F2 (auto: only where a BN follows the conv).")
@click.option("--residual-ratio", type=float, help="ResNet residual ratio r (default: from the model).")
@click.option("--mode", type=click.Choice(["auto", "paper", "generic"]),
              help="deepen: the paper's DynamicNet reading, the generic stage reading, or auto.")
@click.option("--init", type=click.Choice(["copy", "fresh"]),
              help="deepen (generic): weights of an inserted unit copy (its branch output is zeroed).")
@click.option("--factor", type=float,
              help="widen: new width = ceil(factor x old) (default 2); widen-mlp, widen-hidden: factor.")
@click.option("--width", type=int, help="widen: new width of the group.")
@click.option("--noise", type=float, help="widen: symmetry-breaking noise (contract becomes approx).")
@click.option("--mapping", type=click.Choice(["random", "round-robin"]),
              help="widen: which channels the new ones copy.")
@click.option("--kernel", type=int, help="grow-kernel: the new kernel size.")
@click.option("--from", "--from-kernel", "from_kernel", type=int,
              help="grow-kernel --level: grow convs of this kernel size.")
@click.option("--repeat", type=int, default=1, show_default=True, help="Apply the pass list N times.")
@click.option("--solver", type=click.Choice(["exact", "optgd", "lsq"]), default=None,
              help="Kernel solver (default exact: contract exact; optgd / lsq are approximate).")
@click.option("--max-iter", type=int, help="Iteration cap of optgd / lsq.")
@click.option("--heads", type=int, help="Transformers: heads to add (add-heads).")
@click.option("--heads-mode", type=click.Choice(["count", "size"]),
              help="Transformers: widen-hidden grows the head count or the head size.")
@click.option("--after", help="Transformers: layers to insert identity layers after (transformer-deepen).")
@click.option("--layers", type=int, help="Transformers: identity layers to insert (transformer-deepen).")
@click.option("--seed", type=int, default=0, show_default=True, help="Solver and input seed.")
@click.option("--rtol", type=float, help="Verification rtol (overrides the pass contract).")
@click.option("--atol", type=float, help="Verification atol (overrides the pass contract).")
@click.option("--inputs", "inputs", type=click.Path(),
              help="Verify on these inputs (.npz, batchK/NAME keys for several, or a folder of them).")
@input_options
@click.option("--no-verify", is_flag=True, help="Skip verification in ONNX Runtime (prints a warning).")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="Where to write the child model.")
@click.option("--report", "report_path", type=click.Path(dir_okay=False),
              help="Write the pass reports as JSON.")
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

    given = {k: opts.get(k) for k in PASS_OPTIONS}
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
    click.echo(f"wrote {output}")

