"""An ONNX Runtime session of an IR graph whose weights are handed over without a copy.

``InferenceSession(to_onnx(g).SerializeToString())`` builds three copies of the weights (the
``ModelProto``, its bytes, ORT's own initializers) and fails above protobuf's 2 GiB. Here the
model is built without its large weights: each tensor of at least
:data:`~netmorph.onnx_io.files.EXTERNAL_MIN_BYTES` is declared as external data and given to ORT
as an ``OrtValue`` over the parameter's own numpy buffer (``add_external_initializers``), which ORT
reads in place. The serialised model then holds only the graph and the small tensors, at any
model size. ``onnxruntime`` is imported only when a session is made.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx

from ..ir import Graph
from .convert import graph_proto_without_initializers, model_shell
from .files import EXTERNAL_MIN_BYTES

_IN_MEMORY = "netmorph-in-memory"  # the location of tensors handed over as OrtValues (never opened)


class GraphSession:
    """An ``onnxruntime.InferenceSession`` of a graph plus the buffers it reads.

    ``run`` / ``get_inputs`` / ``get_outputs`` are the session's. The buffers must outlive the
    session: they are held here and released by :meth:`close` (or when this object is dropped).
    Use as a context manager to release the session as soon as it is no longer needed.
    """

    def __init__(self, sess, buffers: list, fed: dict | None = None):
        self.sess = sess
        self._buffers = buffers
        self._fed = fed or {}  # weights fed as inputs on every run (see weights_as_inputs)

    def run(self, output_names, feed, run_options=None):
        return self.sess.run(output_names, {**feed, **self._fed} if self._fed else feed, run_options)

    def get_inputs(self):
        return [i for i in self.sess.get_inputs() if i.name not in self._fed]

    def get_outputs(self):
        return self.sess.get_outputs()

    def close(self) -> None:
        self.sess = None
        self._buffers = []
        self._fed = {}

    def __enter__(self) -> GraphSession:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def external_header(name: str, arr: np.ndarray) -> onnx.TensorProto:
    """A data-less ``TensorProto`` for ``arr``, marked as external data handed over in memory."""
    t = onnx.TensorProto()
    t.name = name
    t.data_type = onnx.helper.np_dtype_to_tensor_dtype(arr.dtype)
    t.dims.extend(arr.shape)
    t.data_location = onnx.TensorProto.EXTERNAL
    for k, v in (("location", _IN_MEMORY), ("offset", "0"), ("length", str(arr.nbytes))):
        e = t.external_data.add()
        e.key, e.value = k, v
    return t


def _handed_over(arr: np.ndarray) -> bool:
    return arr.dtype.kind in "fiuc" and arr.dtype.byteorder != ">"


def graph_model_parts(graph: Graph, extra_outputs: Sequence[str] = ()
                      ) -> tuple[onnx.ModelProto, list[str], list]:
    """The ``ModelProto`` of ``graph`` with its large weights left out, their names and arrays.

    Each weight of at least :data:`EXTERNAL_MIN_BYTES` (little-endian numbers) is an external-data
    header in the model and its array is the parameter's own buffer (no copy; a weight still held
    as a ``TensorProto`` is decoded while the arrays are held). ``extra_outputs``: value names to
    add as graph outputs (shape probes read intermediates).
    """
    m = model_shell(graph)
    gp = graph_proto_without_initializers(graph)
    have = {o.name for o in gp.output}
    for name in extra_outputs:
        if name not in have:
            gp.output.append(onnx.ValueInfoProto(name=name))
            have.add(name)
    names, arrays = [], []
    for v in graph.parameters:
        p = v.const
        if p.nbytes >= EXTERNAL_MIN_BYTES:
            arr = p.peek_array()
            if _handed_over(arr):
                arr = np.ascontiguousarray(arr)
                gp.initializer.append(external_header(v.name, arr))
                names.append(v.name)
                arrays.append(arr)
                continue
        gp.initializer.append(p.to_proto(v.name))
    m.graph.CopyFrom(gp)
    return m, names, arrays


def graph_model_bytes(graph: Graph, extra_outputs: Sequence[str] = ()) -> tuple[bytes, list[str], list]:
    """:func:`graph_model_parts` with the model serialised (it holds no large weight)."""
    m, names, arrays = graph_model_parts(graph, extra_outputs)
    return m.SerializeToString(), names, arrays


def weights_as_inputs(model: onnx.ModelProto, names) -> onnx.ModelProto:
    """A copy of ``model`` (which holds the tensors ``names`` as data-less headers) where those
    tensors are graph inputs instead, to be fed on every run.

    ONNX Runtime copies the ``OrtValue`` weights given by ``add_external_initializers`` into
    its own initializers (one more copy of the model per session), but reads an input where it
    lies. With graph optimisations off a weight fed as an input runs the same kernels on the
    same values; an optimised session needs them as initializers (constant folding, fusions).
    """
    names = set(names)
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    kept = [t for t in g.initializer if t.name not in names]
    moved = [t for t in g.initializer if t.name in names]
    del g.initializer[:]
    g.initializer.extend(kept)
    have = {i.name for i in g.input}
    for t in moved:
        if t.name not in have:
            g.input.append(onnx.helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
    return m


def unoptimised(options) -> bool:
    """Whether the ``onnxruntime.SessionOptions`` ``options`` turn every graph optimisation off."""
    import onnxruntime as ort

    return options.graph_optimization_level == ort.GraphOptimizationLevel.ORT_DISABLE_ALL


def low_memory(options) -> None:
    """Set ``options`` (``onnxruntime.SessionOptions``) for a session that runs a few times: no memory
    arena or memory pattern kept between runs, and no pre-packed second copy of the MatMul / Conv
    weights (ORT would otherwise hold one beside the buffers handed over)."""
    options.enable_cpu_mem_arena = False
    options.enable_mem_pattern = False
    options.add_session_config_entry("session.disable_prepacking", "1")


def add_weights(options, names: Sequence[str], arrays: Sequence[np.ndarray]) -> list:
    """Give ``arrays`` to the ``onnxruntime.SessionOptions`` ``options`` as the external initializers
    ``names`` (read in place); returns the ``OrtValue`` objects, which must outlive the session."""
    import onnxruntime as ort

    values = [ort.OrtValue.ortvalue_from_numpy(a) for a in arrays]
    if names:
        options.add_external_initializers(list(names), values)
    return values


def graph_session(graph: Graph, *, extra_outputs: Sequence[str] = (), options=None,
                  providers: Sequence[str] | None = None) -> GraphSession:
    """An ONNX Runtime session of ``graph`` that reads the graph's weight buffers in place.

    ``options``: a fresh ``onnxruntime.SessionOptions`` for this session alone (the weights are
    added to it); ``providers`` default to CPU. Works for models above protobuf's 2 GiB.
    """
    import onnxruntime as ort

    m, names, arrays = graph_model_parts(graph, extra_outputs)
    so = options if options is not None else ort.SessionOptions()
    low_memory(so)
    chosen = list(providers or ["CPUExecutionProvider"])
    if names and unoptimised(so):  # the weights are fed where they lie: no copy in ORT
        try:
            sess = ort.InferenceSession(weights_as_inputs(m, names).SerializeToString(), so, providers=chosen)
            return GraphSession(sess, [arrays], dict(zip(names, arrays, strict=True)))
        except Exception:  # noqa: BLE001 - a kernel that wants a constant: hand them over as initializers
            pass
    values = add_weights(so, names, arrays)
    sess = ort.InferenceSession(m.SerializeToString(), so, providers=chosen)
    return GraphSession(sess, [arrays, values])

