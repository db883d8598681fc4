"""Pipelines as TOML files: :func:`load_pipeline`, :func:`dumps_pipeline`, :func:`save_pipeline`.

Reading uses the standard library's ``tomllib`` (Python 3.11+) or the ``tomli`` package on
older Pythons; writing uses ``tomli-w``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..atomic import atomic_write_text
from .spec import Pipeline, PipelineError


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


def _without_none(v: Any) -> Any:
    if isinstance(v, dict):
        return {str(k): _without_none(x) for k, x in v.items() if x is not None}
    if isinstance(v, list | tuple):
        return [_without_none(x) for x in v]
    return v


def dumps_toml(data: dict[str, Any]) -> str:
    """TOML text for a dict (``tomli-w``); ``None`` values are left out, as TOML has no null."""
    import tomli_w

    try:
        return tomli_w.dumps(_without_none(data))
    except TypeError as e:
        raise PipelineError(f"cannot write to TOML: {e}") from None


def dumps_pipeline(pipeline: Pipeline) -> str:
    """The TOML form of ``pipeline`` (``loads_pipeline(dumps_pipeline(p)) == p``)."""
    header = f"# netmorph pipeline {pipeline.name!r}: run with `netmorph run FILE --out-dir DIR`\n"
    return header + dumps_toml(pipeline.to_dict())


def save_pipeline(pipeline: Pipeline, path: str | os.PathLike) -> None:
    """Write ``pipeline`` as TOML to ``path`` atomically."""
    atomic_write_text(path, dumps_pipeline(pipeline))
