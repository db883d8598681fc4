"""Pipelines as TOML files: :func:`load_pipeline`, :func:`dumps_pipeline`, :func:`save_pipeline`.

Reading uses the standard library's ``tomllib`` (Python 3.11+) or the ``tomli`` package on
older Pythons. Writing uses the small dumper below, enough for a pipeline's structure
(scalars, arrays, tables, inline tables and one array of tables).
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Any

from ..atomic import atomic_write_text
from .spec import Pipeline, PipelineError

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def toml_module() -> Any:
    """``tomllib`` (Python 3.11+) or ``tomli``; a clear :class:`PipelineError` when neither exists."""
    try:
        import tomllib

        return tomllib
    except ModuleNotFoundError:  # Python 3.10
        try:
            import tomli

            return tomli
        except ModuleNotFoundError:
            raise PipelineError(
                "reading TOML needs Python 3.11+ (tomllib) or the 'tomli' package (pip install tomli)"
            ) from None


def loads_pipeline(text: str, source: str = "<string>", base_dir: str | Path | None = None) -> Pipeline:
    """Parse a pipeline from TOML text.

    Parameters
    ----------
    text
        The TOML document.
    source
        Name used in error messages (the file name).
    base_dir
        Directory a relative ``[start].path`` is relative to (made absolute when given).

    Raises
    ------
    PipelineError
        Invalid TOML or an invalid pipeline; one line naming ``source`` and the reason.
    """
    toml = toml_module()
    try:
        data = toml.loads(text)
    except toml.TOMLDecodeError as e:
        raise PipelineError(f"{source}: invalid TOML: {str(e).splitlines()[0]}") from None
    start = data.get("start")
    if base_dir is not None and isinstance(start, dict) and isinstance(start.get("path"), str):
        p = Path(start["path"]).expanduser()
        if not p.is_absolute():
            start["path"] = str((Path(base_dir) / p).resolve())
    try:
        return Pipeline.from_dict(data)
    except PipelineError as e:
        raise PipelineError(f"{source}: {e}") from None


def load_pipeline(path: str | os.PathLike) -> Pipeline:
    """Read a pipeline TOML file (see :func:`loads_pipeline`)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PipelineError(f"{path}: no such pipeline file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise PipelineError(f"{path}: cannot read ({e})") from None
    return loads_pipeline(text, str(path), base_dir=path.parent)


def _key(k: str) -> str:
    return k if _BARE_KEY.match(k) else json.dumps(k)


def _value(v: Any, where: str) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_value(x, where) for x in v) + "]"
    if isinstance(v, dict):
        items = [f"{_key(str(k))} = {_value(x, where)}" for k, x in v.items() if x is not None]
        return "{ " + ", ".join(items) + " }" if items else "{}"
    raise PipelineError(f"{where}: cannot write a {type(v).__name__} to TOML ({v!r})")


def _assignments(table: dict[str, Any], where: str) -> list[str]:
    return [f"{_key(str(k))} = {_value(v, f'{where}.{k}')}" for k, v in table.items() if v is not None]


def dumps_toml(data: dict[str, Any]) -> str:
    """TOML text for a dict of scalars, tables (one level) and arrays of tables.

    ``None`` values are left out; dicts nested below a table become inline tables.
    """
    lines: list[str] = []
    tables: list[tuple[str, dict]] = []
    arrays: list[tuple[str, list]] = []
    for k, v in data.items():
        if v is None:
            continue
        if isinstance(v, dict):
            tables.append((k, v))
        elif isinstance(v, list) and v and all(isinstance(x, dict) for x in v):
            arrays.append((k, v))
        else:
            lines.append(f"{_key(k)} = {_value(v, k)}")
    for k, table in tables:
        lines += ["", f"[{_key(k)}]", *_assignments(table, k)]
    for k, rows in arrays:
        for row in rows:
            lines += ["", f"[[{_key(k)}]]", *_assignments(row, k)]
    return "\n".join(lines) + "\n"


def dumps_pipeline(pipeline: Pipeline) -> str:
    """The TOML form of ``pipeline`` (``loads_pipeline(dumps_pipeline(p)) == p``)."""
    header = f"# netmorph pipeline {pipeline.name!r}: run with `netmorph run FILE --out-dir DIR`\n"
    return header + dumps_toml(pipeline.to_dict())


def save_pipeline(pipeline: Pipeline, path: str | os.PathLike) -> None:
    """Write ``pipeline`` as TOML to ``path`` atomically."""
    atomic_write_text(path, dumps_pipeline(pipeline))
