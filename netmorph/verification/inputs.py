"""The inputs both models are run on: seeded random batches, or the user's arrays / ``.npz`` files.

Random batches are made to reach the function:

* **integer inputs** take the valid range the graph gives them (:mod:`.ranges`: ``Gather`` /
  embedding-table rows, ``OneHot`` depth, comparisons with constants), else ``0..3``; ``--range``
  overrides. When the range has at most ``COVER_ROWS`` values, **every value occurs at least
  once** across the batches (extra batches are added when the requested ones are too small),
  so a change to any one embedding row shows; larger tables are sampled uniformly.
* **float inputs** are N(0, 1), or uniform in ``--range LO:HI``; **bool inputs** fair coins.
* **shapes**: every symbolic/unknown dim takes two sizes in alternate batches, unless
  ``--dim NAME=SIZE`` binds it: dim 0 is ``batch_size`` in even batches and ``batch_size + 1`` in
  odd ones (so a child that only runs at one batch size fails); every other one takes
  ``DIM_SIZES[k % 2]`` in batch ``k`` (8, then 1), the same size for every dim of that batch so
  inputs sharing a length agree. With two or more batches each such dim is exercised at two
  sizes. Where the reference cannot run at these sizes, :func:`size_candidates` gives the others
  tried (its limit, not the candidate's).
"""

from __future__ import annotations

import math
import os
import re
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from ..ir import TensorType
from .errors import InputsError, OptionsError
from .interface import Interface
from .limits import MAX_COVER_BATCHES, max_generated_input_bytes, max_input_bytes
from .models import ModelSource, load_model
from .options import VerifyOptions
from .ranges import IntRange, infer_int_ranges

Batch = dict[str, np.ndarray]
InputsSpec = None | Mapping[str, np.ndarray] | Sequence[Mapping[str, np.ndarray]] | str | os.PathLike

SMALL_INT_HIGH = 4
"""Integer inputs the graph does not bound are drawn uniformly from ``0 .. SMALL_INT_HIGH - 1``."""

COVER_ROWS = 1024
"""Integer ranges up to this many values are covered entirely across the batches."""

DIM_SIZES = (8, 1)
"""Sizes of unbound symbolic dims (other than dim 0) in even / odd batches."""

FALLBACK_DIM_SIZES = ((32, 16), (64, 32), (224, 160))
"""Sizes of the other symbolic dims tried, in order, when the reference fails at ``DIM_SIZES``
(an image model whose strides need a larger side)."""


@dataclass(frozen=True)
class InputPlan:
    """How the random batches are made: per input its range, per batch its dim sizes."""

    ranges: dict[str, IntRange | tuple[float, float]]
    batch_dims: list[dict[str, int]]
    coverage_batches: int
    note: str = ""
    capped: frozenset[str] = frozenset()

    def to_dict(self) -> dict[str, Any]:
        r: dict[str, Any] = {}
        for n, v in self.ranges.items():
            if isinstance(v, IntRange):
                covered = v.size <= COVER_ROWS and n not in self.capped
                r[n] = {"lo": v.lo, "hi": v.hi, "source": v.source, "covered": covered}
            else:
                r[n] = {"lo": v[0], "hi": v[1], "source": "--range"}
        d = {"ranges": r, "batch_dims": self.batch_dims, "coverage_batches": self.coverage_batches}
        if self.note:
            d["note"] = self.note
        return d


def _dtype(name: str, t: TensorType | None) -> np.dtype:
    if t is None:
        raise InputsError(f"input {name!r} is not a tensor; give inputs explicitly (--inputs X.npz)")
    try:
        dtype = t.dtype
    except (KeyError, TypeError, ValueError):
        dtype = None
    if dtype is None or dtype == np.dtype(object) or dtype.kind not in "fiub":
        raise InputsError(
            f"input {name!r} has element type {t}, for which no random values are made; "
            "give inputs explicitly (--inputs X.npz)"
        )
    return dtype


def symbolic_dims(iface: Interface) -> tuple[set[str], set[str]]:
    """Names of the symbolic dims at dim 0 (batch) and elsewhere, over all inputs."""
    batch, other = set(), set()
    for t in iface.inputs.values():
        for i, d in enumerate((t.shape or ()) if t is not None else ()):
            if isinstance(d, str) and d:
                (batch if i == 0 else other).add(d)
    return batch, other - batch


def batch_shape(name: str, t: TensorType | None, batch_size: int, dims: Mapping[str, int] | None = None,
                other: int = DIM_SIZES[0]) -> tuple[int, ...]:
    """The concrete shape of input ``name`` in one batch.

    A fixed dim stays; a symbolic dim bound in ``dims`` takes that size; otherwise dim 0
    becomes ``batch_size`` and any other symbolic/unknown dim ``other``.
    """
    if t is None:
        raise InputsError(f"input {name!r} is not a tensor; give inputs explicitly (--inputs X.npz)")
    if t.shape is None:
        raise InputsError(f"input {name!r} has an unknown rank; give inputs explicitly (--inputs X.npz)")
    dims = dims or {}
    shape = []
    for i, d in enumerate(t.shape):
        if isinstance(d, int):
            shape.append(d)
        elif isinstance(d, str) and d in dims:
            shape.append(dims[d])
        else:
            shape.append(dims.get("?0", batch_size) if i == 0 else dims.get("?", other))
    return tuple(shape)


def size_candidates(iface: Interface, opts: VerifyOptions) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """``(dim 0 sizes, other dims' sizes)`` to try in order: the default first, then (where the
    reference fails there) one batch size, and larger sizes for the other symbolic dims."""
    batch_names, other_names = symbolic_dims(iface)
    bs = opts.batch_size
    free0 = any(t is not None and t.shape and not isinstance(t.shape[0], int) and t.shape[0] not in opts.dims
                for t in iface.inputs.values())
    free = bool(other_names - set(opts.dims)) or any(
        not isinstance(d, int | str) or d == ""
        for t in iface.inputs.values() if t and t.shape for d in t.shape[1:])
    zeros = [(bs, bs + 1), (bs, bs)] if free0 else [(bs, bs)]
    others = [DIM_SIZES, *FALLBACK_DIM_SIZES] if free else [DIM_SIZES]
    return [(z, o) for o in others for z in zeros]


def plan_inputs(model: onnx.ModelProto, iface: Interface, opts: VerifyOptions,
                sizes: tuple[tuple[int, int], tuple[int, int]] | None = None) -> InputPlan:
    """Ranges for every input and the dim sizes of each of ``opts.batches`` batches.

    ``sizes``: ``(dim 0 sizes, other dims' sizes)`` in even / odd batches (default: the first of
    :func:`size_candidates`). Raises :class:`OptionsError` for a ``--dim``/``--range`` naming
    nothing in the model.
    """
    zero, other = sizes or ((opts.batch_size, opts.batch_size + 1), DIM_SIZES)
    batch_names, other_names = symbolic_dims(iface)
    unnamed = any(not isinstance(d, int | str) or d == "" for t in iface.inputs.values() if t and t.shape
                  for d in t.shape[1:])
    unknown = sorted(set(opts.dims) - batch_names - other_names)
    if unknown:
        have = ", ".join(sorted(batch_names | other_names)) or "none"
        raise OptionsError(f"--dim {unknown[0]}: the inputs have no symbolic dim of that name "
                           f"(symbolic dims: {have})")
    bad = sorted(set(opts.ranges) - set(iface.inputs))
    if bad:
        raise OptionsError(f"--range {bad[0]}: no model input of that name "
                           f"(inputs: {', '.join(map(repr, iface.inputs))})")
    ints = [n for n, t in iface.inputs.items() if _dtype(n, t).kind in "iu"]
    inferred = infer_int_ranges(model, ints)
    ranges: dict[str, IntRange | tuple[float, float]] = {}
    for n, t in iface.inputs.items():
        kind = _dtype(n, t).kind
        if n in opts.ranges:
            lo, hi = opts.ranges[n]
            if kind == "b":
                raise OptionsError(f"--range {n}: input {n!r} is bool (random coins), a range does not apply")
            ranges[n] = IntRange(math.ceil(lo), math.floor(hi), "--range") if kind in "iu" else (lo, hi)
            if kind in "iu" and ranges[n].lo > ranges[n].hi:
                raise OptionsError(f"--range {n}={lo:g}:{hi:g} holds no integer")
        elif kind in "iu":
            ranges[n] = inferred.get(n, IntRange(0, SMALL_INT_HIGH - 1, "default"))
    unnamed0 = any(t is not None and t.shape and not isinstance(t.shape[0], int) and not t.shape[0]
                   for t in iface.inputs.values())
    sizes = [{d: opts.dims.get(d, zero[k % 2]) for d in batch_names}
             | {d: opts.dims.get(d, other[k % 2]) for d in other_names}
             | ({"?": other[k % 2]} if unnamed else {})
             | ({"?0": zero[k % 2]} if unnamed0 else {}) for k in range(opts.batches)]
    # coverage: extra batches (at the large size) until every covered range fits, at most
    # MAX_COVER_BATCHES (a larger table with tiny batches is sampled, and says so)
    extra, capped = 0, set()
    for n, r in ranges.items():
        if isinstance(r, IntRange) and r.size <= COVER_ROWS:
            per = [int(np.prod(batch_shape(n, iface.inputs[n], opts.batch_size, sizes[k])))
                   for k in range(opts.batches)]
            have, big = sum(per), max(per[0], 1)
            need = math.ceil(max(r.size - have, 0) / big)
            if need > MAX_COVER_BATCHES:
                capped.add(n)
            extra = max(extra, min(need, MAX_COVER_BATCHES))
    sizes += [sizes[0]] * extra
    return InputPlan(ranges, sizes, extra, capped=frozenset(capped))


def _values(r: IntRange | tuple[float, float] | None, dtype: np.dtype, total: int,
            rng: np.random.Generator) -> np.ndarray:
    """``total`` values for one input over all batches, flat."""
    if dtype.kind == "b":
        return rng.random(total) < 0.5
    if dtype.kind == "f":
        if r is None:
            return rng.standard_normal(total).astype(dtype)
        return rng.uniform(r[0], r[1], total).astype(dtype)
    info = np.iinfo(dtype)
    lo, hi = max(r.lo, int(info.min)), min(r.hi, int(info.max))
    vals = rng.integers(lo, hi, size=total, endpoint=True)
    if hi - lo + 1 <= COVER_ROWS:
        every = rng.permutation(np.arange(lo, hi + 1))[:total]
        vals[: every.size] = every
        vals = rng.permutation(vals)
    return vals.astype(dtype)


def random_batches(iface: Interface, opts: VerifyOptions, model: onnx.ModelProto | None = None,
                   sizes: tuple[tuple[int, int], tuple[int, int]] | None = None
                   ) -> tuple[list[Batch], InputPlan]:
    """Seeded random feeds for ``iface`` following ``opts`` (deterministic for a given seed)."""
    plan = plan_inputs(model if model is not None else onnx.ModelProto(), iface, opts, sizes)
    rng = np.random.default_rng(opts.seed)
    shapes = [{n: batch_shape(n, t, opts.batch_size, dims) for n, t in iface.inputs.items()}
              for dims in plan.batch_dims]
    feeds: list[Batch] = [{} for _ in shapes]
    limit = max_generated_input_bytes()
    total = sum(math.prod(s[n]) * _dtype(n, t).itemsize for s in shapes for n, t in iface.inputs.items())
    if total > limit:
        biggest = max(iface.inputs, key=lambda n: math.prod(shapes[0][n]))
        raise InputsError(f"random inputs would take {total:,} bytes over {len(shapes)} batch(es) (input "
                          f"{biggest!r} {list(shapes[0][biggest])}), above the verification limit of "
                          f"{limit:,} (NETMORPH_MAX_VERIFY_INPUT_BYTES)")
    for n, t in iface.inputs.items():
        counts = [int(np.prod(s[n])) for s in shapes]
        flat = _values(plan.ranges.get(n), _dtype(n, t), sum(counts), rng)
        for k, (s, lo) in enumerate(zip(shapes, np.cumsum([0, *counts[:-1]]), strict=True)):
            feeds[k][n] = flat[lo: lo + counts[k]].reshape(s[n])
    return feeds, plan


def make_inputs(
    model: ModelSource, *, seed: int = 0, batches: int = 2, batch_size: int = 2,
    dims: Mapping[str, int] | None = None, ranges: Mapping[str, tuple[float, float]] | None = None,
) -> list[Batch]:
    """Seeded random input batches for ``model`` (a Graph, ModelProto or path).

    The same batches :func:`verify_models` runs with these options (see the module docstring:
    integer ranges from the graph, every embedding row covered, symbolic dims at two sizes).
    Returns a list of ``{input name: array}``; it may be longer than ``batches`` (coverage).
    """
    proto = load_model(model, "a").proto
    opts = VerifyOptions(seed=seed, batches=batches, batch_size=batch_size, dims=dict(dims or {}),
                         ranges=dict(ranges or {}))
    return random_batches(Interface.of(proto), opts, proto)[0]


BATCH_KEY = re.compile(r"^batch(\d+)/(.+)$")
"""Keys of a several-batch ``.npz``: ``batch0/input_ids``, ``batch0/attention_mask``, ``batch1/…``."""


def load_npz(path: str | os.PathLike) -> Batch:
    """One batch from a ``.npz`` file (keys = input names); pickled objects are refused."""
    batches = read_batches(path)
    if len(batches) != 1:
        raise InputsError(f"{path}: holds {len(batches)} batches; use read_batches")
    return batches[0]


def _read_npz(p: Path) -> list[Batch]:
    from ..data.npz import check_declared_sizes
    from ..errors import NetmorphError

    try:
        with zipfile.ZipFile(p) as zf:
            names = tuple(i.filename.removesuffix(".npy") for i in zf.infolist())
        check_declared_sizes(p, names, limit=max_input_bytes(), limit_name="NETMORPH_MAX_VERIFY_INPUT_BYTES")
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise InputsError(f"{p}: not a readable .npz file ({msg})") from None
    except NetmorphError as e:
        raise InputsError(str(e)) from None
    try:
        with np.load(p, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise InputsError(f"{p}: not a readable .npz file ({msg})") from None
    if not arrays:
        raise InputsError(f"{p}: holds no arrays")
    keyed = {k: BATCH_KEY.match(k) for k in arrays}
    if not any(keyed.values()):
        return [arrays]
    if not all(keyed.values()):
        plain = next(k for k, m in keyed.items() if m is None)
        raise InputsError(f"{p}: mixes batchK/NAME keys with the plain key {plain!r}")
    out: dict[int, Batch] = {}
    for k, m in keyed.items():
        out.setdefault(int(m.group(1)), {})[m.group(2)] = arrays[k]
    return [out[i] for i in sorted(out)]


def read_batches(path: str | os.PathLike) -> list[Batch]:
    """The batches in a ``.npz`` file or a folder of them (sorted by file name).

    A file's keys are either input names (one batch) or ``batchK/NAME`` (batches ``K`` in
    increasing order). Pickled objects are refused.
    """
    p = Path(path)
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if f.suffix == ".npz" and f.is_file())
        if not files:
            raise InputsError(f"{p}: folder holds no .npz files")
        return [b for f in files for b in _read_npz(f)]
    if not p.is_file():
        raise InputsError(f"{p}: no such inputs file")
    return _read_npz(p)


def _check_batch(batch: Mapping[str, np.ndarray], iface: Interface, where: str) -> Batch:
    missing = [n for n in iface.inputs if n not in batch]
    extra = [n for n in batch if n not in iface.inputs]
    if missing:
        raise InputsError(f"{where}: no array for model input(s) {', '.join(map(repr, missing))}")
    if extra:
        raise InputsError(
            f"{where}: array(s) {', '.join(map(repr, extra))} match no model input "
            f"(inputs: {', '.join(map(repr, iface.inputs))})"
        )
    out: Batch = {}
    for name, t in iface.inputs.items():
        arr = np.asarray(batch[name])
        if arr.size == 0:
            raise InputsError(f"{where}: input {name!r} has shape {tuple(arr.shape)}, no elements: "
                              "nothing would be compared")
        if t is not None and t.elem_type:
            want = t.dtype
            if arr.dtype != want:
                same_kind = arr.dtype.kind == want.kind or (arr.dtype.kind in "iu" and want.kind in "iu")
                if not same_kind:
                    raise InputsError(f"{where}: input {name!r} is {arr.dtype}, the model wants {want}")
                arr = arr.astype(want)
            if t.shape is not None:
                if arr.ndim != len(t.shape) or any(
                    isinstance(d, int) and d != s for d, s in zip(t.shape, arr.shape, strict=True)
                ):
                    raise InputsError(
                        f"{where}: input {name!r} has shape {tuple(arr.shape)}, the model wants {t}"
                    )
        out[name] = np.ascontiguousarray(arr)
    return out


def resolve_inputs(
    inputs: InputsSpec, iface: Interface, opts: VerifyOptions, model: onnx.ModelProto | None = None
) -> tuple[list[Batch], str, InputPlan | None]:
    """The batches to run, a word for where they came from (``random``/``npz``/``given``), and
    the plan of random ones (``None`` for given inputs)."""
    if inputs is None:
        feeds, plan = random_batches(iface, opts, model)
        return feeds, "random", plan
    if opts.dims or opts.ranges:
        raise OptionsError("--dim and --range shape the random inputs; they do not apply with --inputs")
    if isinstance(inputs, str | os.PathLike):
        batches = read_batches(inputs)
        many = len(batches) > 1
        return [_check_batch(b, iface, f"{inputs}" + (f" batch {i}" if many else ""))
                for i, b in enumerate(batches)], "npz", None
    if isinstance(inputs, Mapping):
        return [_check_batch(inputs, iface, "inputs")], "given", None
    if isinstance(inputs, Sequence) and inputs and all(isinstance(b, Mapping) for b in inputs):
        return [_check_batch(b, iface, f"inputs[{i}]") for i, b in enumerate(inputs)], "given", None
    raise InputsError(
        "inputs must be None, a dict name -> array, a non-empty list of such dicts, a .npz path or a folder"
    )
