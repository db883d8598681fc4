"""Function-equivalence checks in ONNX Runtime, and their reports.

::

    from netmorph.verification import verify_models
    report = verify_models(parent, child)                       # the default policy
    report = verify_models(parent, child, tolerance="calibrated", dims={"seq": 7})
    report.raise_if_failed("conv-split of conv3")

``netmorph.verify(a, b)`` is the same call as a plain function of the top-level package.
"""

from __future__ import annotations

from .compare import compare_output
from .equivalence import verify_models
from .errors import InputsError, InterfaceMismatchError, ModelRunError, OptionsError
from .inputs import load_npz, make_inputs, read_batches
from .interface import Interface
from .options import VerifyOptions
from .ranges import IntRange, infer_int_ranges
from .report import OutputDiff, VerifyReport
from .session import default_providers
from .tolerance import Tolerance

__all__ = [
    "Interface", "InputsError", "IntRange", "InterfaceMismatchError", "ModelRunError", "OptionsError",
    "OutputDiff", "Tolerance", "VerifyOptions", "VerifyReport", "compare_output", "default_providers",
    "infer_int_ranges", "load_npz", "make_inputs", "read_batches", "verify_models",
]

