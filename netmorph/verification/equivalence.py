"""``verify_models``: run two models in ONNX Runtime on the same inputs and compare every output."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .compare import compare_output
from .errors import InterfaceMismatchError
from .inputs import InputsSpec, resolve_inputs
from .interface import Interface, check_same_interface
from .models import ModelSource, load_model
from .report import VerifyReport
from .session import make_session, run_session
from .tolerance import Tolerance


def verify_models(
    a: ModelSource,
    b: ModelSource,
    *,
    inputs: InputsSpec = None,
    rtol: float = 1e-4,
    atol: float = 1e-5,
    seed: int = 0,
    batches: int = 2,
    batch_size: int = 2,
    providers: Sequence[Any] | None = None,
    optimize_b: bool = False,
) -> VerifyReport:
    """Check that ``b`` computes the same function as the reference ``a``.

    Parameters
    ----------
    a, b
        Netmorph ``Graph``, ``onnx.ModelProto`` or path of an ONNX file. ``a`` is the
        reference: relative errors are measured against its values.
    inputs
        ``None``: ``batches`` seeded random batches (see :func:`make_inputs`); a dict
        name -> array (one batch); a list of such dicts; or a ``.npz`` path (one batch).
    rtol, atol
        An element fails iff ``|a-b| > atol`` and ``|a-b| > rtol*|a|`` (see :class:`Tolerance`).
    seed, batches, batch_size
        Random inputs only.
    providers
        ONNX Runtime providers for both sessions; ``None`` = CUDA when usable, else CPU.
    optimize_b
        Run ``b`` with ORT's graph optimisations (``ORT_ENABLE_ALL``). Default ``False``:
        both models run with all optimisations disabled, so fusions neither hide nor invent
        differences. ``a`` always runs unoptimised.

    Returns
    -------
    VerifyReport
        ``report.ok`` is the verdict; ``report.raise_if_failed(what)`` turns a failure into
        a :class:`~netmorph.errors.VerificationError`.

    Raises
    ------
    OnnxFormatError
        A path is missing, truncated or not an ONNX model.
    InterfaceMismatchError
        The models' input/output names, element types or shapes differ.
    ModelRunError
        ONNX Runtime cannot load or run a model.
    InputsError
        The inputs cannot be made (symbolic non-batch dim …) or do not fit the model.
    """
    tol = Tolerance(rtol, atol)
    ma, mb = load_model(a, "a"), load_model(b, "b")
    ia, ib = Interface.of(ma.proto), Interface.of(mb.proto)
    check_same_interface(ia, ib, ma.label, mb.label)
    feeds, source = resolve_inputs(inputs, ia, seed=seed, batches=batches, batch_size=batch_size)

    sa = make_session(ma, optimize=False, providers=providers)
    sb = make_session(mb, optimize=optimize_b, providers=providers)
    names = list(ia.outputs)
    pairs: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {n: [] for n in names}
    for k, feed in enumerate(feeds):
        ra = run_session(sa, ma, feed, names, k)
        rb = run_session(sb, mb, feed, names, k)
        for n in names:
            xa, xb = np.asarray(ra[n]), np.asarray(rb[n])
            if xa.shape != xb.shape:
                raise InterfaceMismatchError(
                    f"output {n!r} has shape {xa.shape} in {ma.label} but {xb.shape} in {mb.label} "
                    f"(batch {k})"
                )
            if xa.dtype != xb.dtype:
                raise InterfaceMismatchError(
                    f"output {n!r} is {xa.dtype} in {ma.label} but {xb.dtype} in {mb.label}"
                )
            pairs[n].append((xa, xb))
    return VerifyReport(
        outputs=[compare_output(n, pairs[n], tol) for n in names],
        rtol=tol.rtol,
        atol=tol.atol,
        batches=len(feeds),
        batch_size=batch_size if source == "random" else None,
        seed=seed if source == "random" else None,
        inputs=source,
        provider=sa.get_providers()[0],
        optimized_b=optimize_b,
        a=ma.label,
        b=mb.label,
    )
