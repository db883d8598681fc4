"""Function-equivalence checks in ONNX Runtime, and their reports.

::

    from netmorph.verification import verify_models
    report = verify_models(parent, child, rtol=1e-4, atol=1e-5)
    report.raise_if_failed("conv-split of conv3")

``netmorph.verify(a, b)`` is the same call as a plain function of the top-level package.
"""

from __future__ import annotations

from .compare import compare_output
from .equivalence import verify_models
from .errors import InputsError, InterfaceMismatchError, ModelRunError
from .inputs import load_npz, make_inputs
from .interface import Interface
from .report import OutputDiff, VerifyReport
from .session import default_providers
from .tolerance import Tolerance

__all__ = [
    "Interface", "InputsError", "InterfaceMismatchError", "ModelRunError", "OutputDiff", "Tolerance",
    "VerifyReport", "compare_output", "default_providers", "load_npz", "make_inputs", "verify_models",
]

