"""Every package the tests import is one the README's commands install.

The second Quickstart command, ``pip install -e '.[test]' && python -m pytest -q``, must give a
suite that tests what CI tests: a test module that imports a distribution the ``[test]`` extra (or
the core dependencies, or an extra it pulls in) does not declare would fail or test less on a fresh
machine. This reads every ``import`` in ``tests/`` and checks each third-party one against
``pyproject.toml``.
"""

from __future__ import annotations

import ast
import re
import sys
from importlib.metadata import packages_distributions
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests"


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def declared_for_tests() -> set[str]:
    """Normalised names of the core dependencies, the ``test`` extra and the extras it names."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    names, todo, seen = set(), list(project["dependencies"]) + list(extras["test"]), {"test"}
    while todo:
        req = todo.pop()
        m = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[([^\]]*)\])?", req)
        name = _norm(m.group(1))
        if name == _norm(project["name"]):
            for extra in (m.group(2) or "").split(","):
                if extra.strip() and extra.strip() not in seen:
                    seen.add(extra.strip())
                    todo += extras[extra.strip()]
        else:
            names.add(name)
    return names


def third_party_imports() -> dict[str, set[str]]:
    """Top-level module -> the test files importing it (stdlib, tests' own modules and netmorph left out)."""
    local = {p.stem for p in TESTS.glob("*.py")} | {"netmorph"}
    found: dict[str, set[str]] = {}
    for path in TESTS.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                mods = [node.module]
            else:
                continue
            for mod in mods:
                top = mod.split(".")[0]
                if top not in sys.stdlib_module_names and top not in local:
                    found.setdefault(top, set()).add(path.name)
    return found


def test_every_test_import_is_declared():
    declared, dists = declared_for_tests(), packages_distributions()
    imports = third_party_imports()
    assert {"torch", "torchvision", "transformers", "onnxruntime"} <= set(imports)  # the scan sees them
    problems = []
    for mod, files in sorted(imports.items()):
        if mod == "tomli":  # the Python 3.10 fallback for tomllib, declared with its marker
            continue
        owners = {_norm(d) for d in dists.get(mod, ())}
        if not owners:
            problems.append(f"{mod} (imported by {', '.join(sorted(files))}) is not installed")
        elif not owners & declared:
            problems.append(f"{mod} (imported by {', '.join(sorted(files))}) comes from {sorted(owners)}, "
                            "which pyproject's [test] extra does not declare")
    assert not problems, "\n".join(problems)


def test_declared_names_are_read():
    """The reader follows ``netmorph[torch,plot]`` and strips versions and markers."""
    names = declared_for_tests()
    assert {"torch", "matplotlib", "pytest", "onnx", "onnxruntime", "tomli"} <= names
    assert not any(re.search(r"[<>=;\[ ]", n) for n in names)
