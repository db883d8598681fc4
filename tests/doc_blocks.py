"""The fenced code blocks of the user docs, and the ``doc-test`` marker convention.

A block whose info string is ``bash``/``sh``/``shell`` or ``python``/``py`` is a program: the docs
test runs it as written. A marker comment on the line just before the fence skips it, naming why::

    <!-- doc-test: skip gpu: needs a CUDA device -->

The word after ``skip`` is one of :data:`SKIP_KINDS`. Blocks with any other info string (none,
``text``, ``toml``, ``yaml``) are synopses, outputs or files, not programs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHELL = ("bash", "sh", "shell")
PYTHON = ("python", "py")
SKIP_KINDS = {
    "gpu": "needs a CUDA device",
    "long": "a long run (minutes to hours)",
    "download": "needs a download the test cannot make",
    "install": "installs packages or runs the test suite itself",
    "reference": "an API listing, not a program",
}
MARKER = re.compile(r"^<!--\s*doc-test:\s*(.*?)\s*-->\s*$")
FENCE = re.compile(r"^(\s*)(```+)\s*([^\s`]*)")


@dataclass(frozen=True)
class Block:
    doc: str            # path relative to the checkout
    line: int           # line of the opening fence (1-based)
    lang: str           # "shell" or "python"
    code: str
    skip: str | None    # "kind: reason", or None to run it

    @property
    def id(self) -> str:
        return f"{self.doc}:{self.line}"


def user_docs(root: Path = ROOT) -> list[Path]:
    return [root / "README.md", *sorted((root / "docs").glob("*.md")), root / "examples" / "README.md"]


def parse_marker(text: str, where: str) -> str:
    """``"skip KIND[: reason]"`` -> ``"KIND: reason"``; anything else is an error in the doc."""
    m = re.match(r"^skip\s+(\w+)\s*:?\s*(.*)$", text)
    if not m or m.group(1) not in SKIP_KINDS:
        raise ValueError(f"{where}: bad doc-test marker {text!r}: expected 'skip KIND: reason' with KIND one "
                         f"of {', '.join(SKIP_KINDS)}")
    return f"{m.group(1)}: {m.group(2) or SKIP_KINDS[m.group(1)]}"


def blocks(path: Path, root: Path = ROOT) -> list[Block]:
    """Every shell / Python block of ``path`` in order, with its skip reason (or ``None``)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    rel = path.relative_to(root).as_posix()
    out: list[Block] = []
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, fence, info = m.groups()
        j = i + 1
        while j < len(lines) and not lines[j].strip().startswith(fence):
            j += 1
        lang = "shell" if info in SHELL else "python" if info in PYTHON else None
        if lang is not None:
            k = i - 1
            while k >= 0 and not lines[k].strip():
                k -= 1
            marker = MARKER.match(lines[k].strip()) if k >= 0 else None
            skip = parse_marker(marker.group(1), f"{rel}:{k + 1}") if marker else None
            code = "\n".join(ln[len(indent):] if ln.startswith(indent) else ln for ln in lines[i + 1:j])
            out.append(Block(rel, i + 1, lang, code + "\n", skip))
        i = j + 1
    return out
