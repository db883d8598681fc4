"""Size limits of a verification: what one check may read, hold and run (see docs/verify.md).

Bytes limits can be raised through environment variables for genuinely large models; every
limit is checked *before* the memory is allocated (declared sizes of ``.npz`` members, declared
output shapes) or as soon as a run shows it (outputs of a symbolic size).
"""

from __future__ import annotations

from ..limits import _env_bytes

MAX_COVER_BATCHES = 64
"""Most coverage batches added to reach every value of an embedding table; past it the table is
sampled (the plan's ``covered`` says so)."""


def max_input_bytes() -> int:
    """Largest total of the arrays of ``--inputs`` (declared sizes, checked before decompressing)."""
    return _env_bytes("NETMORPH_MAX_VERIFY_INPUT_BYTES", 1 << 30)


def max_output_bytes() -> int:
    """Largest total of one model's outputs over all batches (they are held for the comparison)."""
    return _env_bytes("NETMORPH_MAX_VERIFY_OUTPUT_BYTES", 1 << 30)


def max_generated_input_bytes() -> int:
    """Largest total of the random inputs a check makes (every batch): a model whose fixed input
    dims ask for more is refused before anything is allocated or run. Default 256 MiB (a 224x224
    image batch of 3 is under 2 MiB); ``NETMORPH_MAX_VERIFY_INPUT_BYTES`` raises it."""
    return _env_bytes("NETMORPH_MAX_VERIFY_INPUT_BYTES", 256 << 20)


def max_float64_probe_bytes() -> int:
    """Largest float64 copy of a reference's weights the calibration's ``float64`` probe makes
    (twice its float32 weights); past it the probe is skipped, and the report's
    ``calibration.skipped`` says so. Default 512 MiB (a 64 M-parameter model): past that size the
    copy, on top of the parent and the child, would put a verification's peak memory above 3x
    the weights, and the other two probes calibrate alone (as they do for every CNN and GELU
    model, where ONNX Runtime has no float64 kernel; the whole suite passes with the probe
    off); ``NETMORPH_MAX_FLOAT64_PROBE_BYTES`` raises it."""
    return _env_bytes("NETMORPH_MAX_FLOAT64_PROBE_BYTES", 512 << 20)
