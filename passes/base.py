"""The pass protocol: ``Pass``, its ``Contract``, the ``PassReport`` it returns.

A pass is a small object with a ``name``, ``options`` validated against its declaration
(:class:`Option`), a ``contract`` (exact, or approximate with a bound), ``requires(graph)``
(preconditions, raising :class:`~netmorph.errors.PreconditionError` that names the node and the
reason; it returns the plan), the work (``call(graph, ctx, plan)``), and ``ensures(child, plan)``
(postconditions). ``apply(graph)`` plans once, checks the child's estimated size, and runs the
work on a clone: a pass never mutates its input.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any, ClassVar

import numpy as np

from ..errors import PreconditionError
from ..ir import Graph
from ..ir.infer import infer_types
from ..limits import LimitError, check_float, check_int
from ..morphs.lineage import Lineage, ParamLineage

ProgressFn = Callable[[str, int, int, str], None]
"""``progress(pass_name, done, total, item)``: called before and after each solved conv."""

__all__ = [
    "Contract", "ConvSolve", "Option", "OptionError", "Pass", "PassContext", "PassReport",
    "PreconditionError", "ProgressFn", "check_child_bytes", "parameter_bytes",
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


class OptionError(PreconditionError, LimitError):
    """A pass option is unknown, of the wrong type, out of its bounds, empty or not among its choices
    (both a :class:`PreconditionError` and a :class:`~netmorph.limits.LimitError`)."""


@dataclass(frozen=True)
class Option:
    """One option of a pass, declared once: the CLI flag, the TOML key, the API keyword and the checks
    of ``netmorph grow``, ``netmorph run`` and ``netmorph.torch.grow`` all come from it.

    ``type`` is ``int``, ``float`` or ``str``; ``low`` / ``high`` bound a number (``low_open``:
    strictly above ``low``; ``high`` of a size is a documented limit of :mod:`netmorph.limits`);
    ``choices`` lists the values a string may take; ``required``: the pass cannot run without it;
    ``aliases`` are further CLI spellings (``--from`` for ``from_kernel``). A string option is never
    empty; a number is always finite.
    """

    name: str
    type: type
    default: Any = None
    help: str = ""
    choices: tuple[Any, ...] | None = None
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    required: bool = False
    aliases: tuple[str, ...] = ()

    @property
    def flag(self) -> str:
        """The CLI flag (``--mid-bn`` for ``mid_bn``)."""
        return "--" + self.name.replace("_", "-")

    def replace(self, **changes: Any) -> Option:
        """A copy with some fields changed (a subclass pass that makes ``level`` required)."""
        return replace(self, **changes)

    def bounds(self) -> str:
        """The accepted range in words (``1..65536``, ``> 1``, ``>= 0``), ``""`` for an unbounded one."""
        if self.low is None and self.high is None:
            return ""

        def num(x: float) -> str:
            return f"{int(x):,}" if self.type is int else f"{x:g}"

        if self.high is None:
            return f"{'>' if self.low_open else '>='} {num(self.low)}"
        if self.low is None:
            return f"<= {num(self.high)}"
        if self.low_open:
            return f"> {num(self.low)}, <= {num(self.high)}"
        return f"{num(self.low)}..{num(self.high)}"

    def parse(self, value: Any, where: str) -> Any:
        """``value`` converted to :attr:`type` and checked (``None`` stays ``None``).

        Strings are converted (CLI flags, environment-free TOML strings); integers are accepted for a
        string option (``level = 2`` in TOML). Raises :class:`PreconditionError` /
        :class:`~netmorph.limits.LimitError` naming ``where`` and the option.
        """
        try:
            return self._parse(value, where)
        except LimitError as e:
            raise OptionError(str(e)) from None

    def _parse(self, value: Any, where: str) -> Any:
        if value is None:
            return None
        label = f"{where}: option {self.name}"
        if self.type is str:
            if isinstance(value, int) and not isinstance(value, bool):
                value = str(value)
            if not isinstance(value, str):
                raise OptionError(f"{label} must be a string, got {value!r}")
            if not value.strip():
                raise OptionError(f"{label} is empty (give a value or leave the option out)")
        elif self.type in (int, float):
            if isinstance(value, str):
                text = value.strip()
                try:
                    value = int(text) if self.type is int and text.lstrip("+-").isdigit() else float(text)
                except ValueError:
                    kind = "an integer" if self.type is int else "a number"
                    raise OptionError(f"{label} must be {kind}, got {value!r}") from None
            if self.type is int:
                value = check_int(label, value, None if self.low is None else int(self.low),
                                  None if self.high is None else int(self.high))
                if self.low_open and self.low is not None and value <= self.low:
                    raise OptionError(f"{label} must be > {self.low:g}, got {value}")
            else:
                value = check_float(label, value, self.low, self.high, low_open=self.low_open)
        if self.choices is not None and value not in self.choices:
            raise OptionError(f"{label}={value!r} is not one of {', '.join(map(str, self.choices))}")
        return value

    def to_dict(self) -> dict[str, Any]:
        """The declaration as plain data (``netmorph passes --json``)."""
        return {"name": self.name, "flag": self.flag, "type": self.type.__name__, "default": self.default,
                "help": self.help, "choices": list(self.choices) if self.choices else None,
                "min": self.low, "max": self.high, "min_exclusive": self.low_open, "range": self.bounds(),
                "required": self.required, "aliases": ["--" + a.replace("_", "-") for a in self.aliases]}


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

    Subclasses implement :meth:`requires` (check the preconditions and return the *plan*: what the
    pass will do, found once; raise :class:`PreconditionError`), :meth:`call` (rewrite the graph
    it is given, a private clone, following the plan), optionally :meth:`ensures` (postconditions,
    given the plan too) and :meth:`child_bytes` (the child's parameter bytes, estimated from the
    plan before anything is allocated). Nothing is kept on the pass object between the three: one
    pass object may be applied to many graphs. A pass whose numbers come from a solver overrides
    :attr:`contract` and :meth:`exact_variant`.

    ``option_specs`` declares every option once (:class:`Option`); ``one_of`` names options that
    exclude each other (``("node", "level")``, or several such groups: give at most one of a group;
    when none is given the declared defaults apply, e.g. ``level="all"``). Unknown options, values
    of the wrong type, out of their bounds or not among their choices are refused when the pass is
    made.
    """

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    option_specs: ClassVar[tuple[Option, ...]] = ()
    one_of: ClassVar[tuple[Any, ...]] = ()

    def __init__(self, **options: Any):
        specs = {o.name: o for o in self.option_specs}
        unknown = sorted(set(options) - set(specs))
        if unknown:
            known = ", ".join(specs) or "none"
            raise OptionError(f"pass {self.name!r} has no option {unknown[0]!r} (its options: {known})")
        given = {k: specs[k].parse(v, self.name) for k, v in options.items() if v is not None}
        unset: set[str] = set()  # options of a one_of group where another one was given
        for group in self.exclusive_groups():
            chosen = [k for k in group if k in given]
            if len(chosen) > 1:
                flags = " or ".join(specs[k].flag for k in group)
                raise OptionError(f"{self.name}: give one of {flags}, not both")
            if chosen:
                unset |= set(group) - set(chosen)
        self.given: frozenset[str] = frozenset(given)
        """The options given explicitly (the rest hold their declared defaults)."""
        self.options: dict[str, Any] = {}
        for spec in self.option_specs:
            if spec.name in given:
                self.options[spec.name] = given[spec.name]
            else:
                self.options[spec.name] = None if spec.name in unset else spec.default
            if spec.required and self.options[spec.name] is None:
                raise OptionError(f"{self.name}: option {spec.name} is required ({spec.flag}: {spec.help})")

    def check_options(self) -> None:
        """Check :attr:`options` against the declarations again (a caller may have changed them)."""
        specs = {o.name: o for o in self.option_specs}
        for k, v in self.options.items():
            if k not in specs:
                raise OptionError(f"pass {self.name!r} has no option {k!r}")
            specs[k].parse(v, self.name)

    @classmethod
    def exclusive_groups(cls) -> list[tuple[str, ...]]:
        """``one_of`` as a list of groups (one group may be given flat: ``("node", "level")``)."""
        if not cls.one_of:
            return []
        return [tuple(g) for g in cls.one_of] if isinstance(cls.one_of[0], tuple) else [tuple(cls.one_of)]

    @classmethod
    def option(cls, name: str) -> Option | None:
        """The declaration of option ``name``, or ``None``."""
        return next((o for o in cls.option_specs if o.name == name), None)

    @classmethod
    def default_contract(cls) -> Contract:
        """The contract with every option at its default (``netmorph passes``)."""
        p = cls.__new__(cls)
        p.given = frozenset()
        p.options = {o.name: o.default for o in cls.option_specs}
        return p.contract

    # -- what subclasses provide ---------------------------------------------------------
    @property
    def contract(self) -> Contract:
        return Contract.exact()

    def requires(self, graph: Graph) -> Any:
        """The plan of this pass on ``graph``; raise :class:`PreconditionError` when it does not apply."""
        return None

    def call(self, graph: Graph, ctx: PassContext, plan: Any) -> None:
        raise NotImplementedError

    def ensures(self, graph: Graph, plan: Any) -> None:
        """Raise when the child does not have the promised shape (called after ``check``)."""

    def child_bytes(self, graph: Graph, plan: Any) -> int | None:
        """The child's parameter bytes, estimated from ``plan`` before the surgery allocates them;
        ``None``: the pass adds at most about its parent's size (not checked)."""
        return None

    def exact_variant(self) -> Pass | None:
        """The same pass with an exact solver (proves the surgery of an approximate pass)."""
        return None if not self.contract.is_exact else self

    # -- driver ------------------------------------------------------------------------
    def plan(self, graph: Graph) -> Any:
        """``requires(graph)`` followed by the size check (``graph`` must have its types)."""
        plan = self.requires(graph)
        check_child_bytes(self.name, self.child_bytes(graph, plan), parameter_bytes(graph))
        return plan

    def apply(self, graph: Graph, seed: int = 0, progress: ProgressFn | None = None
              ) -> tuple[Graph, PassReport]:
        """Run the pass on a clone of ``graph``: ``(child, report)``; ``graph`` is untouched."""
        t0 = time.perf_counter()
        child = graph.clone()
        if _needs_types(child):
            infer_types(child)
        before = {n.name for n in child.nodes}
        t1 = time.perf_counter()
        plan = self.plan(child)
        ctx = PassContext(self, seed, progress)
        ctx.timings["recognise"] = time.perf_counter() - t1
        self.call(child, ctx, plan)
        child.remove_unused_parameters()
        infer_types(child)
        child.check()
        self.ensures(child, plan)
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
        """``name(option=value, …)`` with the options given explicitly (defaults go unsaid)."""
        opts = ", ".join(f"{k}={v}" for k, v in self.options.items() if v is not None and k in self.given)
        return f"{self.name}({opts})"

    def __repr__(self) -> str:
        return f"<pass {self.describe()}>"


def parameter_bytes(graph: Graph) -> int:
    """Bytes of every parameter of ``graph`` (the baseline of :meth:`Pass.child_bytes` estimates)."""
    return sum(int(v.const.nbytes) for v in graph.parameters if v.const is not None)


def check_child_bytes(name: str, estimate: int | None, parent: int) -> None:
    """Refuse a child whose estimated parameter bytes exceed its parent's by more than
    :func:`netmorph.limits.max_growth_bytes`."""
    if estimate is None:
        return
    from ..limits import max_growth_bytes

    limit = max_growth_bytes(parent)
    if estimate - parent > limit:
        raise LimitError(
            f"{name}: the child would hold about {_size(estimate)} of parameters ({_size(estimate - parent)} "
            f"more than its parent), above the limit of {_size(limit)} added by one pass "
            "(NETMORPH_MAX_GROWTH_BYTES raises it)"
        )


def _size(n: float) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:,.1f} {unit}"
    return f"{int(n)} bytes"


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
