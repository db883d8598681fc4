"""Subpackages that double as the top-level function of the same name.

``netmorph.verify(a, b)`` and ``netmorph.lower(graph)`` are functions of the top-level package, but
``netmorph/verify`` and ``netmorph/lower`` are also subpackages, and importing a subpackage makes
Python rebind the parent's attribute to the module. Making the module callable keeps
``netmorph.verify(...)`` / ``netmorph.lower(...)`` working before and after that import.
"""

from __future__ import annotations

import sys
import types
from collections.abc import Callable
from typing import Any


def make_module_callable(module_name: str, fn: Callable[..., Any]) -> None:
    """Make the module ``module_name`` forward calls to ``fn``."""

    class _CallableModule(types.ModuleType):
        __doc__ = sys.modules[module_name].__doc__

        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            return fn(*args, **kwargs)

    sys.modules[module_name].__class__ = _CallableModule
