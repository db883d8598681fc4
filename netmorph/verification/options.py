"""The one verification policy: which inputs, which tolerance, where it runs.

``netmorph verify``, ``netmorph grow``, pipelines (through ``PassManager``) and
:func:`~netmorph.verification.verify_models` all start from ``VerifyOptions()`` and change only
what the caller names, so the same parent and child get the same verdict everywhere.
The ``parse_*`` helpers turn the CLI's ``NAME=VALUE`` strings into these fields.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..limits import MAX_BATCH
from .errors import OptionsError

MAX_BATCHES = 10_000
"""Most random batches one verification runs (coverage batches come on top, at most 1024)."""

DEFAULT_K = 8.0
"""``--tolerance calibrated`` without ``:K``: the difference may be up to 8x the reference's noise."""


@dataclass(frozen=True)
class VerifyOptions:
    """Every knob of a verification, with the defaults used everywhere.

    Attributes
    ----------
    seed, batches, batch_size
        Random inputs: ``batches`` seeded batches (more are added to cover embedding tables, see
        :mod:`~netmorph.verification.inputs`); a symbolic dim 0 is ``batch_size`` in even batches
        and ``batch_size + 1`` in odd ones.
    dims
        Symbolic dim name -> size, in every batch. Unbound symbolic dims other than dim 0 take
        two sizes (``DIM_SIZES``) in alternating batches.
    ranges
        Input name -> ``(lo, hi)``: floats uniform in ``[lo, hi]``, integers ``lo..hi`` inclusive
        (overrides the range read off the graph).
    rtol, atol, output_rtol, output_atol
        Global tolerances, and per output name overrides.
    tolerance
        ``"calibrated"`` (default) / ``"calibrated:K"``: an element fails iff ``|a-b| > K * noise``
        of that element (see :mod:`~netmorph.verification.calibrate`); or ``"fixed"`` (rtol/atol,
        Polygraphy's rule). Per-output ``output_atol``/``output_rtol`` still win for the outputs
        they name.
    allow_nan
        Matching NaN/Inf positions count as equal (default: any NaN/Inf fails).
    providers
        ONNX Runtime providers; ``None`` = CUDA when usable, else CPU.
    optimize_b
        Run ``b`` with ORT's graph optimisations only (default: as written, then optimised).
    check_optimized_b
        Also run ``b`` with ORT's default graph optimisations, the way users run it, and require
        both runs to pass (default ``True``).
    name_map
        Model ``a``'s input/output name -> model ``b``'s, for names that differ.
    verbose
        Let ONNX Runtime log warnings (default: silenced).
    """

    seed: int = 0
    batches: int = 2
    batch_size: int = 2
    dims: Mapping[str, int] = field(default_factory=dict)
    ranges: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    rtol: float = 1e-4
    atol: float = 1e-5
    output_rtol: Mapping[str, float] = field(default_factory=dict)
    output_atol: Mapping[str, float] = field(default_factory=dict)
    tolerance: str = "calibrated"
    allow_nan: bool = False
    providers: Sequence[Any] | None = None
    optimize_b: bool = False
    check_optimized_b: bool = True
    name_map: Mapping[str, str] = field(default_factory=dict)
    verbose: bool = False

    def __post_init__(self) -> None:
        for name, high in (("batches", MAX_BATCHES), ("batch_size", MAX_BATCH)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise OptionsError(f"{name} must be a positive integer, got {v!r}")
            if v > high:
                raise OptionsError(f"{name} must be <= {high:,} (documented limit), got {v:,}")
        for name in ("rtol", "atol"):
            _check_tol(name, getattr(self, name))
        for kind in ("output_rtol", "output_atol"):
            for k, v in getattr(self, kind).items():
                _check_tol(f"{kind[7:]} of {k!r}", v)
        for k, v in self.dims.items():
            if isinstance(v, bool) or not isinstance(v, int) or v < 1 or v > MAX_BATCH:
                raise OptionsError(f"dim {k!r} must be a positive integer size <= {MAX_BATCH:,}, got {v!r}")
        for k, (lo, hi) in self.ranges.items():
            if not (math.isfinite(lo) and math.isfinite(hi)) or lo > hi:
                raise OptionsError(f"range of {k!r} must be finite with LO <= HI, got {lo}:{hi}")
        parse_tolerance_mode(self.tolerance)  # raises on a malformed mode

    @property
    def calibration_k(self) -> float | None:
        """``K`` of ``calibrated[:K]``, or ``None`` for fixed tolerances."""
        return parse_tolerance_mode(self.tolerance)

    def replace(self, **changes: Any) -> VerifyOptions:
        """A copy with ``changes``; ``None`` values mean "keep the policy's value"."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (providers by name), as recorded in every report's ``options``."""
        d: dict[str, Any] = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        for k in ("dims", "output_rtol", "output_atol", "name_map"):
            d[k] = dict(d[k])
        d["ranges"] = {k: list(v) for k, v in self.ranges.items()}
        d["providers"] = None if self.providers is None else [
            p if isinstance(p, str) else p[0] for p in self.providers
        ]
        return d


def _check_tol(name: str, v: Any) -> None:
    if isinstance(v, bool) or not isinstance(v, int | float) or math.isnan(v) or v < 0:
        raise OptionsError(f"{name} must be a non-negative number, got {v!r}")


def parse_tolerance_mode(text: str) -> float | None:
    """``"fixed"`` -> ``None``; ``"calibrated"`` -> ``DEFAULT_K``; ``"calibrated:8"`` -> ``8.0``."""
    t = str(text).strip().lower()
    if t == "fixed":
        return None
    if t == "calibrated":
        return DEFAULT_K
    if t.startswith("calibrated:"):
        try:
            k = float(t.split(":", 1)[1])
        except ValueError:
            k = float("nan")
        if math.isfinite(k) and k > 0:
            return k
    raise OptionsError(f"tolerance must be 'fixed', 'calibrated' or 'calibrated:K' with K > 0, got {text!r}")


def _pairs(items: Iterable[str], what: str) -> list[tuple[str, str]]:
    out = []
    for item in items:
        name, sep, value = str(item).rpartition("=")
        if not sep or not name or not value:
            raise OptionsError(f"{what} must be NAME=VALUE, got {item!r}")
        out.append((name, value))
    return out


def parse_dims(items: Iterable[str]) -> dict[str, int]:
    """``["seq=7", "N=3"]`` -> ``{"seq": 7, "N": 3}``."""
    out = {}
    for name, value in _pairs(items, "--dim"):
        try:
            size = int(value)
        except ValueError:
            size = 0
        if size < 1:
            raise OptionsError(f"--dim {name}={value}: the size must be a positive integer")
        out[name] = size
    return out


def parse_ranges(items: Iterable[str]) -> dict[str, tuple[float, float]]:
    """``["ids=0:99", "x=-3:3"]`` -> ``{"ids": (0.0, 99.0), "x": (-3.0, 3.0)}``."""
    out = {}
    for name, value in _pairs(items, "--range"):
        lo, sep, hi = value.partition(":")
        try:
            r = (float(lo), float(hi))
        except ValueError:
            sep = ""
        if not sep or not all(math.isfinite(x) for x in r) or r[0] > r[1]:
            raise OptionsError(f"--range {name}={value}: expected LO:HI with finite LO <= HI")
        out[name] = r
    return out


def parse_tolerances(items: Iterable[str], flag: str) -> tuple[float | None, dict[str, float]]:
    """``--atol`` values: a bare number is the global one, ``NAME=V`` one output's."""
    glob, per = None, {}
    for item in items:
        name, sep, value = str(item).rpartition("=")
        try:
            v = float(value)
        except ValueError:
            v = float("nan")
        if math.isnan(v) or v < 0 or (sep and not name):
            raise OptionsError(f"{flag} {item}: expected a non-negative number or NAME=NUMBER")
        if sep:
            per[name] = v
        else:
            glob = v
    return glob, per


def parse_map(items: Iterable[str]) -> dict[str, str]:
    """``["input=x"]`` -> ``{"input": "x"}`` (model a's name -> model b's)."""
    out = {}
    for a, b in _pairs(items, "--map"):
        if a in out:
            raise OptionsError(f"--map {a}=…: {a!r} is mapped twice")
        out[a] = b
    if len(set(out.values())) != len(out):
        raise OptionsError("--map: two names of model a map to the same name of model b")
    return out


def parse_providers(text: str | None) -> list[str] | None:
    """``"CUDAExecutionProvider,CPUExecutionProvider"`` -> a list (``None``/empty: the default)."""
    if not text:
        return None
    names = [p.strip() for p in text.split(",") if p.strip()]
    return names or None
