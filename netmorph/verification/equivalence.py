"""``verify_models``: run two models in ONNX Runtime on the same inputs and compare every output."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .calibrate import measure_noise
from .compare import compare_output
from .errors import InterfaceMismatchError
from .inputs import InputsSpec, resolve_inputs
from .interface import Interface, check_same_interface, renamed
from .models import ModelSource, load_model
from .options import VerifyOptions
from .report import VerifyReport
from .session import check_providers, make_session, run_session
from .tolerance import output_tolerance


def verify_models(
    a: ModelSource,
    b: ModelSource,
    *,
    inputs: InputsSpec = None,
    options: VerifyOptions | None = None,
    rtol: float | None = None,
    atol: float | None = None,
    seed: int | None = None,
    batches: int | None = None,
    batch_size: int | None = None,
    providers: Sequence[Any] | None = None,
    optimize_b: bool | None = None,
    dims: Mapping[str, int] | None = None,
    ranges: Mapping[str, tuple[float, float]] | None = None,
    output_rtol: Mapping[str, float] | None = None,
    output_atol: Mapping[str, float] | None = None,
    tolerance: str | None = None,
    allow_nan: bool | None = None,
    name_map: Mapping[str, str] | None = None,
    verbose: bool | None = None,
) -> VerifyReport:
    """Check that ``b`` computes the same function as the reference ``a``.

    Parameters
    ----------
    a, b
        Netmorph ``Graph``, ``onnx.ModelProto`` or path of an ONNX file. ``a`` is the
        reference: relative errors and calibrated noise are measured on its values.
    inputs
        ``None``: seeded random batches (see :mod:`~netmorph.verification.inputs`); a dict
        name -> array (one batch); a list of such dicts; a ``.npz`` path (one batch, or
        several under ``batchK/NAME`` keys); or a folder of ``.npz`` files.
    options
        The policy to start from (default ``VerifyOptions()``, the same one ``netmorph verify``,
        ``netmorph grow`` and ``PassManager`` use). Every other keyword that is not ``None``
        replaces the field of the same name (see :class:`VerifyOptions`): ``rtol``, ``atol``,
        ``seed``, ``batches`` (default 2), ``batch_size`` (2), ``providers``, ``optimize_b``,
        ``dims``, ``ranges``, ``output_rtol``, ``output_atol``, ``tolerance`` (``"fixed"`` or
        ``"calibrated[:K]"``), ``allow_nan``, ``name_map`` (a's name -> b's), ``verbose``.

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
        The models' input/output names (after ``name_map``), element types or shapes differ.
    ModelRunError
        ONNX Runtime cannot load or run a model.
    InputsError, OptionsError
        The inputs cannot be made or do not fit the model; an option is malformed.
    """
    opts = (options or VerifyOptions()).replace(
        rtol=rtol, atol=atol, seed=seed, batches=batches, batch_size=batch_size, providers=providers,
        optimize_b=optimize_b, dims=dims, ranges=ranges, output_rtol=output_rtol, output_atol=output_atol,
        tolerance=tolerance, allow_nan=allow_nan, name_map=name_map, verbose=verbose,
    )
    check_providers(opts.providers)
    ma, mb = load_model(a, "a"), load_model(b, "b")
    ia = Interface.of(ma.proto)
    ib = renamed(Interface.of(mb.proto), dict(opts.name_map), ia, ma.label, mb.label)
    check_same_interface(ia, ib, ma.label, mb.label)
    for kind, names in (("output", opts.output_rtol), ("output", opts.output_atol)):
        for n in names:
            if n not in ia.outputs:
                raise InterfaceMismatchError(f"tolerance for {n!r}: {ma.label} has no {kind} {n!r}")
    feeds, source, plan = resolve_inputs(inputs, ia, opts, ma.proto)
    to_b = {n: opts.name_map.get(n, n) for n in [*ia.inputs, *ia.outputs]}

    sa = make_session(ma, optimize=False, providers=opts.providers, verbose=opts.verbose)
    sb = make_session(mb, optimize=opts.optimize_b, providers=opts.providers, verbose=opts.verbose)
    names = list(ia.outputs)
    pairs: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {n: [] for n in names}
    for k, feed in enumerate(feeds):
        ra = run_session(sa, ma, feed, names, k)
        rb = run_session(sb, mb, {to_b[n]: v for n, v in feed.items()}, [to_b[n] for n in names], k)
        for n in names:
            xa, xb = np.asarray(ra[n]), np.asarray(rb[to_b[n]])
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
    noise: dict[str, float] = {}
    calibration = None
    if opts.calibration_k is not None:
        ref = {n: [p[0] for p in pairs[n]] for n in names}
        noise, calibration = measure_noise(ma, feeds, names, ref, seed=opts.seed, providers=opts.providers,
                                           verbose=opts.verbose)
    outputs = []
    for n in names:
        dtype = pairs[n][0][0].dtype if pairs[n] else np.dtype(np.float32)
        tol = output_tolerance(n, dtype, opts, noise.get(n))
        outputs.append(compare_output(n, pairs[n], tol, noise.get(n) if tol.kind == "calibrated" else None))
    k = opts.calibration_k
    return VerifyReport(
        outputs=outputs,
        rtol=opts.rtol,
        atol=opts.atol,
        batches=len(feeds),
        batch_size=opts.batch_size if source == "random" else None,
        seed=opts.seed if source == "random" else None,
        inputs=source,
        provider=sa.get_providers()[0],
        optimized_b=opts.optimize_b,
        a=ma.label,
        b=mb.label,
        tolerance="fixed" if k is None else f"calibrated:{k:g}",
        allow_nan=opts.allow_nan,
        plan=None if plan is None else plan.to_dict(),
        calibration=calibration,
        extra={"options": opts.to_dict()},
    )
