"""Calibrated tolerance: how far the reference model disagrees with *itself*.

Fixed tolerances are wrong both ways: a real weight change can hide below ``atol 1e-5`` on a
shallow model, while float32 rounding through 50 layers exceeds it on a deep one. So the
reference ``a`` is evaluated again in ways that are equally right in exact arithmetic, on the
same inputs:

* ``optimised``: with ONNX Runtime's graph optimisations on (Conv+BN folding, fusions), which
  reorders the float arithmetic;
* ``ulp-weights``: with every float *weight* moved by one unit in the last place, in a seeded
  random direction, which is the rounding a re-export or a refold of the weights introduces
  (shape and scale constants, integer tensors and mask constants such as ``-inf`` or
  ``finfo.min`` stay: see :func:`perturbable`); skipped, with the reason, when ONNX Runtime
  cannot load the perturbed copy;
* ``float64``: the same graph in double precision (float32 tensors, constants and casts to
  float32 rewritten), where :func:`as_float64` can rewrite it and ONNX Runtime can run it — its
  CPU ``Conv`` has no float64 kernel, so CNNs are measured by the first two probes only (the
  report's ``calibration.skipped`` says why).

The noise is measured **per output element**, never from one scale for the whole output (a
single masked ``-1e9`` logit or one ``1e30`` element would otherwise lend its rounding to every
element): see :func:`element_noise`. Under ``calibrated:K`` an element fails iff
``|a - b| > K x noise`` of *that element*.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from .compare import chunks
from .errors import ModelRunError
from .limits import max_float64_probe_bytes
from .models import LoadedModel
from .session import default_providers, make_session, run_session

SHAPE_INPUTS = {
    "Reshape": (1,), "Expand": (1,), "Tile": (1,), "Slice": (1, 2, 3, 4), "Pad": (1, 2, 3),
    "Resize": (1, 2, 3), "Upsample": (1,), "ConstantOfShape": (0,), "Range": (0, 1, 2),
    "TopK": (1,), "OneHot": (1, 2), "Squeeze": (1,), "Unsqueeze": (1,), "ReduceSum": (1,),
    "ReduceMean": (1,), "ReduceMax": (1,), "ReduceMin": (1,), "Split": (1,), "CenterCropPad": (1,),
    "Clip": (1, 2), "Pow": (1,),
}
"""Inputs (by op and position) that carry shapes, scales, bounds or exponents, not weights: the
ulp probe never moves them (a Resize scale of 2.0 moved by one ulp changes the output size)."""


def _not_weights(graph: onnx.GraphProto) -> set[str]:
    names = set()
    for n in graph.node:
        for i in SHAPE_INPUTS.get(n.op_type, ()) if n.domain in ("", "ai.onnx") else ():
            if i < len(n.input) and n.input[i]:
                names.add(n.input[i])
    return names


def perturbable(w: np.ndarray) -> bool:
    """Whether the ulp probe moves ``w``: a non-empty float array whose values are all finite and
    below half the type's largest value (a tensor holding ``-inf`` or ``finfo.min`` is a mask)."""
    if w.dtype.kind != "f" or w.size == 0:
        return False
    with np.errstate(invalid="ignore"):
        return bool(np.all(np.abs(w) < np.finfo(w.dtype).max / 2))


def _nudged(w: np.ndarray, rng: np.random.Generator) -> np.ndarray | None:
    """``w`` with each element one ulp up or down (seeded): ``nextafter(w, ±inf)``, computed on the
    bit patterns (one step of the integer view away from or toward zero; a zero becomes the
    smallest subnormal of the drawn sign). The directions are the bits of ``rng.bytes`` (one bit
    per element; drawing them took 0.04 s for 30 M weights against 0.56 s for a float each)."""
    if not perturbable(w):
        return None
    shape = w.shape
    n = int(w.size)
    up = np.unpackbits(np.frombuffer(rng.bytes((n + 7) // 8), np.uint8), count=n).view(bool)
    ints = {2: np.int16, 4: np.int32, 8: np.int64}[w.dtype.itemsize]
    w = np.ascontiguousarray(w).reshape(-1)
    away = np.greater(w, 0)
    np.equal(up, away, out=away)  # up on a positive or down on a negative: the magnitude grows
    out = away.astype(ints)  # the one new array of w's size (every step below is in place)
    out *= 2
    out -= 1  # +1 (away from zero) or -1 (toward it)
    out += w.view(ints)
    zero = np.flatnonzero(np.equal(w, 0, out=away))  # away is spent: its buffer holds w == 0
    if zero.size:
        smallest_negative = np.iinfo(ints).min + 1  # sign bit and the last mantissa bit
        out[zero] = np.where(up[zero], ints(1), ints(smallest_negative))
    return out.view(w.dtype).reshape(shape)


_FLOATS = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE)


def _nudge(t: onnx.TensorProto, rng: np.random.Generator) -> onnx.TensorProto | None:
    if t.data_type not in _FLOATS:
        return None
    if t.data_location == onnx.TensorProto.EXTERNAL:
        return None
    moved = _nudged(numpy_helper.to_array(t), rng)
    return None if moved is None else numpy_helper.from_array(moved, t.name)


def ulp_perturbed(model: onnx.ModelProto, seed: int,
                  weights: Mapping[str, np.ndarray] | None = None) -> onnx.ModelProto:
    """A copy of ``model`` with every float weight one ulp up or down (seeded).

    Left as they are: tensors read as shapes, scales, bounds or exponents (:data:`SHAPE_INPUTS`),
    integer and bool tensors, and masks (:func:`perturbable`), so no value overflows.
    ``weights``: :func:`ulp_perturbed_weights` (the arrays of ``model``'s in-memory external
    tensors) -- use that function for such a model."""
    return ulp_perturbed_weights(model, seed, weights or {})[0]


def ulp_perturbed_weights(model: onnx.ModelProto, seed: int, weights: Mapping[str, np.ndarray]
                          ) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """:func:`ulp_perturbed` of a model whose tensors named in ``weights`` are in-memory external
    data: ``(the copy, its weights)``; the moved arrays are new, the others are shared. The seeded
    draws follow the initializers' order, so the copy equals the perturbed inline model's."""
    rng = np.random.default_rng(seed)
    m = onnx.ModelProto()
    m.CopyFrom(model)
    fixed = _not_weights(m.graph)
    out = dict(weights)
    for i, t in enumerate(m.graph.initializer):
        if t.name in fixed:
            continue
        if t.name in weights:
            if t.data_type in _FLOATS:
                moved = _nudged(weights[t.name], rng)
                if moved is not None:
                    out[t.name] = moved
            continue
        new = _nudge(t, rng)
        if new is not None:
            m.graph.initializer[i].CopyFrom(new)
    for n in m.graph.node:
        if n.op_type == "Constant" and n.output[0] not in fixed:
            for a in n.attribute:
                if a.name == "value" and a.type == onnx.AttributeProto.TENSOR:
                    new = _nudge(a.t, rng)
                    if new is not None:
                        a.t.CopyFrom(new)
    return m, out


CPU_NO_FLOAT64 = frozenset({"Conv", "ConvTranspose", "Erf"})
"""Ops seen without a float64 CPU kernel in onnxruntime 1.32: the float64 probe is not even tried
(rewriting a ResNet-50 to float64 only to be refused cost seconds). An op missing here is still
caught when the session is refused."""


def as_float64(model: onnx.ModelProto) -> onnx.ModelProto | None:
    """``model`` computed in float64: float32 initializers, constants, inputs, outputs, value infos
    and ``Cast(to=FLOAT)`` become double. ``None`` when some node carries another element-type
    attribute (``ConstantOfShape``, ``Random*``, ``Cast`` to float16 …) or has a subgraph, where
    a mechanical rewrite could change the function."""
    got = as_float64_weights(model, {})
    return None if got is None else got[0]


def as_float64_weights(model: onnx.ModelProto, weights: Mapping[str, np.ndarray]
                       ) -> tuple[onnx.ModelProto, dict[str, np.ndarray]] | None:
    """:func:`as_float64` of a model whose tensors named in ``weights`` are in-memory external
    data: ``(the copy, its weights)``, the float32 arrays widened (new arrays), or ``None``."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    for n in g.node:
        for a in n.attribute:
            if a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS):
                return None
            if n.op_type == "Cast" and a.name == "to":
                if a.i == onnx.TensorProto.FLOAT:
                    a.i = onnx.TensorProto.DOUBLE
                elif a.i in (onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16):
                    return None
            elif a.name in ("dtype", "to", "value_float", "value_floats") or n.op_type == "ConstantOfShape":
                return None
            elif a.type == onnx.AttributeProto.TENSOR and a.t.data_type == onnx.TensorProto.FLOAT:
                a.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(a.t).astype(np.float64), a.t.name))
    out = dict(weights)
    for i, t in enumerate(g.initializer):
        if t.data_type == onnx.TensorProto.FLOAT:
            if t.name in weights:
                wide = np.asarray(weights[t.name], np.float64)
                out[t.name] = wide
                g.initializer[i].data_type = onnx.TensorProto.DOUBLE
                for e in g.initializer[i].external_data:
                    if e.key == "length":
                        e.value = str(wide.nbytes)
                continue
            if t.data_location == onnx.TensorProto.EXTERNAL:
                return None
            wide = numpy_helper.to_array(t).astype(np.float64)
            g.initializer[i].CopyFrom(numpy_helper.from_array(wide, t.name))
    for vi in [*g.input, *g.output, *g.value_info]:
        tt = vi.type.tensor_type
        if vi.type.WhichOneof("value") == "tensor_type" and tt.elem_type == onnx.TensorProto.FLOAT:
            tt.elem_type = onnx.TensorProto.DOUBLE
    return m, out


CORE_SPAN = 1e4
"""Elements more than this many times the median magnitude of their output are *extreme* (a
masked ``-1e9`` logit, one ``1e30`` element): their noise is their own, never lent to others."""


def _median(values: np.ndarray) -> float:
    """``np.median`` of a 1-d array, partitioning ``values`` in place (it is a scratch copy)."""
    n = values.size
    kth = [n // 2 - 1, n // 2] if n % 2 == 0 else [n // 2]
    values.partition(kth)
    return float(np.mean(values[kth].astype(np.float64)))


def _noise_dtype(ref: np.ndarray) -> np.dtype:
    """The type an output's per-element noise is held in: float32 for a float32 output (half the
    memory of float64: 0.13 GB less on GPT-2 small's logits), else float64."""
    return np.dtype(np.float32) if ref.dtype == np.float32 else np.dtype(np.float64)


def element_noise(ref: Sequence[np.ndarray], diffs: Mapping[int, np.ndarray],
                  source: Sequence[int] | None = None) -> tuple[list[np.ndarray], float]:
    """Per-element noise of one float output over its batches: ``(per batch array, floor)``.

    ``ref[k]``: the reference output of batch ``k``; ``diffs[k]``: the largest ``|a - probe|`` per
    element over the probes (0 where either side is not finite), for the batches the probes ran
    on; ``source[k]``: the probed batch whose pooled noise batch ``k`` takes (the same shape but
    dim 0; default: ``k`` itself). An element's noise is the largest of:

    * its own difference (probed batches), and ``eps x |a|`` (float32 rounding of its own value);
    * for the non-extreme elements (``|a| <= CORE_SPAN x`` the median non-zero ``|a|``), the largest
      difference at the same position over dim 0 (the batch rows share every weight; outputs of
      rank 2 or more), so one lucky probe does not make one element strict;
    * the **floor**: the median of those pooled values over the non-extreme elements, and ``eps x``
      the largest non-extreme ``|a|`` — a single extreme element moves neither.

    The result of batch ``k`` broadcasts against ``ref[k]``: float32 for a float32 output (each
    value rounded up from its float64 one), float64 otherwise. The work is done in blocks
    (:func:`~netmorph.verification.compare.chunks`): besides the result, it holds the non-zero
    ``|a|`` once (in the output's own type, for their median), which elements are non-extreme
    (a byte each) and the pooled differences.
    """
    source = list(range(len(ref))) if source is None else list(source)
    eps = float(np.finfo(ref[0].dtype).eps) if ref else float(np.finfo(np.float32).eps)
    shapes = [np.shape(r) for r in ref]
    ref = [np.asarray(r).reshape(-1) if np.ndim(r) == 0 else np.asarray(r) for r in ref]  # 0-d: (1,)
    diffs = {k: np.asarray(d).reshape(-1) if np.ndim(d) == 0 else d for k, d in diffs.items()}
    nonzero = []
    for r in ref:  # the finite non-zero |a| (abs is exact in the output's own type)
        for b in chunks(r.shape):
            m = np.abs(r[b])
            nonzero.append(m[np.isfinite(m) & (m > 0)].ravel())
    flat = np.concatenate(nonzero) if nonzero else np.zeros(0)
    del nonzero
    limit = CORE_SPAN * _median(flat) if flat.size else 0.0
    del flat

    def abs64(block_values: np.ndarray) -> np.ndarray:
        return np.abs(block_values.astype(np.float64))

    cores, core_max = [], 0.0  # per batch: the non-extreme finite elements (one byte each)
    for r in ref:
        core = np.empty(r.shape, bool)
        for b in chunks(r.shape):
            m = abs64(r[b])
            with np.errstate(invalid="ignore"):
                core[b] = c = np.isfinite(m) & (m <= limit)
            core_max = max(core_max, float(m[c].max(initial=0.0)))
        cores.append(core)
    pooled: dict[int, np.ndarray] = {}
    vals = []
    for k, d in diffs.items():
        core = cores[k]
        if d.ndim >= 2:
            p = np.zeros((1, *d.shape[1:]))
            for row in range(d.shape[0]):
                for b in chunks(d.shape[1:]):
                    at = (row, *b)
                    np.maximum(p[(0, *b)], np.where(core[at], d[at], 0.0), out=p[(0, *b)])
        else:
            p = np.where(core, d, 0.0)
        pooled[k] = p
        for b in chunks(d.shape):
            vals.append(np.broadcast_to(p, d.shape)[b][core[b]].ravel())
    vals = np.concatenate(vals) if vals else np.zeros(0)
    floor = max(_median(vals) if vals.size else 0.0, eps * core_max)
    del vals
    out = []
    for k, r in enumerate(ref):
        p = pooled.get(source[k])
        pool = p is not None and p.shape[1:] == r.shape[1:] and (p.shape[0] == 1 or p.shape == r.shape)
        res = np.empty(r.shape, _noise_dtype(r))
        for b in chunks(r.shape):
            m = abs64(r[b])
            own = np.where(np.isfinite(m), m, 0.0)
            own *= eps
            if k in diffs:
                np.maximum(own, diffs[k][b], out=own)
            if pool:
                np.maximum(own, np.where(cores[k][b], np.broadcast_to(p, r.shape)[b], 0.0), out=own)
            np.maximum(own, floor, out=own)
            with np.errstate(over="ignore"):  # a difference beyond float32's range: inf, never fails
                res[b] = own
            if res.dtype != own.dtype:  # rounded up, never below the float64 value: never stricter
                lo = res[b] < own
                res[b][lo] = np.nextafter(res[b][lo], np.inf)
        out.append(res.reshape(shapes[k]))
    return out, floor


def probe_batches(feeds: Sequence[dict[str, np.ndarray]]) -> list[int]:
    """For each batch, the first batch with the same input shapes but dim 0: the probes run on those
    only (coverage batches and the second batch size add no new shape)."""
    first: dict[tuple, int] = {}
    out = []
    for k, feed in enumerate(feeds):
        sig = tuple((n, v.dtype.str, v.shape[1:]) for n, v in sorted(feed.items()))
        out.append(first.setdefault(sig, k))
    return out


@dataclass
class Noise:
    """What :func:`measure_noise` found: per float output, the noise of each element per batch
    (``per_batch[name][k]`` broadcasts against batch ``k``'s output) and its floor; ``info``:
    per probe the largest difference it made per output, the floors, and the skipped probes."""

    per_batch: dict[str, list[np.ndarray]]
    floor: dict[str, float]
    info: dict[str, Any]

    def summary(self, name: str) -> float | None:
        """One number for the report: the output's noise floor (``None``: not calibrated)."""
        return self.floor.get(name)


def _float32_bytes(a: LoadedModel) -> int:
    """Bytes of ``a``'s float32 initializers (inline or handed over in memory)."""
    total = 0
    for t in a.proto.graph.initializer:
        if t.data_type == onnx.TensorProto.FLOAT:
            n = 1
            for d in t.dims:
                n *= d
            total += 4 * n
    return total


def _probe_models(a: LoadedModel, ref: dict[str, list[np.ndarray]], floats: list[str], seed: int,
                  cpu_only: bool, skipped: dict[str, str]):
    """``(probe name, model or None for a itself, optimise)`` in the order they run; the models
    are made one at a time (a copy lives only while its probe runs)."""
    yield "optimised", None, True
    def moved():
        m, w = ulp_perturbed_weights(a.proto, seed, a.weights or {})
        return LoadedModel(m, a.label + " (ulp-perturbed)", weights=w or None)

    yield "ulp-weights", moved, False
    no_kernel = sorted({n.op_type for n in a.proto.graph.node} & CPU_NO_FLOAT64) if cpu_only else []
    if no_kernel:
        skipped["float64"] = f"ONNX Runtime's CPU provider has no float64 {', '.join(no_kernel)}"
    elif any(np.asarray(ref[n][0]).dtype != np.float32 for n in floats):
        skipped["float64"] = "the outputs are not float32"
    elif 2 * _float32_bytes(a) > max_float64_probe_bytes():
        wide = 2 * _float32_bytes(a) / 2**30
        skipped["float64"] = (f"its float64 copy of the weights would take {wide:.1f} "
                              f"GiB, above the limit of {max_float64_probe_bytes() / 2**30:.1f} GiB "
                              "(NETMORPH_MAX_FLOAT64_PROBE_BYTES)")
    else:
        def wide():
            got = as_float64_weights(a.proto, a.weights or {})
            if got is None:
                skipped["float64"] = "the graph cannot be rewritten to float64 mechanically"
                return None
            return LoadedModel(got[0], a.label + " (float64)", weights=got[1] or None)
        yield "float64", wide, False


def _accumulate(acc: np.ndarray, x: np.ndarray, y: np.ndarray) -> float:
    """``acc = max(acc, |x - y|)`` element-wise (``|x - y|`` in float64, 0 where either is not
    finite), in blocks (:func:`~netmorph.verification.compare.chunks`); returns the largest
    ``|x - y|`` (0.0 for no elements)."""
    x, y = np.asarray(x), np.asarray(y)
    if acc.ndim == 0:
        acc, x, y = acc.reshape(-1), x.reshape(-1), y.reshape(-1)
    top = 0.0
    for b in chunks(acc.shape):
        xb, yb = x[b].astype(np.float64), np.asarray(y[b], np.float64)
        with np.errstate(invalid="ignore", over="ignore"):
            d = np.subtract(xb, yb, out=xb)
            np.abs(d, out=d)
            d[~(np.isfinite(yb) & np.isfinite(x[b]))] = 0.0
        if d.size:
            top = max(top, float(d.max()))
        np.maximum(acc[b], d, out=acc[b])
    return top


def measure_noise(
    a: LoadedModel, feeds: Sequence[dict[str, np.ndarray]], names: Sequence[str],
    ref: dict[str, list[np.ndarray]], *, seed: int = 0, providers: Sequence[Any] | None = None,
    verbose: bool = False,
) -> Noise:
    """The per-element noise of each float output of ``a`` (``ref``: its unoptimised outputs per batch).

    The probes run one after another; each session (and each perturbed or float64 copy) is
    released before the next is made. A probe ONNX Runtime cannot load is skipped and recorded.
    They run on one batch per distinct input shape (but dim 0, :func:`probe_batches`); the other
    batches take that batch's noise per position.
    """
    floats = [n for n in names if ref[n] and np.asarray(ref[n][0]).dtype.kind == "f"]
    skipped: dict[str, str] = {}
    if not floats:  # integer / bool outputs compare exactly: nothing to calibrate
        return Noise({}, {}, {"probes": {}, "floor": {}, "skipped": {}})
    cpu_only = all((p if isinstance(p, str) else p[0]) == "CPUExecutionProvider"
                   for p in (providers or default_providers()))
    source = probe_batches(feeds)
    probed = sorted(set(source))
    diffs = {n: {k: np.zeros(np.shape(ref[n][k])) for k in probed} for n in floats}
    seen: dict[str, dict[str, float]] = {}
    seconds: dict[str, float] = {}
    for probe, make, optimize in _probe_models(a, ref, floats, seed, cpu_only, skipped):
        t0 = time.perf_counter()
        model = a if make is None else make()
        if model is None:
            continue
        try:
            sess = make_session(model, optimize=optimize, providers=providers, verbose=verbose)
        except ModelRunError as e:  # e.g. ORT's CPU Conv has no float64 kernel
            skipped[probe] = str(e).split(": ", 1)[-1][:200]
            continue
        seen[probe] = dict.fromkeys(floats, 0.0)
        for k in probed:
            feed = feeds[k]
            given = feed if probe != "float64" else {
                n: v.astype(np.float64) if v.dtype == np.float32 else v for n, v in feed.items()}
            out = run_session(sess, model, given, list(floats), k)
            for n in floats:
                if np.shape(out[n]) != np.shape(ref[n][k]):
                    continue
                seen[probe][n] = max(seen[probe][n], _accumulate(diffs[n][k], ref[n][k], out[n]))
            del out
        del sess, model
        gc.collect()
        seconds[probe] = round(time.perf_counter() - t0, 3)
    per_batch, floor = {}, {}
    for n in floats:
        per_batch[n], floor[n] = element_noise(ref[n], diffs[n], source)
    return Noise(per_batch, floor, {"probes": seen, "floor": floor, "skipped": skipped,
                                    "rule": "per element", "probed_batches": probed, "seconds": seconds})
