"""The user docs run as written, on a fresh copy of the checkout, and say nothing that is not there.

Every ``bash`` / ``python`` block of README.md, docs/*.md and examples/README.md is run in a copy of
the checkout's files (``git ls-files``: nothing ignored or git-excluded comes along) holding
the data the docs tell the user to make, ``data/cifar10_small.npz``, here a stand-in built by
``netmorph data prepare`` from tiny batches in the official CIFAR-10 pickle format. Blocks of one
page run in order in one copy, as a reader following the page would. A block marked
``<!-- doc-test: skip KIND: reason -->`` (``tests/doc_blocks.py``: a GPU, a long run, a download)
is not run; :func:`test_markers_are_counted_and_explained` checks that each says why. The
hygiene tests grep the same pages for machine paths,
files the repository lacks, and words about how the project was made.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from doc_blocks import ROOT, SKIP_KINDS, blocks, user_docs
from test_data_prepare import fake_cifar10

DOCS = user_docs()
BLOCKS = [b for doc in DOCS for b in blocks(doc)]
RUNNABLE = [b for b in BLOCKS if not b.skip]
BLOCK_TIMEOUT_S = 240
STAND_IN = {"train_per_class": 30, "test_per_class": 10}


def tracked_files(root: Path) -> list[str]:
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=root,
                         capture_output=True, check=True)
    return [f for f in out.stdout.decode().split("\0") if f and (root / f).is_file()]


@pytest.fixture(scope="session")
def stand_in_data(tmp_path_factory) -> Path:
    """``data/`` as ``netmorph data prepare`` leaves it, from a tiny batch folder in the official format."""
    work = tmp_path_factory.mktemp("prepared")
    src = fake_cifar10(work / "download", **STAND_IN)
    r = subprocess.run([sys.executable, "-m", "netmorph.cli.main", "data", "prepare", "--from", str(src),
                        "--any-source", "--train-per-class", str(STAND_IN["train_per_class"]),
                        "--test-per-class", str(STAND_IN["test_per_class"])],
                       cwd=work, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return work / "data"


_checkouts: dict[str, Path] = {}


@pytest.fixture
def checkout(request, tmp_path_factory, stand_in_data) -> Path:
    """A fresh copy of the checkout per page (shared by that page's blocks, in order)."""
    doc = request.node.callspec.params["block"].doc
    if doc not in _checkouts:
        dst = tmp_path_factory.mktemp("checkout")
        for f in tracked_files(ROOT):
            (dst / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / f, dst / f)
        shutil.rmtree(dst / "data", ignore_errors=True)  # a user's own data/ is never tracked
        shutil.copytree(stand_in_data, dst / "data")
        _checkouts[doc] = dst
    return _checkouts[doc]


def block_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "NETMORPH"))}
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")  # netmorph, python
    env.update(OMP_NUM_THREADS="2", MPLBACKEND="Agg", PYTHONDONTWRITEBYTECODE="1")
    return env


@pytest.mark.slow
@pytest.mark.parametrize("block", RUNNABLE, ids=[b.id for b in RUNNABLE])
def test_doc_block_runs(block, checkout):
    cmd = (["bash", "-euo", "pipefail", "-c", block.code] if block.lang == "shell"
           else [sys.executable, "-c", block.code])
    try:
        r = subprocess.run(cmd, cwd=checkout, env=block_env(), capture_output=True, text=True,
                           timeout=BLOCK_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{block.id}: still running after {BLOCK_TIMEOUT_S} s: choose quicker options in the "
                    f"docs, or mark it '<!-- doc-test: skip long: ... -->'")
    assert r.returncode == 0, (f"{block.id} ({block.lang}) exited {r.returncode}\n--- block\n{block.code}"
                               f"--- stdout\n{r.stdout[-3000:]}\n--- stderr\n{r.stderr[-3000:]}")


def test_markers_are_counted_and_explained():
    skipped = [b for b in BLOCKS if b.skip]
    for b in skipped:
        kind, _, reason = b.skip.partition(":")
        assert kind in SKIP_KINDS and reason.strip(), f"{b.id}: {b.skip!r} names no kind and reason"
    assert len(RUNNABLE) >= 10, "most runnable examples must stay runnable"


# -- hygiene -----------------------------------------------------------------------------------
FORBIDDEN = {
    "a machine path": r"(?<![\w.])/(work|root|home|tmp)/|\.\./shared|shared/data|shared/docs",
    "a file the repository lacks (design notes)": r"design\.md|\bdesign §",
    "an issue number": r"\bissues?\s*#?\d+",
    "who built it": r"\bengineers?\b",
    "how it was built (branches)": r"\b(this|the \S+'s|feature|git|merged into \w+) branch\b",
    "how it was built (the task / session)": r"\bthe task\b|\bsessions? (had|without)\b|\blent to\b|"
                                             r"development machine",
}
TOP = ("README.md", "docs/", "examples/", "netmorph/", "cli/", "passes/", "tests/", "benchmarks/", ".ci/")
PATH_TOKEN = re.compile(r"`([^`\s]+)`|\]\(([^)\s#]+)(?:#[^)]*)?\)")


@pytest.mark.parametrize("doc", DOCS, ids=[d.relative_to(ROOT).as_posix() for d in DOCS])
def test_docs_say_nothing_about_how_they_were_made(doc):
    bad = []
    for n, line in enumerate(doc.read_text(encoding="utf-8").splitlines(), 1):
        for what, pattern in FORBIDDEN.items():
            m = re.search(pattern, line, flags=re.IGNORECASE)
            if m:
                bad.append(f"{doc.name}:{n}: {what}: {m.group(0)!r}")
    assert not bad, "\n".join(bad)


def referenced_paths(doc: Path) -> list[tuple[int, str]]:
    """Repository paths a page names: relative links, and code spans that start with a top folder."""
    out = []
    for n, line in enumerate(doc.read_text(encoding="utf-8").splitlines(), 1):
        for m in PATH_TOKEN.finditer(line):
            link = m.group(2)
            if link is not None:
                if re.match(r"^[a-z]+:", link):
                    continue  # https:, mailto:
                out.append((n, (doc.parent / link).resolve().relative_to(ROOT.resolve()).as_posix()))
                continue
            token = m.group(1).split("::")[0].rstrip(".,;:)")
            if token.startswith(TOP) and not re.search(r"[*{}<>|$]|[A-Z]{2,}|_K\b|\bN\b", token):
                out.append((n, token))
    return out


@pytest.mark.parametrize("doc", DOCS, ids=[d.relative_to(ROOT).as_posix() for d in DOCS])
def test_every_repository_path_a_doc_names_exists(doc):
    files = set(tracked_files(ROOT))
    folders = {str(Path(f).parent.as_posix()) + "/" for f in files} | {
        p.as_posix() + "/" for f in files for p in Path(f).parents}
    missing = [f"{doc.name}:{n}: {p}" for n, p in referenced_paths(doc)
               if p not in files and p.rstrip("/") + "/" not in folders]
    assert not missing, "\n".join(missing)
