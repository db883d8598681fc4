"""ONNX Runtime sessions for verification: provider choice, threads, optimisation level."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..onnx_io.session import add_weights, low_memory, weights_as_inputs
from .errors import ModelRunError, OptionsError
from .models import LoadedModel

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
# TF32 would round float32 matmuls/convs to 10 mantissa bits on Ampere+ GPUs and swamp
# the differences a verification is looking for.
CUDA_OPTIONS = {"use_tf32": "0"}


def _ort():
    import onnxruntime

    return onnxruntime


def cpu_threads() -> int:
    """Intra-op threads: the CPUs this process may use, at most 8 (2 on the CI machine)."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        n = os.cpu_count() or 1
    return max(1, min(n, 8))


def default_providers() -> list[Any]:
    """CUDA (TF32 off) then CPU when onnxruntime-gpu is installed, else CPU only.

    Whether a GPU is really usable is only known once a session exists: ORT falls back to
    CPU when CUDA cannot start, and :attr:`VerifyReport.provider` records what ran.
    """
    if CUDA in _ort().get_available_providers():
        return [(CUDA, dict(CUDA_OPTIONS)), CPU]
    return [CPU]


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def check_providers(providers: Sequence[Any] | None) -> None:
    """Raise :class:`OptionsError` naming a provider this onnxruntime does not have."""
    if providers is None:
        return
    have = _ort().get_available_providers()
    for p in providers:
        name = p if isinstance(p, str) else p[0]
        if name not in have:
            raise OptionsError(f"provider {name!r} is not available in this onnxruntime "
                               f"(available: {', '.join(have)})")


def set_logging(verbose: bool) -> None:
    """ONNX Runtime's own log lines: warnings with ``verbose``, else fatal errors only (its errors
    reach the user as exceptions, in one line)."""
    _ort().set_default_logger_severity(2 if verbose else 4)


class _Session:
    """An ``InferenceSession`` and the ``OrtValue`` weights it reads in place (they must outlive it)."""

    def __init__(self, sess, held: list, fed: Mapping[str, np.ndarray] | None = None):
        self.sess, self._held, self._fed = sess, held, fed or {}

    def run(self, output_names, feed, run_options=None):
        return self.sess.run(output_names, {**feed, **self._fed} if self._fed else feed, run_options)

    def get_inputs(self):
        return [i for i in self.sess.get_inputs() if i.name not in self._fed]

    def __getattr__(self, name):
        return getattr(self.sess, name)


def make_session(model: LoadedModel, *, optimize: bool, providers: Sequence[Any] | None = None,
                 verbose: bool = False):
    """An ``InferenceSession`` on ``model`` (its file path, else its bytes).

    ``optimize=False`` disables every graph optimisation (``ORT_DISABLE_ALL``), so ORT runs
    the graph as written; ``True`` uses ORT's default (``ORT_ENABLE_ALL``).
    """
    ort = _ort()
    set_logging(verbose)
    so = ort.SessionOptions()
    so.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize else ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    )
    so.intra_op_num_threads = cpu_threads()
    so.inter_op_num_threads = 1
    so.log_severity_level = 2 if verbose else 4  # fallbacks are reported through get_providers()
    low_memory(so)  # one session at a time runs a few batches: memory is the limit, not speed
    chosen = list(providers) if providers is not None else default_providers()
    if model.weights and not optimize:  # fed as inputs where they lie (ORT copies initializers)
        data = weights_as_inputs(model.proto, model.weights).SerializeToString()
        try:
            return _Session(ort.InferenceSession(data, sess_options=so, providers=chosen), [], model.weights)
        except Exception:  # noqa: BLE001 - e.g. a kernel that wants a constant: as initializers below
            pass
    held = add_weights(so, list(model.weights), list(model.weights.values())) if model.weights else []
    try:
        data = model.ort_source()
    except ValueError as e:
        raise ModelRunError(str(e)) from None
    try:
        return _Session(ort.InferenceSession(data, sess_options=so, providers=chosen), held)
    except Exception as e:  # ORT raises its own pybind exception types
        if providers is None and chosen and isinstance(chosen[0], tuple):
            try:  # an older onnxruntime-gpu may not know an option: retry with plain CUDA
                return _Session(ort.InferenceSession(data, sess_options=so, providers=[CUDA, CPU]), held)
            except Exception:
                pass
        raise ModelRunError(f"{model.label}: ONNX Runtime cannot load the model: {_first_line(e)}") from None


def run_session(session, model: LoadedModel, feed: dict[str, np.ndarray], outputs: list[str], batch: int):
    """Run one batch; ORT failures become :class:`ModelRunError` naming the model and batch."""
    try:
        return dict(zip(outputs, session.run(outputs, feed), strict=True))
    except Exception as e:
        msg = f"{model.label}: ONNX Runtime failed on batch {batch}: {_first_line(e)}"
        raise ModelRunError(msg) from None
