"""``verify_models``: run two models in ONNX Runtime on the same inputs and compare every output.

The models run one after the other, each in a session released before the next is made: the
reference ``a`` (unoptimised) on every batch, its calibration probes, then ``b`` as written and
``b`` with ONNX Runtime's default graph optimisations (the way users run it)."""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from . import cache
from .cache import Remembered
from .calibrate import Noise, measure_noise
from .compare import compare_output
from .errors import InputsError, InterfaceMismatchError, ModelRunError
from .inputs import InputsSpec, random_batches, resolve_inputs, size_candidates
from .interface import Interface, check_same_interface, renamed
from .limits import max_output_bytes
from .models import LoadedModel, ModelSource, load_model
from .options import VerifyOptions
from .report import OutputDiff, VerifyReport
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
        Giving ``rtol`` or ``atol`` without ``tolerance`` selects the fixed rule.

    Returns
    -------
    VerifyReport
        ``report.ok`` is the verdict; ``report.raise_if_failed(what)`` turns a failure into
        a :class:`~netmorph.errors.VerificationError`. ``b`` failing to run (or giving another
        output shape) where ``a`` runs is a failed verdict (``report.b_failure``), not an error.

    Raises
    ------
    OnnxFormatError
        A path is missing, truncated or not an ONNX model.
    InterfaceMismatchError
        The models' input/output names (after ``name_map``), element types or shapes differ.
    ModelRunError
        ONNX Runtime cannot load ``a`` or ``b``, or ``a`` cannot run on the inputs.
    InputsError, OptionsError
        The inputs cannot be made or do not fit the model; an option is malformed.
    """
    base = options or VerifyOptions()
    if tolerance is None and (rtol is not None or atol is not None):
        tolerance, source = "fixed", "rtol/atol given"
    elif tolerance is not None or base.tolerance != VerifyOptions.tolerance:
        source = "asked for"
    else:
        source = "the default"
    opts = base.replace(
        rtol=rtol, atol=atol, seed=seed, batches=batches, batch_size=batch_size, providers=providers,
        optimize_b=optimize_b, dims=dims, ranges=ranges, output_rtol=output_rtol, output_atol=output_atol,
        tolerance=tolerance, allow_nan=allow_nan, name_map=name_map, verbose=verbose,
    )
    check_providers(opts.providers)
    clock = _Clock()
    ma, mb = load_model(a, "a"), load_model(b, "b")
    ia = Interface.of(ma.proto)
    ib = renamed(Interface.of(mb.proto), dict(opts.name_map), ia, ma.label, mb.label)
    check_same_interface(ia, ib, ma.label, mb.label)
    for kind, names in (("output", opts.output_rtol), ("output", opts.output_atol)):
        for n in names:
            if n not in ia.outputs:
                raise InterfaceMismatchError(f"tolerance for {n!r}: {ma.label} has no {kind} {n!r}")
    names = list(ia.outputs)
    clock.lap("load")
    feeds, source_word, plan, remembered = reference_outputs(ma, ia, inputs, opts, names)
    clock.lap("reference")
    ref, provider = remembered.ref, remembered.provider
    k = opts.calibration_k
    noise = None
    reused = {"reference": remembered.reused, "calibration": remembered.noise is not None}
    if k is not None:  # once per reference and batches in this process (see .cache)
        if remembered.noise is None:
            remembered.noise = measure_noise(ma, feeds, names, ref, seed=opts.seed, providers=opts.providers,
                                             verbose=opts.verbose)
        noise = remembered.noise
    clock.lap("calibration")
    if noise is not None and not reused["calibration"]:
        for probe, sec in noise.info.get("seconds", {}).items():
            clock.laps[f"probe {probe}"] = sec
    runs = [("optimised" if opts.optimize_b else "as written", opts.optimize_b)]
    if opts.check_optimized_b and not opts.optimize_b:
        runs.append(("ORT-optimised", True))
    to_b = {n: opts.name_map.get(n, n) for n in [*ia.inputs, *ia.outputs]}
    per_run: list[list[OutputDiff]] = []
    failure = None
    for label, optimize in runs:
        got, failure = run_candidate(mb, ma.label, feeds, ref, names, to_b, opts, optimize, label,
                                     plan_dims=None if plan is None else plan.batch_dims,
                                     first=not per_run)
        if failure is not None:
            break
        if not per_run and not optimize and not opts.name_map:  # b as written: the next parent's reference
            kb = cache.key(cache.model_digest(mb.proto, mb.weights), cache.feeds_digest(feeds), opts)
            if cache.get(kb) is None:
                cache.put(kb, Remembered({n: [g[n] for g in got] for n in names}, provider))
        clock.lap(f"b {label}")
        per_run.append([_compare(n, ref, got, feeds, opts, noise) for n in names])
        del got  # compared before the next run is made: one run's outputs held at a time
        clock.lap("compare")
    outputs = per_run[0] if per_run else []
    if failure is None and sum(o.n_elements for o in outputs) == 0:
        raise InputsError("the outputs have no elements on these inputs: nothing would be compared")
    return VerifyReport(
        outputs=outputs,
        rtol=opts.rtol,
        atol=opts.atol,
        batches=len(feeds),
        batch_size=opts.batch_size if source_word == "random" else None,
        seed=opts.seed if source_word == "random" else None,
        inputs=source_word,
        provider=provider,
        optimized_b=opts.optimize_b,
        a=ma.label,
        b=mb.label,
        tolerance="fixed" if k is None else f"calibrated:{k:g}",
        allow_nan=opts.allow_nan,
        plan=None if plan is None else plan.to_dict(),
        calibration=None if noise is None else noise.info,
        rule_source=source,
        b_runs=[r[0] for r in runs],
        b_failure=failure,
        optimised_outputs=per_run[1] if len(per_run) > 1 else [],
        extra={"options": opts.to_dict(), "reused": reused, "seconds": clock.laps},
    )


class _Clock:
    """Wall seconds per phase of one verification (the report's ``extra["seconds"]``)."""

    def __init__(self):
        self.laps: dict[str, float] = {}
        self.t = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[name] = round(self.laps.get(name, 0.0) + now - self.t, 3)
        self.t = now
        hwm = _peak_rss_gb()
        if hwm is not None:
            self.laps[f"peak RSS GB after {name}"] = hwm


def _peak_rss_gb() -> float | None:
    """This process's peak resident set so far (``VmHWM``, Linux), in GiB; ``None`` elsewhere."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 2**20, 2)
    except OSError:
        pass
    return None


def _compare(n: str, ref, got, feeds, opts: VerifyOptions, noise: Noise | None) -> OutputDiff:
    """One output of one run of ``b`` against the reference, under its rule."""
    pairs = [(ref[n][j], got[j][n]) for j in range(len(feeds))]
    dtype = ref[n][0].dtype if ref[n] else np.dtype(np.float32)
    floor = None if noise is None else noise.summary(n)
    tol = output_tolerance(n, dtype, opts, floor)
    if tol.kind != "calibrated":
        return compare_output(n, pairs, tol)
    return compare_output(n, pairs, tol, floor, noise.per_batch[n], opts.calibration_k)


def _held_bytes(outs: dict[str, np.ndarray]) -> int:
    return sum(int(np.asarray(v).nbytes) for v in outs.values())


def check_declared_outputs(iface: Interface, label: str, n_batches: int) -> None:
    """Refuse before running when the outputs' *declared* static shapes exceed the output limit."""
    limit = max_output_bytes()
    total = 0
    for t in iface.outputs.values():
        if t is None or t.shape is None or not all(isinstance(d, int) for d in t.shape):
            continue
        try:
            item = np.dtype(t.dtype).itemsize
        except (KeyError, TypeError, ValueError):
            continue
        total += math.prod(t.shape) * item * n_batches
    if total > limit:
        raise InputsError(f"{label}: its outputs declare {total:,} bytes over {n_batches} batch(es), above "
                          f"the verification limit of {limit:,} (NETMORPH_MAX_VERIFY_OUTPUT_BYTES)")


def run_all(model: LoadedModel, feeds: Sequence[dict[str, np.ndarray]], outputs: list[str],
            opts: VerifyOptions, *, optimize: bool) -> tuple[list[dict[str, np.ndarray]], str]:
    """``model`` on every feed in one session, released before returning: ``(outputs per batch,
    the provider that ran)``; the outputs held are bounded by
    :func:`~netmorph.verification.limits.max_output_bytes`."""
    sess = make_session(model, optimize=optimize, providers=opts.providers, verbose=opts.verbose)
    provider = sess.get_providers()[0]
    limit, held, got = max_output_bytes(), 0, []
    try:
        for k, feed in enumerate(feeds):
            got.append(run_session(sess, model, feed, outputs, k))
            held += _held_bytes(got[-1])
            if held > limit or (k == 0 and held * len(feeds) > limit):  # refuse at batch 0 what will not fit
                raise InputsError(
                    f"{model.label}: its outputs take {held:,} bytes on {k + 1} of {len(feeds)} batch(es), "
                    f"beyond the verification limit of {limit:,} (NETMORPH_MAX_VERIFY_OUTPUT_BYTES)")
    finally:
        del sess
    return got, provider


def reference_outputs(ma: LoadedModel, ia: Interface, inputs: InputsSpec, opts: VerifyOptions,
                      names: list[str]):
    """``(feeds, source, plan, remembered)``: the batches and the reference's outputs on them
    (``remembered.ref[name][k]``, from :mod:`.cache` when this process already ran the same model
    on the same batches). Random batches are tried at :func:`size_candidates` in turn until the
    reference runs on all of them: a size the reference itself fails at is its limit, recorded
    in the plan's ``note``, never a reason to fail the candidate."""
    candidates = size_candidates(ia, opts) if inputs is None else [None]
    first: ModelRunError | None = None
    digest = None
    for i, sizes in enumerate(candidates):
        if inputs is None:
            feeds, plan = random_batches(ia, opts, ma.proto, sizes)
            source = "random"
        else:
            feeds, source, plan = resolve_inputs(inputs, ia, opts, ma.proto)
        check_declared_outputs(ia, ma.label, len(feeds))
        digest = digest or cache.model_digest(ma.proto, ma.weights)
        k = cache.key(digest, cache.feeds_digest(feeds), opts)
        hit = cache.get(k)
        if hit is None or not all(n in hit.ref for n in names):
            try:
                got, provider = run_all(ma, feeds, names, opts, optimize=False)
            except ModelRunError as e:
                first = first or e
                continue
            hit = Remembered({n: [g[n] for g in got] for n in names}, provider)
            cache.put(k, hit)
        else:
            hit.reused = True
        if i and plan is not None:
            note = (f"{ma.label} does not run at the default sizes ({_first_cause(first)}); checked at "
                    f"dim 0 sizes {sizes[0]}, other symbolic dims {sizes[1]}")
            plan = dataclasses.replace(plan, note=note[:300])
        return feeds, source, plan, hit
    if len(candidates) > 1:
        raise ModelRunError(f"{_first_cause(first)[:200]} (the reference fails at every size tried: its "
                            "limit; bind the sizes it runs at with --dim NAME=SIZE)")
    raise first


def _first_cause(e: BaseException | None) -> str:
    return "" if e is None else str(e).splitlines()[0]


def run_candidate(mb: LoadedModel, label_a: str, feeds, ref, names, to_b, opts: VerifyOptions, optimize: bool,
                  run: str, plan_dims, first: bool) -> tuple[list[dict[str, np.ndarray]], str | None]:
    """``b`` on every feed: ``(outputs under a's names, None)`` or ``([], why b fails)`` when it
    cannot run, or gives another output shape, where ``a`` runs. ``b`` that ONNX Runtime cannot
    load as written is bad input (``ModelRunError``); refusing its optimised form is a failure."""
    try:
        sess = make_session(mb, optimize=optimize, providers=opts.providers, verbose=opts.verbose)
    except ModelRunError as e:
        if first:
            raise
        return [], f"{mb.label} cannot be loaded {run}: {_first_cause(e).split(': ', 1)[-1][:200]}"
    got = []
    try:
        for k, feed in enumerate(feeds):
            try:
                out = run_session(sess, mb, {to_b[n]: v for n, v in feed.items()},
                                  [to_b[n] for n in names], k)
            except ModelRunError as e:
                at = "" if plan_dims is None else f" (sizes {plan_dims[k]})"
                why = str(e).split(": ONNX Runtime failed on batch", 1)[-1].split(": ", 1)[-1]
                return [], (f"{mb.label} ({run}) fails on batch {k}{at} where {label_a} runs: {why}")[:300]
            mapped = {n: np.asarray(out[to_b[n]]) for n in names}
            for n in names:
                xa, xb = np.asarray(ref[n][k]), mapped[n]
                if xa.shape != xb.shape:
                    return [], (f"output {n!r} has shape {xa.shape} in {label_a} but {xb.shape} in "
                                f"{mb.label} ({run}) on batch {k}")[:300]
                if xa.dtype != xb.dtype:
                    raise InterfaceMismatchError(
                        f"output {n!r} is {xa.dtype} in {label_a} but {xb.dtype} in {mb.label}")
            got.append(mapped)
    finally:
        del sess
    return got, None
