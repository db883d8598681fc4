"""Optional dependencies and the install hint when one is missing.

The core install (``pip install -e .`` in the checkout: netmorph is not on PyPI yet) reads,
verifies, grows and writes ONNX models with ONNX Runtime only. Training, lowering and pipelines need
PyTorch (the ``torch`` extra); plots need matplotlib (``plot``). A command that needs a missing one
fails with one line naming the extra and the command that installs it (:func:`install_hint`), never
a traceback.
"""

from __future__ import annotations

EXTRAS: dict[str, tuple[str, str]] = {
    # top-level module -> (what it is, the extra that installs it)
    "torch": ("PyTorch", "torch"),
    "matplotlib": ("matplotlib", "plot"),
}


def install_command(extra: str) -> str:
    """The command that installs ``extra``: from the checkout, until netmorph is published."""
    return f"pip install -e '.[{extra}]' in the netmorph checkout"


def install_hint(module: str) -> str:
    what, extra = EXTRAS[module]
    return f"this needs {what}, which is not installed: {install_command(extra)}"


def missing_extra_message(exc: BaseException) -> str | None:
    """The one-line hint for a ``ModuleNotFoundError`` of an optional dependency, else ``None``."""
    if not isinstance(exc, ModuleNotFoundError) or not exc.name:
        return None
    top = exc.name.split(".")[0]
    return install_hint(top) if top in EXTRAS else None


def available(module: str) -> bool:
    """Whether ``module`` can be found, without importing it."""
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a blocked import, or sys.modules[module] is None
        return False


def require(module: str) -> None:
    """Raise ``ModuleNotFoundError`` with the install hint unless ``module`` can be imported."""
    if not available(module):
        raise ModuleNotFoundError(install_hint(module), name=module)
