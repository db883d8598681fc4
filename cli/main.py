"""Entry point of the ``netmorph`` command.

Subcommands live one per module and are imported only when invoked, so ``netmorph --help``
and ``netmorph --version`` stay fast (no torch import). :meth:`LazyGroup.invoke` is the error
boundary: every failure is one line on stderr, exit 1 for a failed verification and 2 for
everything else (see :mod:`netmorph.cli.errors`); ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import importlib
import importlib.util
import os

import click

from netmorph import __version__

# name -> (module, attribute, one-line help shown by `netmorph --help`)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "verify": ("netmorph.cli.verify_cmd", "verify", "Check two models compute the same function."),
    "inspect": ("netmorph.cli.inspect_cmd", "inspect", "Show a model's interface, ops and structure."),
    "new": ("netmorph.cli.new_cmd", "new", "Build a PlainNet / ResNet(r) DynamicNet model."),
    "passes": ("netmorph.cli.passes_cmd", "passes", "List the morph passes and their contracts."),
    "grow": ("netmorph.cli.grow_cmd", "grow", "Apply morph passes, verify, write the child."),
    "grow-hf": ("netmorph.cli.grow_hf_cmd", "grow_hf", "Grow a Hugging Face model folder."),
    "train": ("netmorph.cli.train_cmd", "train", "Train a model and write the weights back."),
    "iterate": ("netmorph.cli.iterate_cmd", "iterate", "Network iterative learning: train, grow, repeat."),
    "run": ("netmorph.cli.run_cmd", "run", "Run a growth pipeline written as TOML."),
    "plot": ("netmorph.cli.plot_cmd", "plot", "Plot the results of an iterate/run directory."),
    "data": ("netmorph.cli.data_cmd", "data", "Build and check the CIFAR-10 subset the examples read."),
}


# commands that need an optional dependency (module -> extra: see netmorph.extras)
NEEDS: dict[str, str] = {
    "grow-hf": "torch", "train": "torch", "iterate": "torch", "run": "torch", "plot": "matplotlib",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return [n for n, (mod, _, _) in COMMANDS.items() if importlib.util.find_spec(mod) is not None]

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        spec = COMMANDS.get(name)
        if spec is None:
            return None
        module = importlib.import_module(spec[0])
        return getattr(module, spec[1])

    def invoke(self, ctx: click.Context):
        from .errors import _passthrough, debug_enabled, report

        try:
            return super().invoke(ctx)
        except BaseException as e:
            if _passthrough(e) or debug_enabled():
                raise
            report(e)

    def resolve_command(self, ctx: click.Context, args: list[str]):
        name, cmd, rest = super().resolve_command(ctx, args)
        needs = NEEDS.get(name or "")
        if needs and not {"-h", "--help"} & set(rest):
            from netmorph.extras import available, install_hint

            if not available(needs):
                from .errors import fail

                fail(f"netmorph {name}: {install_hint(needs)}")
        return name, cmd, rest

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(n, COMMANDS[n][2]) for n in self.list_commands(ctx)]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="netmorph")
@click.option("--debug", is_flag=True, default=False,
              help="Show the Python traceback of an error (also: NETMORPH_DEBUG=1).")
def cli(debug: bool) -> None:
    """netmorph: grow networks by function-preserving morphs, verified in ONNX Runtime."""
    if debug:
        os.environ["NETMORPH_DEBUG"] = "1"


def no_hugepage_stalls() -> None:
    """Keep numpy from asking the kernel for transparent huge pages (``madvise(MADV_HUGEPAGE)`` on
    every array of 4 MiB or more) in this process, unless ``NUMPY_MADVISE_HUGEPAGE`` is set.

    Where ``/sys/kernel/mm/transparent_hugepage/defrag`` is ``madvise`` (a common default) and
    the memory is fragmented, each first touch of such an array can stall in synchronous
    compaction (numpy/numpy#31590). A grow writes a child's weights into fresh arrays: on the CI
    machine, filling 1.4 GB of new arrays took 4.15 s with the advice and 0.54 s without, and
    ``widen-hidden``'s surgery on ViT-B/16 3.3-4.5 s against 1.0-1.2 s. The command is its own
    process, so this is its choice to make; the library never changes numpy's settings."""
    if "NUMPY_MADVISE_HUGEPAGE" in os.environ:
        return
    os.environ["NUMPY_MADVISE_HUGEPAGE"] = "0"  # read when numpy is imported (it is not yet, here)
    import sys

    np = sys.modules.get("numpy")
    setter = getattr(getattr(getattr(np, "_core", None), "multiarray", None), "_set_madvise_hugepage", None)
    if setter is not None:  # numpy was imported already: switch it off at run time
        setter(False)


def main() -> None:
    no_hugepage_stalls()
    cli(prog_name="netmorph")


if __name__ == "__main__":  # pragma: no cover
    main()
