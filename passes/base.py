"""The pass protocol: ``Pass``, its ``Contract``, the ``PassReport`` it returns.

A pass is a small object with a ``name``, validated ``options``, a ``contract`` (exact, or
approximate with a bound), ``requires(graph)`` (preconditions, raising
:class:`~netmorph.errors.PreconditionError` that names the node and the reason), the work
(``call``), and ``ensures(child)`` (postconditions). ``apply(graph)`` runs the three on a
clone: a pass never mutates its input.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

import numpy as np

from ..errors import PreconditionError
from ..ir import Graph
from ..ir.infer import infer_types
from ..morphs.lineage import Lineage, ParamLineage

ProgressFn = Callable[[str, int, int, str], None]
"""``progress(pass_name, done, total, item)``: called before and after each solved conv."""

__all__ = [
    "Contract", "ConvSolve", "Option", "Pass", "PassContext", "PassReport", "PreconditionError",
    "ProgressFn",
]


@dataclass(frozen=True)
class Contract:
    """What a pass promises about the child's function.

    ``exact``: the child computes the parent's function (up to float rounding: verified at
    ``rtol`` / ``atol``). ``approx``: the surgery is exact but numbers in it come from an
    approximate solver; the child's outputs stay within ``rtol`` / ``atol`` of the parent's.
    """

    kind: str
    rtol: float
    atol: float

    @classmethod
    def exact(cls, rtol: float = 1e-4, atol: float = 1e-5) -> Contract:
        return cls("exact", rtol, atol)

    @classmethod
    def approx(cls, rtol: float, atol: float) -> Contract:
        return cls("approx", rtol, atol)

    @property
    def is_exact(self) -> bool:
        return self.kind == "exact"

    def __str__(self) -> str:
        return f"{self.kind}(rtol={self.rtol:g}, atol={self.atol:g})"

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "rtol": self.rtol, "atol": self.atol}


@dataclass(frozen=True)
class Option:
    """One option of a pass: its name (``cmid``), type, default and one-line help."""

    name: str
    type: type
    default: Any = None
    help: str = ""
    choices: tuple[Any, ...] | None = None


@dataclass
class ConvSolve:
    """One kernel decomposition done by a pass (what the solver returned, minus the arrays)."""

    node: str
    method: str
    exact: bool
    residual: float
    energy_f1: float
    energy_f2: float
    iterations: int
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class PassReport:
    """What one pass did to one graph, and how its child was checked."""

    pass_name: str
    options: dict[str, Any]
    contract: Contract
    nodes_added: list[str] = field(default_factory=list)
    nodes_removed: list[str] = field(default_factory=list)
    params_before: int = 0
    params_after: int = 0
    depth_before: int | None = None
    depth_after: int | None = None
    solves: list[ConvSolve] = field(default_factory=list)
    verification: dict[str, Any] | None = None
    surgery_proof: dict[str, Any] | None = None
    seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)
    lineage: Lineage = field(default_factory=Lineage)
    """Where each created or changed child parameter came from (see :mod:`netmorph.morphs.lineage`)."""
    details: list[dict[str, Any]] = field(default_factory=list)
    """One record per place the pass changed (e.g. per inserted unit: what it copies, what was zeroed)."""

    @property
    def max_residual(self) -> float | None:
        return max((s.residual for s in self.solves), default=None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "pass": self.pass_name,
            "options": dict(self.options),
            "contract": self.contract.to_dict(),
            "nodes_added": list(self.nodes_added),
            "nodes_removed": list(self.nodes_removed),
            "params_before": self.params_before,
            "params_after": self.params_after,
            "depth_before": self.depth_before,
            "depth_after": self.depth_after,
            "solves": [s.to_dict() for s in self.solves],
            "max_residual": self.max_residual,
            "verification": self.verification,
            "surgery_proof": self.surgery_proof,
            "seconds": self.seconds,
            "timings": dict(self.timings),
            "lineage": self.lineage.to_dict(),
            "details": list(self.details),
        }


class PassContext:
    """Per-application state a pass works with: seed, solver calls, progress, records."""

    def __init__(self, pass_: Pass, seed: int, progress: ProgressFn | None):
        self.pass_ = pass_
        self.seed = int(seed)
        self.rng = np.random.default_rng(seed)
        self.progress = progress
        self.solves: list[ConvSolve] = []
        self.lineage = Lineage()
        self.details: list[dict[str, Any]] = []
        self.timings: dict[str, float] = {}
        """Seconds of named phases a pass measures itself (``recognise``: finding units / groups)."""
        self.solve_seconds = 0.0
        self._total = 0
        self._done = 0

    def derive(self, child: str, kind: str, parent: str | None = None, **kw: Any) -> None:
        """Record where child parameter ``child`` came from (a :class:`ParamLineage`)."""
        self.lineage.add(ParamLineage(child, kind, parent=parent, **kw))

    def note(self, **record: Any) -> None:
        """Add one record to the report's ``details`` (what was inserted where, what was zeroed)."""
        self.details.append(record)

    def expect_solves(self, n: int) -> None:
        """Announce how many kernels this application will solve (for the progress bar)."""
        self._total = int(n)
        self._report("")

    def _report(self, item: str) -> None:
        if self.progress is not None:
            self.progress(self.pass_.name, self._done, max(self._total, self._done), item)

    def _record(self, node: str, res: Any, seconds: float) -> None:
        self.solves.append(
            ConvSolve(
                node=node,
                method=str(getattr(res, "method", "?")),
                exact=bool(getattr(res, "exact", False)),
                residual=float(getattr(res, "residual", math.nan)),
                energy_f1=float(getattr(res, "energy_f1", math.nan)),
                energy_f2=float(getattr(res, "energy_f2", math.nan)),
                iterations=int(getattr(res, "iterations", 0) or 0),
                seconds=float(seconds),
            )
        )
        self.solve_seconds += seconds
        self._done += 1
        self._report(node)

    def split_kernel(self, node: str, g: np.ndarray, *, cmid: int, k1: int, k2: int, method: str,
                     max_iter: int = 1000, tol: float = 1e-10) -> tuple[np.ndarray, np.ndarray]:
        """Decompose kernel ``g`` of conv ``node`` with :func:`netmorph.solvers.split_kernel`."""
        from .. import solvers  # looked up at call time: the solver is a replaceable part

        self._report(node)
        t0 = time.perf_counter()
        try:
            res = solvers.split_kernel(
                g, cmid=cmid, k1=k1, k2=k2, method=method, seed=self.seed + len(self.solves),
                max_iter=max_iter, tol=tol,
            )
        except PreconditionError as e:
            raise PreconditionError(f"conv {node!r}: {e}") from None
        self._record(node, res, time.perf_counter() - t0)
        return np.asarray(res.f1), np.asarray(res.f2)

    def identity_split(self, node: str, channels: int, *, k1: int, k2: int,
                       scale: float) -> tuple[np.ndarray, np.ndarray]:
        """Factors composing to ``scale`` times the identity (dense, exact)."""
        from .. import solvers

        self._report(node)
        t0 = time.perf_counter()
        res = solvers.identity_split(
            channels, k1=k1, k2=k2, scale=scale, method="dense", seed=self.seed + len(self.solves)
        )
        self._record(node, res, time.perf_counter() - t0)
        return np.asarray(res.f1), np.asarray(res.f2)


class Pass:
    """Base class of morph passes. Subclasses set ``name``, ``summary``, ``option_specs``.

    Subclasses implement :meth:`requires` (raise :class:`PreconditionError`), :meth:`call`
    (rewrite the graph it is given, which is already a private clone), and optionally
    :meth:`ensures`. A pass whose numbers come from a solver overrides :attr:`contract` and
    :meth:`exact_variant`.
    """

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    option_specs: ClassVar[tuple[Option, ...]] = ()

    def __init__(self, **options: Any):
        specs = {o.name: o for o in self.option_specs}
        unknown = sorted(set(options) - set(specs))
        if unknown:
            known = ", ".join(specs) or "none"
            raise PreconditionError(
                f"pass {self.name!r} has no option {unknown[0]!r} (its options: {known})"
            )
        self.options: dict[str, Any] = {}
        for spec in self.option_specs:
            val = options.get(spec.name, spec.default)
            if val is not None and spec.type is not str and isinstance(val, str):
                try:
                    val = spec.type(val)
                except ValueError:
                    raise PreconditionError(
                        f"pass {self.name!r}: option {spec.name}={val!r} is not a {spec.type.__name__}"
                    ) from None
            if val is not None and spec.choices is not None and val not in spec.choices:
                choices = ", ".join(map(str, spec.choices))
                raise PreconditionError(
                    f"pass {self.name!r}: option {spec.name}={val!r} is not one of {choices}"
                )
            self.options[spec.name] = val

    # -- what subclasses provide ---------------------------------------------------------
    @property
    def contract(self) -> Contract:
        return Contract.exact()

    def requires(self, graph: Graph) -> None:
        """Raise :class:`PreconditionError` when the pass does not apply to ``graph``."""

    def call(self, graph: Graph, ctx: PassContext) -> None:
        raise NotImplementedError

    def ensures(self, graph: Graph) -> None:
        """Raise when the child does not have the promised shape (called after ``check``)."""

    def exact_variant(self) -> Pass | None:
        """The same pass with an exact solver (proves the surgery of an approximate pass)."""
        return None if not self.contract.is_exact else self

    # -- driver ------------------------------------------------------------------------
    def apply(self, graph: Graph, seed: int = 0, progress: ProgressFn | None = None
              ) -> tuple[Graph, PassReport]:
        """Run the pass on a clone of ``graph``: ``(child, report)``; ``graph`` is untouched."""
        t0 = time.perf_counter()
        child = graph.clone()
        if _needs_types(child):
            infer_types(child)
        self.requires(child)
        before = {n.name for n in child.nodes}
        ctx = PassContext(self, seed, progress)
        self.call(child, ctx)
        child.remove_unused_parameters()
        infer_types(child)
        child.check()
        self.ensures(child)
        _complete_lineage(self.name, graph, child, ctx)
        after = {n.name for n in child.nodes}
        report = PassReport(
            pass_name=self.name,
            options=dict(self.options),
            contract=self.contract,
            nodes_added=[n.name for n in child.nodes if n.name not in before],
            nodes_removed=sorted(before - after),
            params_before=graph.parameter_count(),
            params_after=child.parameter_count(),
            solves=ctx.solves,
            lineage=ctx.lineage,
            details=ctx.details,
        )
        report.seconds = time.perf_counter() - t0
        report.timings["solve"] = ctx.solve_seconds
        report.timings.update(ctx.timings)
        report.timings["surgery"] = report.seconds - ctx.solve_seconds - sum(ctx.timings.values())
        return child, report

    def describe(self) -> str:
        opts = ", ".join(f"{k}={v}" for k, v in self.options.items() if v is not None)
        return f"{self.name}({opts})"

    def __repr__(self) -> str:
        return f"<pass {self.describe()}>"


def _complete_lineage(name: str, parent: Graph, child: Graph, ctx: PassContext) -> None:
    """Record ``new`` for created parameters the pass left unrecorded; refuse a changed parameter
    without a record (its optimizer state could not follow it)."""
    before = {v.name: v.const for v in parent.parameters}
    for v in child.parameters:
        if v.name in ctx.lineage.records:
            continue
        old = before.get(v.name)
        if old is None:
            ctx.derive(v.name, "new", note="created by the pass")
        elif old is not v.const:
            from ..errors import VerificationError

            raise VerificationError(f"{name}: parameter {v.name!r} was changed without a lineage record")
    for stale in [k for k in ctx.lineage.records if not child.has_value(k)]:
        del ctx.lineage.records[stale]


def _needs_types(graph: Graph) -> bool:
    return any(o.type is None or o.type.shape is None for n in graph.nodes for o in n.outputs)
