"""Calibrated tolerance: how far the reference model disagrees with *itself*.

Fixed tolerances are wrong both ways: a real weight change can hide below ``atol 1e-5`` on a
shallow model, while float32 rounding through 50 layers exceeds it on a deep one. So the
reference ``a`` is evaluated again in ways that are equally right in exact arithmetic, on the
same inputs:

* ``optimised``: with ONNX Runtime's graph optimisations on (Conv+BN folding, fusions), which
  reorders the float arithmetic;
* ``ulp-weights``: with every finite float initializer / ``Constant`` moved by one unit in the
  last place, in a seeded random direction, which is the rounding a re-export or a refold of
  the weights introduces;
* ``float64``: the same graph in double precision (float32 tensors, constants and casts to
  float32 rewritten), where :func:`as_float64` can rewrite it and ONNX Runtime can run it — its
  CPU ``Conv`` has no float64 kernel, so CNNs are measured by the first two probes only (the
  report's ``calibration.skipped`` says why).

The **noise** of an output is the largest ``|a - probe|`` over its finite elements, probes and
batches, floored at one float32 epsilon times ``max |a|`` so an output no probe moves still has
a scale. Under ``calibrated:K`` an element fails iff
``|a - b| > K x noise``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from .errors import ModelRunError
from .models import LoadedModel
from .session import default_providers, make_session, run_session


def _nudge(t: onnx.TensorProto, rng: np.random.Generator) -> onnx.TensorProto | None:
    if t.data_type not in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE):
        return None
    if t.data_location == onnx.TensorProto.EXTERNAL:
        return None
    w = numpy_helper.to_array(t)
    if w.size == 0:
        return None
    up = rng.random(w.shape) < 0.5
    moved = np.where(up, np.nextafter(w, np.inf), np.nextafter(w, -np.inf)).astype(w.dtype)
    moved = np.where(np.isfinite(w), moved, w)
    return numpy_helper.from_array(moved, t.name)


def ulp_perturbed(model: onnx.ModelProto, seed: int) -> onnx.ModelProto:
    """A copy of ``model`` with every finite float weight one ulp up or down (seeded)."""
    rng = np.random.default_rng(seed)
    m = onnx.ModelProto()
    m.CopyFrom(model)
    for i, t in enumerate(m.graph.initializer):
        new = _nudge(t, rng)
        if new is not None:
            m.graph.initializer[i].CopyFrom(new)
    for n in m.graph.node:
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value" and a.type == onnx.AttributeProto.TENSOR:
                    new = _nudge(a.t, rng)
                    if new is not None:
                        a.t.CopyFrom(new)
    return m


CPU_NO_FLOAT64 = frozenset({"Conv", "ConvTranspose", "Erf"})
"""Ops seen without a float64 CPU kernel in onnxruntime 1.32: the float64 probe is not even tried
(rewriting a ResNet-50 to float64 only to be refused cost seconds). An op missing here is still
caught when the session is refused."""


def as_float64(model: onnx.ModelProto) -> onnx.ModelProto | None:
    """``model`` computed in float64: float32 initializers, constants, inputs, outputs, value infos
    and ``Cast(to=FLOAT)`` become double. ``None`` when some node carries another element-type
    attribute (``ConstantOfShape``, ``Random*``, ``Cast`` to float16 …) or has a subgraph, where
    a mechanical rewrite could change the function."""
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
    for i, t in enumerate(g.initializer):
        if t.data_type == onnx.TensorProto.FLOAT:
            if t.data_location == onnx.TensorProto.EXTERNAL:
                return None
            wide = numpy_helper.to_array(t).astype(np.float64)
            g.initializer[i].CopyFrom(numpy_helper.from_array(wide, t.name))
    for vi in [*g.input, *g.output, *g.value_info]:
        tt = vi.type.tensor_type
        if vi.type.WhichOneof("value") == "tensor_type" and tt.elem_type == onnx.TensorProto.FLOAT:
            tt.elem_type = onnx.TensorProto.DOUBLE
    return m


def measure_noise(
    a: LoadedModel, feeds: Sequence[dict[str, np.ndarray]], names: Sequence[str],
    ref: dict[str, list[np.ndarray]], *, seed: int = 0, providers: Sequence[Any] | None = None,
    verbose: bool = False,
) -> tuple[dict[str, float], dict[str, Any]]:
    """The noise of each float output of ``a`` (``ref``: its unoptimised outputs per batch).

    Returns ``(noise, info)``: ``noise[name]`` as defined in the module docstring; ``info``
    records, per probe, the largest difference it made per output, and the floor.
    """
    floats = [n for n in names if ref[n] and np.asarray(ref[n][0]).dtype.kind == "f"]
    if not floats:  # integer / bool outputs compare exactly: nothing to calibrate
        return {}, {"probes": {}, "floor": {}, "skipped": {}}
    probes = {
        "optimised": make_session(a, optimize=True, providers=providers, verbose=verbose),
        "ulp-weights": make_session(LoadedModel(ulp_perturbed(a.proto, seed), a.label + " (ulp-perturbed)"),
                                    optimize=False, providers=providers, verbose=verbose),
    }
    skipped = {}
    cpu_only = all((p if isinstance(p, str) else p[0]) == "CPUExecutionProvider"
                   for p in (providers or default_providers()))
    no_kernel = sorted({n.op_type for n in a.proto.graph.node} & CPU_NO_FLOAT64) if cpu_only else []
    wide = None
    if no_kernel:
        skipped["float64"] = f"ONNX Runtime's CPU provider has no float64 {', '.join(no_kernel)}"
    elif any(np.asarray(ref[n][0]).dtype != np.float32 for n in floats):
        skipped["float64"] = "the outputs are not float32"
    elif (wide := as_float64(a.proto)) is None:
        skipped["float64"] = "the graph cannot be rewritten to float64 mechanically"
    if wide is not None:
        try:
            probes["float64"] = make_session(LoadedModel(wide, a.label + " (float64)"), optimize=False,
                                             providers=providers, verbose=verbose)
        except ModelRunError as e:  # e.g. ORT's CPU Conv has no float64 kernel
            skipped["float64"] = str(e).split(": ", 1)[-1][:200]
    seen = {p: dict.fromkeys(floats, 0.0) for p in probes}
    for k, feed in enumerate(feeds):
        for p, sess in probes.items():
            given = feed if p != "float64" else {
                n: v.astype(np.float64) if v.dtype == np.float32 else v for n, v in feed.items()}
            out = run_session(sess, a, given, list(floats), k)
            for n in floats:
                x, y = ref[n][k].astype(np.float64), np.asarray(out[n], np.float64)
                fin = np.isfinite(x) & np.isfinite(y)
                if fin.any():
                    seen[p][n] = max(seen[p][n], float(np.abs(x - y)[fin].max()))
    noise, floor = {}, {}
    for n in floats:
        eps = float(np.finfo(ref[n][0].dtype).eps)
        mags = [float(np.abs(r[np.isfinite(r)]).max()) for r in ref[n] if np.isfinite(r).any()]
        floor[n] = eps * max(mags, default=0.0)
        noise[n] = max([floor[n], *(seen[p][n] for p in probes)])
    return noise, {"probes": seen, "floor": floor, "skipped": skipped}
