"""``netmorph --help`` and ``import netmorph`` stay cheap: the heavy libraries load only when used."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("onnx", "onnxruntime", "torch", "networkx")

PROBE = """
import json, sys
from click.testing import CliRunner
from netmorph.cli.main import cli
result = CliRunner().invoke(cli, {args!r})
assert result.exit_code == 0, result.output
print(json.dumps(sorted(m for m in {heavy!r} if m in sys.modules)))
"""


def _loaded(args: list[str]) -> list[str]:
    out = subprocess.run([sys.executable, "-c", PROBE.format(args=args, heavy=HEAVY)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_help_and_version_import_nothing_heavy():
    assert _loaded(["--help"]) == []
    assert _loaded(["--version"]) == []


def test_every_command_help_imports_nothing_heavy():
    from netmorph.cli.main import COMMANDS

    for name in COMMANDS:
        # grow's (and grow-hf's) flags are generated from the passes' option declarations, which live
        # beside the IR (onnx, networkx); neither loads ONNX Runtime or torch to print its help
        allowed = {"onnx", "networkx"} if name in ("grow", "grow-hf") else set()
        assert set(_loaded([name, "--help"])) <= allowed, name


def test_import_netmorph_is_lazy_but_complete():
    code = (f"import sys, netmorph; heavy = [m for m in {HEAVY!r} if m in sys.modules]; "
            "g = netmorph.build('plain', blocks=1); print(heavy, type(g).__name__, netmorph.Graph.__name__, "
            "netmorph.ir.__name__, sorted(set(netmorph.__all__) - set(dir(netmorph))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["[]", "Graph", "Graph", "netmorph.ir", "[]"]


def test_star_import_of_netmorph():
    namespace: dict = {}
    exec("from netmorph import *", namespace)
    import netmorph

    assert {n for n in netmorph.__all__} <= set(namespace)
    assert namespace["load"] is netmorph.load
