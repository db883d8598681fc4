"""The inputs both models are run on: seeded random batches, or the user's arrays / ``.npz``."""

from __future__ import annotations

import os
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from ..ir import TensorType
from .errors import InputsError
from .interface import Interface
from .models import ModelSource, load_model

Batch = dict[str, np.ndarray]
InputsSpec = None | Mapping[str, np.ndarray] | Sequence[Mapping[str, np.ndarray]] | str | os.PathLike

SMALL_INT_HIGH = 4
"""Random integer inputs are drawn uniformly from ``0 .. SMALL_INT_HIGH - 1``."""


def batch_shape(name: str, t: TensorType | None, batch_size: int) -> tuple[int, ...]:
    """The concrete shape of input ``name``: dim 0 symbolic/unknown -> ``batch_size``.

    Any other symbolic or unknown dim (or an unknown rank) cannot be guessed and raises
    :class:`InputsError` asking for explicit inputs.
    """
    if t is None:
        raise InputsError(f"input {name!r} is not a tensor; give inputs explicitly (--inputs X.npz)")
    if t.shape is None:
        raise InputsError(f"input {name!r} has an unknown rank; give inputs explicitly (--inputs X.npz)")
    shape = []
    for i, d in enumerate(t.shape):
        if isinstance(d, int):
            shape.append(d)
        elif i == 0:
            shape.append(batch_size)
        else:
            what = f"symbolic ({d!r})" if d else "unknown"
            raise InputsError(
                f"input {name!r} ({t}): dim {i} is {what} and only dim 0 is taken as the batch; "
                "give inputs explicitly (--inputs X.npz)"
            )
    return tuple(shape)


def random_array(name: str, t: TensorType, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Float inputs ~ N(0, 1); integer inputs uniform in ``0 .. SMALL_INT_HIGH-1``; bool fair coins."""
    try:
        dtype = t.dtype
    except (KeyError, TypeError, ValueError):
        dtype = None
    if dtype is None or dtype == np.dtype(object) or dtype.kind not in "fiub":
        raise InputsError(
            f"input {name!r} has element type {t}, for which no random values are made; "
            "give inputs explicitly (--inputs X.npz)"
        )
    if dtype.kind == "f":
        return rng.standard_normal(shape).astype(dtype)
    if dtype.kind == "b":
        return rng.random(shape) < 0.5
    return rng.integers(0, SMALL_INT_HIGH, size=shape).astype(dtype)


def random_batches(iface: Interface, *, seed: int, batches: int, batch_size: int) -> list[Batch]:
    """``batches`` seeded random feeds for ``iface`` (deterministic for a given seed)."""
    if batches < 1:
        raise InputsError(f"batches must be at least 1, got {batches}")
    if batch_size < 1:
        raise InputsError(f"batch_size must be at least 1, got {batch_size}")
    rng = np.random.default_rng(seed)
    shapes = {n: batch_shape(n, t, batch_size) for n, t in iface.inputs.items()}
    return [
        {n: random_array(n, iface.inputs[n], shapes[n], rng) for n in iface.inputs} for _ in range(batches)
    ]


def make_inputs(
    model: ModelSource, *, seed: int = 0, batches: int = 2, batch_size: int = 2
) -> list[Batch]:
    """Seeded random input batches for ``model`` (a Graph, ModelProto or path).

    Shapes come from the model's input types; a symbolic/unknown dim 0 becomes
    ``batch_size``. Float inputs are standard normal, integer inputs small non-negative
    ints (``0..3``), bool inputs fair coins. Returns a list of ``{input name: array}``.
    """
    iface = Interface.of(load_model(model, "a").proto)
    return random_batches(iface, seed=seed, batches=batches, batch_size=batch_size)


def load_npz(path: str | os.PathLike) -> Batch:
    """One batch from a ``.npz`` file (keys = input names); pickled objects are refused."""
    p = Path(path)
    if not p.is_file():
        raise InputsError(f"{p}: no such inputs file")
    try:
        with np.load(p, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise InputsError(f"{p}: not a readable .npz file ({msg})") from None


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
    inputs: InputsSpec, iface: Interface, *, seed: int, batches: int, batch_size: int
) -> tuple[list[Batch], str]:
    """The batches to run and a word for where they came from (``random``/``npz``/``given``)."""
    if inputs is None:
        return random_batches(iface, seed=seed, batches=batches, batch_size=batch_size), "random"
    if isinstance(inputs, str | os.PathLike):
        return [_check_batch(load_npz(inputs), iface, str(inputs))], "npz"
    if isinstance(inputs, Mapping):
        return [_check_batch(inputs, iface, "inputs")], "given"
    if isinstance(inputs, Sequence) and inputs and all(isinstance(b, Mapping) for b in inputs):
        return [_check_batch(b, iface, f"inputs[{i}]") for i, b in enumerate(inputs)], "given"
    raise InputsError(
        "inputs must be None, a dict name -> array, a non-empty list of such dicts, or a .npz path"
    )
