"""What a pipeline is: :class:`Pipeline` = start model + data + :class:`Stage` list (+ baseline).

A pipeline is plain data. It converts to and from a dict (:meth:`Pipeline.to_dict`,
:meth:`Pipeline.from_dict`), which is also its TOML form (see :mod:`netmorph.pipeline.toml_io`)::

    name = "plainnet"
    data = "cifar10:/data/cifar10"
    lr_policy = "restart"

    [start]                 # or: path = "start.onnx"
    family = "plain"
    blocks = 2

    [train]                 # netmorph.train.TrainConfig fields (epochs come from the stages)
    batch_size = 256

    [baseline]              # optional: FixLearn, the same architectures trained from scratch
    budget = "stage"

    [[stages]]
    epochs = 320

    [[stages]]
    epochs = 320
    grow = "deepen"
    solver = "optgd"
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, fields
from typing import Any

from ..errors import NetmorphError
from ..limits import MAX_EPOCHS, MAX_SEED, MAX_STAGES
from .lr_policy import parse_lr_policy

FORMAT = "netmorph-pipeline/1"
BASELINE_KINDS = ("fixlearn",)
BASELINE_BUDGETS = ("stage", "total")
BASELINE_DEPTHS = ("all", "final")
TRAIN_KEYS_FROM_STAGES = ("epochs",)
"""TrainConfig fields a pipeline sets per stage (not allowed in ``[train]``)."""


class PipelineError(NetmorphError):
    """A pipeline spec or a run directory is invalid; the message names the key or file and why."""


def _check_keys(data: Any, allowed: tuple[str, ...], where: str) -> dict:
    if not isinstance(data, dict):
        raise PipelineError(f"{where}: expected a table, got {type(data).__name__}")
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        raise PipelineError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(allowed)})")
    return data


def _no_none(table: Any, where: str) -> dict:
    """A copy of ``table`` without ``None`` values (TOML has no null: ``None`` means the default)."""
    if not isinstance(table, dict):
        raise PipelineError(f"{where}: expected a table, got {type(table).__name__}")
    return {k: v for k, v in table.items() if v is not None}


def _int(value: Any, where: str, low: int = 0, high: int = MAX_SEED) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise PipelineError(f"{where}: expected an integer >= {low}, got {value!r}")
    if value > high:
        raise PipelineError(f"{where}: {value:,} is above the limit of {high:,}")
    return value


def _str(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise PipelineError(f"{where}: expected a non-empty string, got {value!r}")
    return value.strip()


SAFE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._ +-]{0,99}$")


def safe_name(value: Any, where: str = "name") -> str:
    """A pipeline name usable as one folder name (``runs/<name>``): letters, digits, ``._ +-``,
    not starting with a dot or dash, at most 100 characters."""
    text = _str(value, where)
    if not SAFE_NAME.match(text) or text.endswith((" ", ".")):
        raise PipelineError(f"{where}: {text[:60]!r} is not a safe folder name (letters, digits, '._ +-', "
                            "at most 100, not starting with '.' or '-')")
    return text


def _choice(value: Any, choices: tuple[str, ...], where: str) -> str:
    if value not in choices:
        raise PipelineError(f"{where}: expected one of {', '.join(choices)}, got {value!r}")
    return value


def _policy(value: Any, where: str) -> str:
    try:
        parsed = parse_lr_policy(value)
    except NetmorphError as e:
        raise PipelineError(f"{where}: {e}") from None
    for what, number in (("LR", parsed.lr), ("EPOCHS", parsed.warmup)):
        if number is not None and not math.isfinite(number):
            raise PipelineError(f"{where}: lr policy {value!r}: {what} must be finite")
    return str(value)


@dataclass(frozen=True)
class Start:
    """The starting model: an ONNX file (``path``) or a DynamicNet builder spec.

    Attributes
    ----------
    path
        An ONNX model to start from (relative paths are relative to the pipeline file).
    family
        ``"plain"`` or ``"resnet"`` when the model is built (:func:`netmorph.build`).
    options
        Further :func:`netmorph.build` arguments: ``blocks``, ``residual_ratio``, ``seed``,
        ``levels``, ``channels``, ``classes``, ``input_shape``, ``stem`` …; ``classes`` and
        ``input_shape`` default to the data set's.
    """

    path: str | None = None
    family: str | None = None
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "options", _no_none(self.options, "[start]"))
        if (self.path is None) == (self.family is None):
            raise PipelineError(
                "[start]: give exactly one of 'path' (an ONNX file) or 'family' (plain/resnet)"
            )
        if self.path is not None and self.options:
            raise PipelineError(f"[start]: builder options {sorted(self.options)} need 'family', not 'path'")
        if self.family is not None:
            from ..dynamicnet import make_config

            try:
                make_config(self.family, **self.options)
            except TypeError as e:
                raise PipelineError(f"[start]: {e}") from None
            except NetmorphError as e:
                raise PipelineError(f"[start]: {e}") from None

    def to_dict(self) -> dict[str, Any]:
        if self.path is not None:
            return {"path": self.path}
        return {"family": self.family, **self.options}

    @classmethod
    def from_dict(cls, data: Any) -> Start:
        if not isinstance(data, dict):
            raise PipelineError(f"[start]: expected a table, got {type(data).__name__}")
        rest = {k: v for k, v in data.items() if k not in ("path", "family")}
        path = data.get("path")
        if path is not None:
            path = _str(path, "[start].path")
        family = data.get("family")
        if family is not None:
            family = _str(family, "[start].family")
        for key in ("input_shape", "channels"):
            if isinstance(rest.get(key), list):
                rest[key] = tuple(rest[key])
        return cls(path=path, family=family, options=rest)

    def describe(self) -> str:
        if self.path is not None:
            return self.path
        opts = ", ".join(f"{k}={v}" for k, v in self.options.items())
        return f"{self.family}({opts})"


@dataclass(frozen=True)
class Stage:
    """One stage: optionally grow the model (a morph pass), then train it for ``epochs``.

    Attributes
    ----------
    epochs
        Training epochs of this stage (0: grow only).
    grow
        Name of a registered pass (``deepen``, ``deepen-level``, ``duplicate-block`` …) applied,
        verified in ONNX Runtime, before training; ``None`` for no growth (the first stage).
    solver
        Kernel solver of the pass (``exact``, ``optgd``, ``lsq``); ``None``: the pass's default.
    options
        Further pass options (``level``, ``cmid``, ``max_iter`` …): the keys and values the pass
        declares (``netmorph passes``), checked when the stage is made.
    lr_policy
        Learning-rate policy of this stage; ``None``: the pipeline's (see :mod:`~.lr_policy`).
    """

    epochs: int
    grow: str | None = None
    solver: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    lr_policy: str | None = None

    KEYS = ("epochs", "grow", "solver", "options", "lr_policy")

    def __post_init__(self) -> None:
        object.__setattr__(self, "options", _no_none(self.options, "stage options"))
        _int(self.epochs, "stage epochs", high=MAX_EPOCHS)
        if self.grow is None and (self.solver is not None or self.options):
            raise PipelineError("a stage without 'grow' cannot have 'solver' or 'options'")
        if self.grow is not None:
            self.make_pass()  # names, types, bounds and choices: the pass's own declaration
        if self.lr_policy is not None:
            _policy(self.lr_policy, "stage lr_policy")

    def make_pass(self) -> Any:
        """The stage's pass with its options (``solver`` included), checked by the pass's declaration
        (:class:`netmorph.passes.Option`); a :class:`PipelineError` naming the pass otherwise."""
        from ..passes import get_pass

        options = dict(self.options)
        if self.solver is not None:
            options["solver"] = self.solver
        try:
            return get_pass(self.grow, **options)
        except NetmorphError as e:
            raise PipelineError(f"{self.grow}: {str(e).splitlines()[0]}") from None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"epochs": self.epochs}
        if self.grow is not None:
            d["grow"] = self.grow
        if self.solver is not None:
            d["solver"] = self.solver
        if self.options:
            d["options"] = dict(self.options)
        if self.lr_policy is not None:
            d["lr_policy"] = self.lr_policy
        return d

    @classmethod
    def from_dict(cls, data: Any, where: str = "[[stages]]") -> Stage:
        data = _check_keys(data, cls.KEYS, where)
        if "epochs" not in data:
            raise PipelineError(f"{where}: missing 'epochs'")
        options = data.get("options", {})
        if not isinstance(options, dict):
            raise PipelineError(f"{where}.options: expected a table, got {type(options).__name__}")
        try:
            return cls(
                epochs=_int(data["epochs"], f"{where}.epochs", high=MAX_EPOCHS),
                grow=None if data.get("grow") is None else _str(data["grow"], f"{where}.grow"),
                solver=None if data.get("solver") is None else _str(data["solver"], f"{where}.solver"),
                options=dict(options),
                lr_policy=None if data.get("lr_policy") is None else _policy(data["lr_policy"],
                                                                              f"{where}.lr_policy"),
            )
        except PipelineError as e:
            msg = str(e)
            raise PipelineError(msg if msg.startswith(where) else f"{where}: {msg}") from None

    def describe(self) -> str:
        if self.grow is None:
            return f"train {self.epochs} epochs"
        opts = dict(self.options)
        if self.solver is not None:
            opts["solver"] = self.solver
        shown = ", ".join(f"{k}={v}" for k, v in opts.items())
        return f"{self.grow}({shown}) + train {self.epochs} epochs"


@dataclass(frozen=True)
class Baseline:
    """The FixLearn baseline: each stage's architecture (or only the final one) trained from scratch.

    Attributes
    ----------
    kind
        ``"fixlearn"``.
    budget
        ``"stage"`` (default, the paper): as many epochs as IterLearn gave the stage of that
        depth. ``"total"``: the cumulative epochs IterLearn spent up to and including that stage.
    epochs
        An explicit epoch count for every baseline run (wins over ``budget``); e.g. the full
        320 epochs when IterLearn uses the "half" schedule (Table 3).
    depths
        ``"all"`` (one run per IterLearn stage: Fig. 2c / Table 1) or ``"final"`` (the target only).
    seed
        Initialisation seed of the from-scratch models (default: the start model's).
    """

    kind: str = "fixlearn"
    budget: str = "stage"
    epochs: int | None = None
    depths: str = "all"
    seed: int | None = None

    KEYS = ("kind", "budget", "epochs", "depths", "seed")

    def __post_init__(self) -> None:
        _choice(self.kind, BASELINE_KINDS, "[baseline].kind")
        _choice(self.budget, BASELINE_BUDGETS, "[baseline].budget")
        _choice(self.depths, BASELINE_DEPTHS, "[baseline].depths")
        if self.epochs is not None:
            _int(self.epochs, "[baseline].epochs", high=MAX_EPOCHS)
        if self.seed is not None:
            _int(self.seed, "[baseline].seed")

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"kind": self.kind, "budget": self.budget, "depths": self.depths}
        if self.epochs is not None:
            d["epochs"] = self.epochs
        if self.seed is not None:
            d["seed"] = self.seed
        return d

    @classmethod
    def from_dict(cls, data: Any) -> Baseline:
        data = _check_keys(data, cls.KEYS, "[baseline]")
        return cls(**data)

    def epochs_for(self, stages: tuple[Stage, ...], index: int) -> int:
        """Epochs of the baseline run matching IterLearn stage ``index`` (0-based)."""
        if self.epochs is not None:
            return self.epochs
        if self.budget == "total":
            return sum(s.epochs for s in stages[: index + 1])
        return stages[index].epochs


@dataclass(frozen=True)
class Pipeline:
    """A network iterative learning run, written down.

    Attributes
    ----------
    start
        The starting model (:class:`Start`).
    data
        A data spec (``synthetic[:N]``, ``cifar10:PATH``, ``cifar100:PATH``, ``npz:PATH``).
    stages
        The stages in order; the first normally has no ``grow``.
    train
        :class:`netmorph.train.TrainConfig` fields shared by every stage (not ``epochs``).
    lr_policy
        Default learning-rate policy of the stages after the first (``restart``,
        ``restart:LR``, ``continue``, ``warmup:E[:LR]``; see :mod:`~.lr_policy`).
    seed
        Seed of the morph solvers and of each stage's training (stage ``k`` uses ``seed + k``).
    baseline
        The FixLearn baseline to run after the stages, or ``None``.
    name
        A label for logs and plots.
    verify
        Verify every morph in ONNX Runtime (the :class:`~netmorph.passes.PassManager` default).
    train_subset
        Train on a seeded random subset of this many training images (``None``: all); the
        test split is used whole. For scaled-down reproductions.
    carry_optimizer
        Carry the optimizer state (momentum buffers, Adam moments and step) of each stage
        into the next one through the growth's parameter lineage, instead of starting the
        grown model's optimizer afresh (see ``docs/torch.md``).
    """

    start: Start
    data: str
    stages: tuple[Stage, ...]
    train: dict[str, Any] = field(default_factory=dict)
    lr_policy: str = "restart"
    seed: int = 0
    baseline: Baseline | None = None
    name: str = "pipeline"
    verify: bool = True
    train_subset: int | None = None
    carry_optimizer: bool = False

    KEYS = ("format", "name", "data", "train_subset", "seed", "lr_policy", "verify", "carry_optimizer",
            "start", "train", "baseline", "stages")

    def __post_init__(self) -> None:
        object.__setattr__(self, "stages", tuple(self.stages))
        object.__setattr__(self, "train", _no_none(self.train, "[train]"))
        if not isinstance(self.start, Start):
            raise PipelineError("start must be a Start")
        if not self.stages:
            raise PipelineError("a pipeline needs at least one stage")
        if len(self.stages) > MAX_STAGES:
            raise PipelineError(f"stages: {len(self.stages):,} stages, above the limit of {MAX_STAGES:,}")
        for i, s in enumerate(self.stages):
            if not isinstance(s, Stage):
                raise PipelineError(f"stage {i + 1} is not a Stage")
        _str(self.data, "data")
        safe_name(self.name, "name")
        _int(self.seed, "seed")
        if self.train_subset is not None:
            _int(self.train_subset, "train_subset", low=1)
        _policy(self.lr_policy, "lr_policy")
        if not isinstance(self.verify, bool):
            raise PipelineError(f"verify: expected true or false, got {self.verify!r}")
        if not isinstance(self.carry_optimizer, bool):
            raise PipelineError(f"carry_optimizer: expected true or false, got {self.carry_optimizer!r}")
        from ..data import parse_data_spec

        try:
            parse_data_spec(self.data)
        except NetmorphError as e:
            raise PipelineError(f"data: {e}") from None
        self.train_config(epochs=0)  # validates [train]

    # -- derived -------------------------------------------------------------------------
    def train_config(self, **changes: Any):
        """The :class:`~netmorph.train.TrainConfig` of ``[train]`` with ``changes`` applied."""
        from ..train.config import TrainConfig

        if not isinstance(self.train, dict):
            raise PipelineError(f"[train]: expected a table, got {type(self.train).__name__}")
        names = {f.name for f in fields(TrainConfig)}
        for key in self.train:
            if key in TRAIN_KEYS_FROM_STAGES:
                raise PipelineError(f"[train].{key}: set per stage, not in [train]")
            if key not in names:
                known = ", ".join(sorted(names - set(TRAIN_KEYS_FROM_STAGES)))
                raise PipelineError(f"[train]: unknown key {key!r} (known: {known})")
        try:
            return TrainConfig(**{**self.train, **changes})
        except (NetmorphError, TypeError) as e:
            raise PipelineError(f"[train]: {e}") from None

    def stage_policy(self, index: int) -> str:
        """The learning-rate policy of stage ``index`` (0-based)."""
        return self.stages[index].lr_policy or self.lr_policy

    @property
    def total_epochs(self) -> int:
        return sum(s.epochs for s in self.stages)

    def replace(self, **changes: Any) -> Pipeline:
        """A copy with some fields changed (validated again)."""
        return Pipeline(**{**{f.name: getattr(self, f.name) for f in fields(self)}, **changes})

    # -- plain data ----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "format": FORMAT, "name": self.name, "data": self.data, "train_subset": self.train_subset,
            "seed": self.seed,
            "lr_policy": self.lr_policy, "verify": self.verify,
            "start": self.start.to_dict(), "train": dict(self.train),
        }
        if self.carry_optimizer:  # written only when set: runs made before the key resume unchanged
            d["carry_optimizer"] = True
        if self.baseline is not None:
            d["baseline"] = self.baseline.to_dict()
        d["stages"] = [s.to_dict() for s in self.stages]
        return d

    @classmethod
    def from_dict(cls, data: Any) -> Pipeline:
        data = _check_keys(data, cls.KEYS, "pipeline")
        fmt = data.get("format", FORMAT)
        if fmt != FORMAT:
            raise PipelineError(f"format: expected {FORMAT!r}, got {fmt!r}")
        for key in ("data", "start", "stages"):
            if key not in data:
                raise PipelineError(f"missing {key!r}")
        stages = data["stages"]
        if not isinstance(stages, list):
            raise PipelineError("stages: expected an array of tables ([[stages]])")
        train = data.get("train", {})
        if not isinstance(train, dict):
            raise PipelineError(f"[train]: expected a table, got {type(train).__name__}")
        train = {k: tuple(v) if isinstance(v, list) else v for k, v in train.items()}
        baseline = data.get("baseline")
        return cls(
            start=Start.from_dict(data["start"]),
            data=_str(data["data"], "data"),
            stages=tuple(Stage.from_dict(s, f"stages[{i + 1}]") for i, s in enumerate(stages)),
            train=train,
            lr_policy=data.get("lr_policy", "restart"),
            seed=data.get("seed", 0),
            baseline=None if baseline is None else Baseline.from_dict(baseline),
            name=safe_name(data.get("name", "pipeline"), "name"),
            verify=data.get("verify", True),
            train_subset=data.get("train_subset"),
            carry_optimizer=data.get("carry_optimizer", False),
        )
