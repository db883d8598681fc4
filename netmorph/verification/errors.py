"""Errors of the verifier: each means "bad input" (the CLI prints one line and exits 2).

A model that runs but computes a different function is *not* an error: it is a
:class:`~netmorph.verification.VerifyReport` with ``ok == False`` (CLI exit 1).
"""

from __future__ import annotations

from ..errors import NetmorphError, VerificationError


class InterfaceMismatchError(VerificationError):
    """The two models do not have the same inputs / outputs (names, element types, shapes)."""


class ModelRunError(VerificationError):
    """ONNX Runtime cannot load or run one of the models."""


class InputsError(NetmorphError):
    """The inputs to compare on cannot be made or do not fit the model's interface."""


class OptionsError(NetmorphError):
    """A verification option is malformed (``--dim``, ``--range``, ``--map``, a tolerance, a provider)."""
