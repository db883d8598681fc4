"""``PassManager``: run passes, check every child, verify it against its parent, report.

For each pass the manager applies it to the current graph (never in place), checks the child
(``graph.check()`` and a strict type check, so a channel mismatch is caught at once, not at
training time), and verifies it against its parent in ONNX Runtime under the pass's
contract. For an approximate pass the surgery is proven separately: the same pass with the
exact solver is applied to the same parent and verified at float tolerance; the approximate
child is then measured against the parent (its price) and must stay within the contract's
bound. Any failure raises :class:`~netmorph.errors.VerificationError`; nothing is returned.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from ..errors import PreconditionError, VerificationError
from ..ir import Graph, IRError
from ..ir.infer import check_types, infer_types
from .base import Contract, Pass, PassReport, ProgressFn
from .select import depth_of


def _verification_dict(report: Any, contract_kind: str) -> dict[str, Any]:
    d = {
        "ok": bool(report.ok),
        "max_abs": float(report.max_abs),
        "max_rel": float(report.max_rel),
        "worst_output": report.worst_output,
        "rtol": float(report.rtol),
        "atol": float(report.atol),
        "contract": contract_kind,
        "tolerance": report.tolerance,
        "provider": report.provider,
        "batches": report.batches,
    }
    noise = [o.noise_ratio for o in report.outputs if o.noise_ratio is not None]
    if noise:
        d["noise_ratio"] = max(noise)
    if not report.ok:
        d["failure"] = report.failure_line()
    seconds = (getattr(report, "extra", None) or {}).get("seconds")
    if seconds:
        d["seconds"] = dict(seconds)
    return d


class PassManager:
    """Apply passes one after another with checks and verification.

    Parameters
    ----------
    verify
        Verify each child against its parent in ONNX Runtime (default). ``False`` skips it
        (the graph and type checks still run).
    rtol, atol
        Override the tolerances of every contract (e.g. tighter ones from the CLI); a child is
        then judged by these fixed numbers.
    inputs
        Inputs to verify on (see :func:`netmorph.verification.verify_models`); ``None``: seeded
        random batches.
    options
        The verification policy (:class:`~netmorph.verification.VerifyOptions`: batches, dims,
        ranges, providers …); default ``VerifyOptions()``, the one ``netmorph verify`` uses.
        Exact contracts are verified with ``EXACT_TOLERANCE``; approximate ones with their
        bound.
    progress
        ``progress(pass_name, done, total, item)``, called around each solved kernel.
    seed
        Seed of the passes' solvers (pass ``i`` gets ``seed + i``) and of the random inputs.
    batches, batch_size
        Random verification inputs (``None``: the policy's, 2 and 2).
    record_depth
        Put the recognised DynamicNet depth before / after into each report.
    on_pass_start
        ``on_pass_start(index, total, pass_)``, called before each pass (progress display).
    """

    EXACT_TOLERANCE = "calibrated"
    """How an exact contract is verified when no rtol/atol override is given: against K = 8 times the
    parent's own rounding noise (see :mod:`netmorph.verification.calibrate`)."""

    def __init__(self, verify: bool = True, rtol: float | None = None, atol: float | None = None,
                 inputs: Any = None, progress: ProgressFn | None = None, *, seed: int = 0,
                 batches: int | None = None, batch_size: int | None = None, record_depth: bool = True,
                 on_pass_start: Callable[[int, int, Pass], None] | None = None, options: Any = None):
        from ..verification import VerifyOptions

        self.verify = verify
        self.rtol, self.atol = rtol, atol
        self.inputs = inputs
        self.progress = progress
        self.seed = seed
        self.options = (options or VerifyOptions()).replace(batches=batches, batch_size=batch_size)
        self.record_depth = record_depth
        self.on_pass_start = on_pass_start

    def tolerance(self, contract: Contract) -> tuple[float, float]:
        """``(rtol, atol)`` to verify ``contract`` with (the manager's overrides win)."""
        return (contract.rtol if self.rtol is None else self.rtol,
                contract.atol if self.atol is None else self.atol)

    def _verify(self, parent: Graph, child: Graph, rtol: float, atol: float, exact: bool) -> Any:
        from ..verification import verify_models

        overridden = self.rtol is not None or self.atol is not None
        mode = self.EXACT_TOLERANCE if exact and not overridden else "fixed"
        return verify_models(parent, child, inputs=self.inputs, options=self.options, rtol=rtol, atol=atol,
                             seed=self.seed, tolerance=mode)

    @staticmethod
    def check_graph(graph: Graph, what: str) -> None:
        """``graph.check()`` plus a strict type check of a pass's child.

        A broken child is a failed morph: :class:`VerificationError` naming ``what``.
        """
        try:
            graph.check()
            check_types(graph)
        except IRError as e:
            raise VerificationError(f"{what}: the child graph is malformed: {e}") from None

    def run(self, graph: Graph, passes: Sequence[Pass]) -> tuple[Graph, list[PassReport]]:
        """Apply ``passes`` in order to ``graph`` (untouched); returns ``(child, reports)``."""
        for p in passes:  # every option within its declaration before any pass allocates
            if not isinstance(p, Pass):
                raise TypeError(f"PassManager.run takes Pass objects (get_pass(name, ...)), not {p!r}")
            p.check_options()
        current = graph.clone()
        infer_types(current)
        current.check()  # a malformed input is bad input (IRError), not a failed morph
        check_types(current)
        depth = depth_of(current) if self.record_depth else None
        reports: list[PassReport] = []
        for i, p in enumerate(passes):
            seed = self.seed + i
            what = f"pass {i + 1} ({p.describe()})"
            if self.on_pass_start is not None:
                self.on_pass_start(i, len(passes), p)
            child, rep = p.apply(current, seed=seed, progress=self.progress)
            t0 = time.perf_counter()
            self.check_graph(child, what)
            rep.timings["check"] = time.perf_counter() - t0
            if self.record_depth:
                rep.depth_before, rep.depth_after = depth, depth_of(child)
                depth = rep.depth_after
            if self.verify:
                t0 = time.perf_counter()
                self._verify_child(current, child, p, rep, seed, what)
                elapsed = time.perf_counter() - t0
                rep.timings["verify"] = elapsed - rep.timings.get("prove", 0.0)
                rep.seconds += elapsed
            reports.append(rep)
            current = child
        return current, reports

    def _verify_child(self, parent: Graph, child: Graph, p: Pass, rep: PassReport, seed: int,
                      what: str) -> None:
        contract = p.contract
        if not contract.is_exact:
            t0 = time.perf_counter()
            self._prove_surgery(parent, p, rep, seed, what)
            rep.timings["prove"] = time.perf_counter() - t0
        rtol, atol = self.tolerance(contract)
        result = self._verify(parent, child, rtol, atol, contract.is_exact)
        rep.verification = _verification_dict(result, contract.kind)
        if not result.ok:
            raise VerificationError(f"{what}: child differs from its parent: {result.failure_line()}")

    def _prove_surgery(self, parent: Graph, p: Pass, rep: PassReport, seed: int, what: str) -> None:
        """Apply ``p`` with the exact solver to the same parent and verify at float tolerance."""
        exact = p.exact_variant()
        if exact is None:
            raise VerificationError(f"{what}: approximate pass without an exact variant to prove it")
        try:
            proof_child, _ = exact.apply(parent, seed=seed)
        except PreconditionError as e:
            # e.g. 5x5 -> 3x3 + 3x3: no exact split exists for these shapes, so the surgery cannot
            # be separated from the approximation; say so (the child is still bounded by the contract)
            rep.surgery_proof = {"ok": None, "skipped": f"no exact solver for these shapes: {e}"}
            return
        self.check_graph(proof_child, f"{what} (exact solver)")
        tol = Contract.exact()  # the proof is always at float tolerance
        proof = self._verify(parent, proof_child, tol.rtol, tol.atol, exact=True)
        rep.surgery_proof = _verification_dict(proof, "exact")
        if not proof.ok:
            raise VerificationError(
                f"{what}: the surgery is wrong (with the exact solver): {proof.failure_line()}"
            )
