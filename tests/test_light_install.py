"""The core install works without PyTorch: grow / verify / inspect never import it, and the commands
that need it exit 2 with the extra to install.

Torch is blocked in a subprocess by a meta-path finder (the same interpreter, so no install is
needed); ``.ci/light_install`` checks the same on a really torch-free virtual environment.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).parents[1] / "examples"

# Runs the netmorph CLI with torch (and torchvision) unimportable, then reports whether anything
# tried to import them.
RUNNER = r"""
import sys
class Block:
    tried = []
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "torchvision"):
            Block.tried.append(name)
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None
sys.meta_path.insert(0, Block())
from netmorph.cli.main import cli
try:
    cli(sys.argv[1:], prog_name="netmorph", standalone_mode=True)
except SystemExit as e:
    code = e.code or 0
else:
    code = 0
sys.stderr.write(f"\nTRIED_TORCH={bool(Block.tried)}\n")
sys.exit(code)
"""


def run_without_torch(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", RUNNER, *args], cwd=cwd, capture_output=True,
                          text=True, timeout=300)


def test_grow_verify_inspect_run_without_torch(tmp_path):
    out = tmp_path / "p10.onnx"
    r = run_without_torch("grow", str(EXAMPLES / "plainnet7.onnx"), "--pass", "deepen", "-o", str(out),
                          cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert out.is_file() and "TRIED_TORCH=False" in r.stderr
    r = run_without_torch("verify", str(EXAMPLES / "plainnet7.onnx"), str(out), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "TRIED_TORCH=False" in r.stderr
    r = run_without_torch("inspect", str(out), "--json", cwd=tmp_path)
    assert r.returncode == 0 and '"levels"' in r.stdout, r.stderr
    assert "TRIED_TORCH=False" in r.stderr
    for argv in (["passes"], ["new", "plain", "--blocks", "2", "-o", str(tmp_path / "n.onnx")]):
        r = run_without_torch(*argv, cwd=tmp_path)
        assert r.returncode == 0 and "TRIED_TORCH=False" in r.stderr, (argv, r.stderr)


@pytest.mark.parametrize("argv", [
    ["train", "{model}", "--data", "synthetic", "-o", "{tmp}/t.onnx"],
    ["iterate", "plain:2", "--schedule", "deepen:1", "--epochs-per-stage", "1", "--data", "synthetic",
     "--out-dir", "{tmp}/run"],
    ["run", "{examples}/quick_cpu.toml", "--out-dir", "{tmp}/run2"],
])
def test_torch_commands_exit_2_with_the_extra_to_install(tmp_path, argv):
    argv = [a.format(model=EXAMPLES / "plainnet7.onnx", tmp=tmp_path, examples=EXAMPLES) for a in argv]
    r = run_without_torch(*argv, cwd=tmp_path)
    assert r.returncode == 2
    lines = [ln for ln in r.stderr.splitlines() if ln.strip() and not ln.startswith("TRIED_TORCH")]
    assert lines == [f"netmorph: error: netmorph {argv[0]}: this needs PyTorch, which is not installed: "
                     "pip install -e '.[torch]' in the netmorph checkout"]
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "t.onnx").exists() and not (tmp_path / "run").exists()


def test_the_python_api_says_which_extra_lowering_needs(tmp_path):
    code = RUNNER.split("from netmorph.cli.main")[0] + (
        "import netmorph\n"
        "g = netmorph.load(sys.argv[1])\n"
        "try:\n    netmorph.lower(g)\nexcept ModuleNotFoundError as e:\n    print(e)\n"
    )
    r = subprocess.run([sys.executable, "-c", code, str(EXAMPLES / "plainnet7.onnx")], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == ("this needs PyTorch, which is not installed: "
                                "pip install -e '.[torch]' in the netmorph checkout")


def test_every_subpackage_is_listed_in_pyproject():
    """A non-editable install ships only the packages pyproject lists (``.ci/light_install`` uses one)."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib

    root = Path(__file__).parents[1]
    listed = set(tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {"netmorph." + ".".join(p.parent.relative_to(root / "netmorph").parts)
             for p in (root / "netmorph").rglob("__init__.py") if p.parent != root / "netmorph"}
    found |= {"netmorph", "netmorph.passes", "netmorph.cli"}
    assert found <= listed, sorted(found - listed)
