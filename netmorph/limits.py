"""Documented size limits and numeric option checks, shared by the CLI, TOML pipelines and the library.

Every size a user can type (levels, blocks, channels, ``--repeat``, a schedule's count, threads …)
is checked here *before* anything is allocated, so an absurd value is one clear error instead of a
process that grows without bound. The limits are far above any real use; the byte limits can be
raised through environment variables for genuinely large inputs (see ``docs/security.md``).
"""

from __future__ import annotations

import math
import os
from typing import Any

from .errors import NetmorphError


class LimitError(NetmorphError):
    """A value is not a number of the right kind, out of range, or above a documented limit."""


def _env_bytes(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        value = int(float(raw))
    except ValueError:
        raise LimitError(f"environment variable {name}={raw!r} is not a byte count") from None
    if value < 1:
        raise LimitError(f"environment variable {name}={raw!r} must be positive")
    return value


# -- structural sizes (DynamicNet builder, growth schedules, CLI) ------------------------------
MAX_LEVELS = 16
MAX_BLOCKS = 4096
"""Blocks per level of a built DynamicNet (depth 100 in the paper needs 33)."""
MAX_WIDTH = 65536
"""Channels of one level, classes of the classifier, image channels."""
MAX_IMAGE_SIDE = 16384
MAX_BUILD_PARAMETERS = 2_000_000_000
"""Parameters of a model built by ``netmorph new`` (protobuf's 2 GiB and a sane memory bound)."""
MAX_REPEAT = 1000
"""``grow --repeat`` and the COUNT of one ``iterate --schedule`` entry."""
MAX_STAGES = 1000
MAX_EPOCHS = 1_000_000
MAX_BATCH = 1 << 24
MAX_PROCESSES = 1024
"""``--nproc`` and ``--num-threads``."""
MAX_SEED = 2**63 - 1
MAX_ITER = 10_000_000


# -- bytes read from files ---------------------------------------------------------------------
def max_model_bytes() -> int:
    """Largest ``.onnx`` file read (protobuf cannot parse more than 2 GiB)."""
    return _env_bytes("NETMORPH_MAX_MODEL_BYTES", 2**31 - 1)


def max_weight_bytes() -> int:
    """Largest total of external-data weights read for one model (default: the machine's memory)."""
    try:
        phys = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # pragma: no cover
        phys = 64 << 30
    return _env_bytes("NETMORPH_MAX_WEIGHT_BYTES", phys)


def max_data_bytes() -> int:
    """Largest decoded data set (all arrays of one ``.npz`` / one CIFAR batch file)."""
    return _env_bytes("NETMORPH_MAX_DATA_BYTES", 8 << 30)


# -- checks --------------------------------------------------------------------------------------
def check_int(name: str, value: Any, low: int | None = None, high: int | None = None) -> int:
    """``value`` as an ``int`` in ``[low, high]``; floats with an integral value are accepted."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise LimitError(f"{name} must be an integer, got {value!r}")
    if isinstance(value, float) and (not math.isfinite(value) or value != int(value)):
        raise LimitError(f"{name} must be an integer, got {value!r}")
    value = int(value)
    if low is not None and value < low:
        raise LimitError(f"{name} must be >= {low}, got {value}")
    if high is not None and value > high:
        raise LimitError(f"{name} must be <= {high:,} (documented limit), got {value:,}")
    return value


def check_float(name: str, value: Any, low: float | None = None, high: float | None = None, *,
                low_open: bool = False) -> float:
    """``value`` as a finite ``float`` in the given range (``low_open``: ``value > low``)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise LimitError(f"{name} must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise LimitError(f"{name} must be finite, got {value}")
    if low is not None and (value <= low if low_open else value < low):
        raise LimitError(f"{name} must be {'>' if low_open else '>='} {low:g}, got {value:g}")
    if high is not None and value > high:
        raise LimitError(f"{name} must be <= {high:g}, got {value:g}")
    return value


def check_optional_float(name: str, value: Any, low: float = 0.0) -> float | None:
    """``None`` or a finite float ``>= low`` (tolerances such as ``--rtol``)."""
    return None if value is None else check_float(name, value, low)


# -- pass options (the bounds of the declarations in netmorph/passes; checked when a pass is made) ----
MAX_KERNEL = 31
"""Kernel sizes a pass may create: ``--kernel``, ``--from``, ``--k1``, ``--k2``."""
MAX_FACTOR = 64.0
"""Width factors (``widen``, ``widen-mlp``, ``widen-hidden --factor``); the child's size is checked too."""
MAX_HEADS = 4096
"""Heads ``add-heads`` adds to one attention."""
MAX_LAYERS = 4096
"""Layers ``transformer-deepen --layers`` inserts."""


GROWTH_BYTES = 256 << 20
GROWTH_RATIO = 4


def max_growth_bytes(parent_bytes: int) -> int:
    """Most parameter bytes one pass may add to a model of ``parent_bytes`` (estimated from the pass's
    plan before any array of the child is allocated): 256 MiB, or four times the parent's own bytes
    when that is more (so ``widen --factor 2`` and ``deepen`` always fit). ``NETMORPH_MAX_GROWTH_BYTES``
    replaces the rule by a fixed number of bytes (the CLI, pipelines and the Python API alike)."""
    if os.environ.get("NETMORPH_MAX_GROWTH_BYTES", "").strip():
        return _env_bytes("NETMORPH_MAX_GROWTH_BYTES", GROWTH_BYTES)
    return max(GROWTH_BYTES, GROWTH_RATIO * int(parent_bytes))
