"""Passes by name: ``get_pass("conv-split", node=...)``, ``list_passes()``.

Every module of this package is imported once, the first time the registry is used, and every
:class:`~.base.Pass` subclass with a ``name`` defined in it is registered: adding a pass is adding
its module (with its test and its line in ``docs/passes.md``), nothing else. :func:`register`
adds a pass class defined elsewhere (a plug-in).
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from typing import Any

from ..errors import PreconditionError
from .base import Option, Pass

PASSES: dict[str, type[Pass]] = {}
"""Registry name -> pass class (filled by :func:`discover`; use :func:`passes` to read it)."""
_discovered = False


def discover() -> dict[str, type[Pass]]:
    """Import every module of the package and register the passes it defines (once)."""
    global _discovered
    if _discovered:
        return PASSES
    _discovered = True
    package = __name__.rsplit(".", 1)[0]
    for info in sorted(pkgutil.iter_modules(importlib.import_module(package).__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{package}.{info.name}")
        for obj in list(vars(module).values()):  # in the order the module defines them
            if inspect.isclass(obj) and issubclass(obj, Pass) and obj.__module__ == module.__name__ \
                    and obj.name:
                _add(obj)
    return PASSES


def _add(cls: type[Pass]) -> None:
    other = PASSES.get(cls.name)
    if other is not None and other is not cls:
        raise ValueError(f"two passes are named {cls.name!r}: {other.__qualname__} and {cls.__qualname__}")
    PASSES[cls.name] = cls


def passes() -> dict[str, type[Pass]]:
    """Every registered pass, by name."""
    return discover()


def register(cls: type[Pass]) -> type[Pass]:
    """Add a pass class defined outside this package to the registry (usable as a decorator)."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name")
    discover()
    _add(cls)
    return cls


def get_pass(name: str, **options: Any) -> Pass:
    """A pass instance by registry name; unknown names and options are precondition errors."""
    cls = passes().get(name)
    if cls is None:
        raise PreconditionError(f"no pass named {name!r} (passes: {', '.join(PASSES)})")
    return cls(**options)


def make_passes(items: Any, options: dict[str, Any], *, flags: bool = False) -> list[Pass]:
    """Pass instances for ``items`` (names, or :class:`Pass` objects kept as they are): each named
    pass takes the ``options`` it declares; an option none of them declares is refused (``flags``:
    name it as a CLI flag)."""
    items = [items] if isinstance(items, str | Pass) else list(items)
    for p in items:
        if isinstance(p, str) and p not in passes():
            raise PreconditionError(f"no pass named {p!r} (see `netmorph passes`)")
    options = {k: v for k, v in options.items() if v is not None}
    used: set[str] = set()
    built = []
    for p in items:
        if isinstance(p, Pass):
            built.append(p)
            continue
        cls = PASSES[p]
        mine = {k: v for k, v in options.items() if cls.option(k) is not None}
        used |= set(mine)
        built.append(cls(**mine))
    unused = sorted(set(options) - used)
    if unused:
        names = [p if isinstance(p, str) else p.name for p in items]
        takes = sorted({o.flag if flags else o.name for p in items if isinstance(p, str)
                        for o in PASSES[p].option_specs})
        what = "--" + unused[0].replace("_", "-") if flags else repr(unused[0])
        raise PreconditionError(f"option {what} does not apply to pass(es) {', '.join(names)} "
                                f"(they take: {' '.join(takes) or 'no options'})")
    return built


def all_options() -> dict[str, list[tuple[str, Option]]]:
    """Option name -> ``[(pass name, declaration), …]`` over every pass (the CLI's flags)."""
    out: dict[str, list[tuple[str, Option]]] = {}
    for name, cls in passes().items():
        for o in cls.option_specs:
            out.setdefault(o.name, []).append((name, o))
    return out


def list_passes() -> list[dict[str, Any]]:
    """One row per pass: name, summary, default contract, options (their declarations)."""
    from ..verification.options import DEFAULT_K

    rows = []
    for name, cls in passes().items():
        c = cls.default_contract()
        contract = str(c)
        if c.is_exact:  # what grow actually checks (PassManager.EXACT_TOLERANCE)
            contract = (f"exact (verified within {DEFAULT_K:g}x the parent's own rounding noise; "
                        f"--rtol/--atol for the fixed rtol={c.rtol:g}, atol={c.atol:g})")
        if cls.option("solver") is not None:
            contract = f"{contract} with --solver exact; approx with optgd / lsq"
        if cls.option("noise") is not None:
            contract = f"{contract}; approx with --noise > 0"
        rows.append({
            "name": name,
            "summary": cls.summary,
            "contract": contract,
            "one_of": [list(g) for g in cls.exclusive_groups()],
            "options": [o.to_dict() for o in cls.option_specs],
        })
    return rows
