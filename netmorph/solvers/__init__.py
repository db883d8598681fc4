"""Kernel decomposition solvers: pure functions on numpy arrays (no graph code).

``split_kernel`` splits a convolution kernel G into two convolutions whose composition is G zero-padded
(the paper's morph equation, Eq. 5); ``identity_split`` splits ``scale * Id`` (ResNet block
duplication); ``compose`` is the composition itself. See ``docs/solvers.md``.
"""

from __future__ import annotations

from .compose import compose, target_kernel
from .identity import identity_split
from .optgd import parabola_step
from .result import SplitResult, offcentre_energy
from .split import EXACT_SOLVERS, SOLVERS, split_kernel

__all__ = [
    "EXACT_SOLVERS", "SOLVERS", "SplitResult", "compose", "identity_split", "offcentre_energy",
    "parabola_step", "split_kernel", "target_kernel",
]
