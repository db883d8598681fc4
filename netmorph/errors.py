"""Exception types that mean "bad input" (the CLI prints them as one line and exits 2).

Every area raises a subclass of :class:`NetmorphError`; the CLI catches ``USER_ERRORS``.
"""

from __future__ import annotations


class NetmorphError(ValueError):
    """Base class of netmorph's expected, user-facing errors."""


class PreconditionError(NetmorphError):
    """A pass or recognition step does not apply to this graph; the message says why."""


class StructureError(NetmorphError):
    """The graph does not have the DynamicNet shape; the message names the node and reason."""


class LoweringError(NetmorphError):
    """The graph cannot be lowered to PyTorch (unsupported op, attribute …)."""


class VerificationError(NetmorphError):
    """A child model failed its equivalence check against its parent."""


USER_ERRORS: tuple[type[BaseException], ...] = (NetmorphError,)
