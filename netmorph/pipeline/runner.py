"""Run a :class:`~netmorph.pipeline.spec.Pipeline`: grow, verify, train, write, repeat; then FixLearn.

Run directory layout::

    DIR/pipeline.toml            the resolved pipeline (re-run it with `netmorph run`)
    DIR/results.json             per-stage records, rewritten atomically after every stage
    DIR/stage_K.onnx             IterLearn stage K's trained model (K = 1, 2, ...)
    DIR/stage_K/init.onnx        the model stage K starts training from (grown and verified)
    DIR/stage_K/morph.json       the growth's full pass reports
    DIR/stage_K/metrics.jsonl    one JSON line per epoch; checkpoint.pt while training
    DIR/fixlearn/stage_K.onnx    the FixLearn baseline of stage K's architecture (and its folder)
    DIR/.netmorph-run            marker: this folder belongs to pipeline NAME (see run_folder)
    DIR/.netmorph-run.lock       locked while a run writes here
    DIR/.netmorph-files.json     SHA-256 of every stage file written (checked on resume)

A stage is finished once it has a record in ``results.json``. Resuming skips finished stages,
reuses ``init.onnx`` of an unfinished one and continues its training from its checkpoint. Before
anything is written, every folder and file of the layout is checked (no symlinked stage folder, no
special or hard-linked file, none that is the start model or the data); on resume every stage file is
checked against its recorded digest (see :mod:`netmorph.pipeline.run_folder`).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..atomic import atomic_write_text
from ..errors import NetmorphError
from .lr_policy import parse_lr_policy, stage_config
from .results import Results, StageRecord, finite_or_none
from .run_folder import RunFiles, claim, inside
from .spec import Pipeline, PipelineError, Start
from .toml_io import dumps_pipeline

OnStage = Callable[[StageRecord], object]
PIPELINE_NAME = "pipeline.toml"
RESUME_IGNORED_TRAIN_KEYS = ("device", "num_threads", "eval_batch_size", "compile", "channels_last")
"""``[train]`` keys that may change between an interrupted run and its resumption."""


def run_pipeline(
    pipeline: Pipeline,
    out_dir: str | Path,
    resume: bool = True,
    progress: bool = True,
    *,
    on_stage: OnStage | None = None,
    on_epoch: Callable[[dict], object] | None = None,
    baseline: bool = True,
) -> Results:
    """Run ``pipeline`` into ``out_dir`` and return its :class:`Results`.

    Parameters
    ----------
    pipeline
        What to run.
    out_dir
        The run directory (created); see the module docstring for its layout.
    resume
        Continue the run already in ``out_dir`` (finished stages are not redone; an unfinished
        stage continues from its training checkpoint). Its pipeline must be the same, except
        for device-like ``[train]`` keys and stages appended after the finished ones. With
        ``False`` an existing run in ``out_dir`` is an error (nothing is overwritten).
    progress
        Print one line per stage (and the trainer's progress) on stderr.
    on_stage
        Called with each finished stage's record after ``results.json`` is written; raising
        (``KeyboardInterrupt`` included) stops the run, which can then be resumed.
    on_epoch
        Passed to :func:`netmorph.train.fit` (return ``"stop"`` to stop after an epoch).
    baseline
        Run the pipeline's FixLearn baseline (when it has one) after the IterLearn stages.

    Raises
    ------
    PipelineError
        Bad spec, or ``out_dir`` holds a different run.
    netmorph.errors.VerificationError
        A growth failed its ONNX Runtime check (the stage is not written).
    """
    return _Run(pipeline, Path(out_dir), resume, progress, on_stage, on_epoch).execute(baseline)


class _Run:
    def __init__(self, pipeline: Pipeline, out: Path, resume: bool, progress: bool,
                 on_stage: OnStage | None, on_epoch: Callable[[dict], object] | None):
        self.pipeline, self.out, self.resume, self.progress = pipeline, out, resume, progress
        self.on_stage, self.on_epoch = on_stage, on_epoch
        self.results: Results | None = None

    def log(self, message: str) -> None:
        if self.progress:
            print(f"[{self.pipeline.name}] {message}", file=sys.stderr, flush=True)

    # -- driver ----------------------------------------------------------------------------
    def execute(self, baseline: bool) -> Results:
        folders, files = self.layout(baseline)
        self._check_inputs(files)
        with claim(self.out, self.pipeline.name, self.resume, (folders, files)):  # marker + lock
            return self._execute(baseline)

    def layout(self, baseline: bool) -> tuple[list[str], list[str]]:
        """Every folder and file (relative to the run folder) this run may write."""
        from ..train import CHECKPOINT_NAME, METRICS_NAME
        from .carry import CARRIED_NAME

        n = len(self.pipeline.stages)
        folders = [f"stage_{k}" for k in range(1, n + 1)]
        files = [PIPELINE_NAME, "results.json"]
        model = ["{}.onnx", "{}.onnx.data"]
        run = ["{}/init.onnx", "{}/init.onnx.data", f"{{}}/{METRICS_NAME}", f"{{}}/{CHECKPOINT_NAME}"]
        for d in folders:
            files += [f.format(d) for f in [*model, *run, "{}/morph.json", f"{{}}/{CARRIED_NAME}"]]
        if baseline and self.pipeline.baseline is not None:
            base = [f"fixlearn/stage_{k}" for k in range(1, n + 1)]
            folders += ["fixlearn", *base]
            files += [f.format(d) for d in base for f in [*model, *run]]
        return folders, files

    def _check_inputs(self, files: list[str]) -> None:
        """No file of the run may be the start model or the data (they would be replaced)."""
        from ..atomic import check_outputs
        from ..data import parse_data_spec

        start = self.pipeline.start.path
        check_outputs({}, {"start model": start, "data": parse_data_spec(self.pipeline.data).path},
                      run_files={f: self.out / f for f in files})

    def _execute(self, baseline: bool) -> Results:
        from ..data import parse_data_spec

        check_stages(self.pipeline)  # unknown passes or options fail now, not after stage 1 trained
        spec = parse_data_spec(self.pipeline.data)
        # synthetic data follows the start model's input shape when the start is an ONNX file
        model = start_graph(self.pipeline.start) if spec.kind == "synthetic" and \
            self.pipeline.start.path is not None else None
        self.train_data, self.test_data = spec.load(model)
        n = self.pipeline.train_subset
        if n is not None and n < len(self.train_data):
            import numpy as np

            pick = np.sort(np.random.default_rng(self.pipeline.seed).permutation(len(self.train_data))[:n])
            self.train_data = self.train_data.subset(pick, name=f"{self.train_data.name}[{n}]")
        self.pipeline = resolve(self.pipeline, self.train_data)
        self.results = self._open_results()
        atomic_write_text(self.out / PIPELINE_NAME, dumps_pipeline(self.pipeline))
        self.files.save()
        self.results.status = "running"
        self.results.save(self.out)
        try:
            stopped = self._iterlearn()
            if not stopped and baseline and self.pipeline.baseline is not None:
                stopped = self._fixlearn()
        except BaseException:
            self.results.status = "interrupted"
            self.results.save(self.out)
            raise
        self.results.status = "stopped" if stopped else "complete"
        self.results.save(self.out)
        self.log(f"{self.results.status}; results in {self.out / 'results.json'}")
        return self.results

    def _open_results(self) -> Results:
        fresh = Results(pipeline=self.pipeline.to_dict(), out_dir=self.out)
        self.files = RunFiles.open(self.out, (self.out / "results.json").exists())
        if not (self.out / "results.json").exists():
            return fresh
        if not self.resume:
            raise PipelineError(f"{self.out}: already holds a run (results.json); resume it or use another "
                                "out dir")
        old = Results.load(self.out)
        started = len(old.stages) + self.files.trusted(f"stage_{len(old.stages) + 1}/init.onnx")
        check_resumable(old.pipeline, self.pipeline.to_dict(), started, str(self.out))
        old.pipeline = self.pipeline.to_dict()
        old.stages = old.stages[: len(self.pipeline.stages)]
        for record in [*old.stages, *old.baseline]:  # a swapped stage model is refused, not continued
            inside(self.out, record.model, "stage model")
            self.files.trusted(record.model, required=True)
        self.log(f"resuming: {len(old.stages)} of {len(self.pipeline.stages)} stages done")
        return old

    # -- IterLearn ---------------------------------------------------------------------------
    def _iterlearn(self) -> bool:
        import netmorph

        p = self.pipeline
        done = len(self.results.stages)
        graph = None
        if done:
            graph = netmorph.load(inside(self.out, self.results.stages[-1].model, "stage model"))
        offset = sum(s.epochs for s in p.stages[:done])
        for k in range(done + 1, len(p.stages) + 1):
            stage = p.stages[k - 1]
            t0 = time.perf_counter()
            stage_dir = self.out / f"stage_{k}"
            stage_dir.mkdir(exist_ok=True)
            init_path = stage_dir / "init.onnx"
            morph_path = stage_dir / "morph.json"
            morph: dict[str, Any] | None = None
            reused = self.files.trusted(f"stage_{k}/init.onnx") and (
                stage.grow is None or self.files.trusted(f"stage_{k}/morph.json"))
            if reused:
                model_in = netmorph.load(init_path)  # an interrupted stage: same model, same checkpoint
                if stage.grow is not None:
                    morph = json.loads(morph_path.read_text(encoding="utf-8"))["summary"]
            else:
                if stage.grow is None:
                    model_in = start_graph(p.start) if graph is None else graph
                else:
                    if graph is None:
                        graph = start_graph(p.start)
                    self.log(f"stage {k}: growing with {stage.describe()}")
                    model_in, morph, raw = grow_stage(graph, stage, seed=p.seed + k, verify=p.verify)
                    reports = [r.to_dict() for r in raw]
                    atomic_write_text(morph_path, json.dumps({"summary": morph, "reports": reports}, indent=1,
                                                             default=str))
                    self.files.record(f"stage_{k}/morph.json")
                    if p.carry_optimizer:
                        self._carry(graph, model_in, raw, k)
                netmorph.save(model_in, init_path)
                self.files.record(f"stage_{k}/init.onnx")
            policy = p.stage_policy(k - 1)
            config = stage_config(p.train_config(), policy, epochs=stage.epochs, offset=offset,
                                  total=p.total_epochs, first=k == 1)
            config = config.replace(seed=config.seed + k - 1)
            depth, blocks = structure_of(model_in)
            shown = "the recipe" if k == 1 and policy != "continue" else policy
            self.log(f"stage {k}/{len(p.stages)}: depth {depth}, {model_in.parameter_count()} params, "
                     f"{stage.epochs} epochs at lr {config.lr:g} ({shown})")
            carried = self._carried(k) if p.carry_optimizer else None
            trained, metrics, stopped = self._train(model_in, config, stage_dir, carried, resume=reused)
            if stopped:
                return True
            offset += stage.epochs
            record = StageRecord(
                index=k, run="iterlearn", depth=depth, blocks_per_level=blocks,
                params=int(trained.parameter_count()), epochs=stage.epochs, cumulative_epochs=offset,
                lr=config.lr, lr_policy="recipe" if shown == "the recipe" else str(parse_lr_policy(policy)),
                morph=morph, morph_time_s=float(morph["seconds"]) if morph else 0.0,
                model=f"stage_{k}.onnx", metrics=f"stage_{k}/metrics.jsonl" if stage.epochs else None,
                **metrics,
            )
            netmorph.save(trained, self.out / record.model)
            self.files.record(record.model)
            record.wall_time_s = time.perf_counter() - t0
            self._finish(self.results.stages, record)
            graph = trained
        return False

    # -- FixLearn ----------------------------------------------------------------------------
    def _fixlearn(self) -> bool:
        import netmorph

        p, b = self.pipeline, self.pipeline.baseline
        n = len(p.stages)
        wanted = list(range(1, n + 1)) if b.depths == "all" else [n]
        done = {r.index for r in self.results.baseline}
        base_dir = self.out / "fixlearn"
        base_dir.mkdir(exist_ok=True)
        for k in wanted:
            if k in done:
                continue
            t0 = time.perf_counter()
            stage_dir = base_dir / f"stage_{k}"
            stage_dir.mkdir(exist_ok=True)
            init_path = stage_dir / "init.onnx"
            reused = self.files.trusted(f"fixlearn/stage_{k}/init.onnx")
            if reused:
                model_in = netmorph.load(init_path)
            else:
                self.files.trusted(f"stage_{k}.onnx", required=True)
                target = netmorph.load(self.out / f"stage_{k}.onnx")
                model_in = fixlearn_model(p.start, target, b.seed, what=f"FixLearn of stage {k}")
                netmorph.save(model_in, init_path)
                self.files.record(f"fixlearn/stage_{k}/init.onnx")
            epochs = b.epochs_for(p.stages, k - 1)
            config = p.train_config(epochs=epochs)
            config = config.replace(seed=config.seed + k - 1)
            depth, blocks = structure_of(model_in)
            self.log(f"FixLearn {k}: depth {depth} from scratch, {epochs} epochs")
            trained, metrics, stopped = self._train(model_in, config, stage_dir, resume=reused)
            if stopped:
                return True
            record = StageRecord(
                index=k, run="fixlearn", depth=depth, blocks_per_level=blocks,
                params=int(trained.parameter_count()), epochs=epochs, cumulative_epochs=epochs,
                lr=config.lr, lr_policy="scratch", model=f"fixlearn/stage_{k}.onnx",
                metrics=f"fixlearn/stage_{k}/metrics.jsonl" if epochs else None, **metrics,
            )
            netmorph.save(trained, self.out / record.model)
            self.files.record(record.model)
            record.wall_time_s = time.perf_counter() - t0
            self._finish(self.results.baseline, record)
        return False

    # -- carry_optimizer -----------------------------------------------------------------------
    def _carry(self, parent: Any, child: Any, reports: list, k: int) -> None:
        """Map stage ``k-1``'s final optimizer state onto stage ``k``'s model (before init.onnx)."""
        from ..train import CHECKPOINT_NAME
        from .carry import CARRIED_NAME, carry_stage_optimizer, save_carried

        ck = self.out / f"stage_{k - 1}" / CHECKPOINT_NAME
        state = carry_stage_optimizer(parent, child, reports, ck, self.pipeline.train_config())
        save_carried(self.out / f"stage_{k}", state)
        if state is not None:
            self.files.record(f"stage_{k}/{CARRIED_NAME}")
        else:
            self.files.forget(f"stage_{k}/{CARRIED_NAME}")
        self.log(f"stage {k}: optimizer state carried ({len(state['state']) if state else 0} parameters)")

    def _carried(self, k: int) -> dict | None:
        """Stage ``k``'s carried optimizer state, when this run wrote it (its digest checked)."""
        from .carry import CARRIED_NAME, load_carried

        if not self.files.trusted(f"stage_{k}/{CARRIED_NAME}"):
            return None
        return load_carried(self.out / f"stage_{k}")

    # -- shared ------------------------------------------------------------------------------
    def _train(self, graph: Any, config: Any, stage_dir: Path, initial_optimizer_state: dict | None = None,
               resume: bool = True) -> tuple[Any, dict[str, Any], bool]:
        """Train ``graph`` in ``stage_dir``; its checkpoint is continued only when ``resume`` (the stage's
        model is the one this run wrote, not a new one)."""
        import netmorph

        from ..train import CHECKPOINT_NAME, evaluate, fit

        module = netmorph.lower(graph)
        if config.epochs == 0:
            test_loss, test_err = evaluate(module, self.test_data, device=config.device,
                                           batch_size=config.eval_batch_size)
            return graph, {"test_err": test_err, "test_loss": test_loss}, False
        resume = resume and self.resume and (stage_dir / CHECKPOINT_NAME).exists()
        result = fit(module, self.train_data, self.test_data, config, out_dir=stage_dir,
                     resume=resume, progress=self.progress, on_epoch=self.on_epoch,
                     initial_optimizer_state=initial_optimizer_state)
        if result.stopped:
            return graph, {}, True
        module.to("cpu")
        trained = netmorph.write_back(graph, module)
        final = result.final
        metrics = {k: finite_or_none(final.get(k))
                   for k in ("train_err", "test_err", "train_loss", "test_loss", "test_err_lossless")}
        metrics["train_time_s"] = float(sum(r.get("seconds", 0.0) for r in result.history))
        return trained, metrics, False

    def _finish(self, records: list[StageRecord], record: StageRecord) -> None:
        records.append(record)
        self.results.save(self.out)
        err = "-" if record.test_err is None else f"{100 * record.test_err:.2f}%"
        self.log(f"{record.run} stage {record.index} done: depth {record.depth}, test error {err}")
        if self.on_stage is not None:
            self.on_stage(record)


def check_stages(pipeline: Pipeline) -> list[Any]:
    """Resolve every growth stage's pass and options (names, choices, numeric ranges) up front.

    Returns the pass instances; raises :class:`PipelineError` naming the stage.
    """
    from ..passes import get_pass

    passes = []
    for i, stage in enumerate(pipeline.stages, start=1):
        if stage.grow is None:
            continue
        options = dict(stage.options)
        if stage.solver is not None:
            options["solver"] = stage.solver
        try:
            passes.append(get_pass(stage.grow, **options))  # checked by the pass's declaration
        except NetmorphError as e:
            raise PipelineError(f"stage {i} ({stage.grow}): {str(e).splitlines()[0]}") from None
        except TypeError as e:
            raise PipelineError(f"stage {i} ({stage.grow}): bad options ({e})") from None
    return passes


def resolve(pipeline: Pipeline, train_data: Any) -> Pipeline:
    """Fill a builder start's ``classes`` / ``input_shape`` from the data set."""
    start = pipeline.start
    if start.family is None:
        return pipeline
    options = dict(start.options)
    options.setdefault("classes", int(train_data.num_classes))
    options.setdefault("input_shape", tuple(int(d) for d in _chw(train_data)))
    return pipeline.replace(start=Start(family=start.family, options=options))


def _chw(data: Any) -> tuple[int, int, int]:
    shape = tuple(data.images.shape[1:])
    return (shape[2], shape[0], shape[1]) if data.layout == "NHWC" else shape


def check_resumable(old: dict[str, Any], new: dict[str, Any], done: int, where: str) -> None:
    """Refuse to resume a run of a different pipeline (the message names the first difference).

    Only the first ``done`` stages (finished, or started: their grown model is on disk) must
    agree; later ones may be changed or appended.
    """
    def strip(d: dict[str, Any]) -> dict[str, Any]:
        d = json.loads(json.dumps(d, default=list))
        for key in RESUME_IGNORED_TRAIN_KEYS:
            d.get("train", {}).pop(key, None)
        d["stages"] = d.get("stages", [])[:done]
        return d

    a, b = strip(old), strip(new)
    for key in sorted(set(a) | set(b)):
        if a.get(key) != b.get(key):
            raise PipelineError(
                f"{where}: holds a run of a different pipeline ({key!r} differs: {a.get(key)!r} vs "
                f"{b.get(key)!r}); use another out dir"
            )


def start_graph(start: Start) -> Any:
    """The start model: the ONNX file, or :func:`netmorph.build` of the builder spec."""
    import netmorph

    from ..checks import check_finite

    if start.path is not None:
        return check_finite(netmorph.load(start.path), start.path)
    return netmorph.build(start.family, **start.options)


def structure_of(graph: Any) -> tuple[int | None, list[int] | None]:
    """``(depth, blocks per level)`` of a DynamicNet graph, or ``(None, None)``."""
    try:
        from ..structure import recognise

        st = recognise(graph)
    except (NetmorphError, ImportError):
        return None, None
    return int(st.depth), list(st.blocks_per_level)


def grow(graph: Any, stage: Any, *, seed: int, verify: bool = True) -> tuple[Any, dict[str, Any], list]:
    """Apply a stage's pass with the :class:`~netmorph.passes.PassManager` (verified in ONNX Runtime).

    Returns
    -------
    (child, summary, reports)
        The child graph, the summary stored in the stage record, the full pass reports (dicts).
    """
    child, summary, reports = grow_stage(graph, stage, seed=seed, verify=verify)
    return child, summary, [r.to_dict() for r in reports]


def grow_stage(graph: Any, stage: Any, *, seed: int, verify: bool = True) -> tuple[Any, dict[str, Any], list]:
    """:func:`grow` with the :class:`~netmorph.passes.PassReport` objects (their lineage included)."""
    from ..passes import PassManager, get_pass

    options = dict(stage.options)
    if stage.solver is not None:
        options["solver"] = stage.solver
    p = get_pass(stage.grow, **options)
    t0 = time.perf_counter()
    child, reports = PassManager(verify=verify, seed=seed).run(graph, [p])
    seconds = time.perf_counter() - t0
    ver = [r.verification for r in reports if r.verification]
    residuals = [r.max_residual for r in reports if r.max_residual is not None]
    summary = {
        "pass": stage.grow,
        "solver": p.options.get("solver", "exact") if "solver" in p.options else None,
        "options": {k: v for k, v in p.options.items() if v is not None},
        "contract": reports[-1].contract.to_dict() if reports else None,
        "verified": bool(ver) and all(v["ok"] for v in ver),
        "max_abs": max((float(v["max_abs"]) for v in ver), default=None),
        "max_rel": max((float(v["max_rel"]) for v in ver), default=None),
        "max_residual": finite_or_none(max(residuals)) if residuals else None,
        "depth_before": reports[0].depth_before if reports else None,
        "depth_after": reports[-1].depth_after if reports else None,
        "params_before": reports[0].params_before if reports else None,
        "params_after": reports[-1].params_after if reports else None,
        "seconds": seconds,
    }
    return child, summary, reports


def fixlearn_model(start: Start, target: Any, seed: int | None = None, what: str = "FixLearn") -> Any:
    """A from-scratch DynamicNet with ``target``'s architecture (family, levels, blocks per level).

    For a builder start the start's build options are kept and only ``blocks`` changes; for an
    ONNX start the options come from the file's ``netmorph.*`` metadata (written by
    :func:`netmorph.build`). The rebuilt model's depth must equal ``target``'s.
    """
    import netmorph

    try:
        from ..structure import recognise

        st = recognise(target)
    except ImportError as e:  # pragma: no cover - structure is part of the package
        raise PipelineError(f"FixLearn needs structure recognition ({e})") from None
    blocks = set(st.blocks_per_level)
    if len(blocks) != 1:
        raise PipelineError(f"{what}: the levels have different block counts {st.blocks_per_level}; "
                            "netmorph.build makes equal levels only")
    if start.family is not None:
        family, options = start.family, dict(start.options)
    else:
        family, options = st.family, _options_from_metadata(target)
    options["blocks"] = blocks.pop()
    if seed is not None:
        options["seed"] = seed
    model = netmorph.build(family, **options)
    depth, _ = structure_of(model)
    if depth != st.depth:
        raise PipelineError(f"{what}: the rebuilt {family} model has depth {depth}, the target {st.depth}")
    return model


def _options_from_metadata(graph: Any) -> dict[str, Any]:
    meta = dict(getattr(graph, "metadata_props", None) or [])
    if "netmorph.family" not in meta:
        raise PipelineError("FixLearn from an ONNX start needs a model built by netmorph (no netmorph.* "
                            "metadata); start from a builder spec instead")
    options: dict[str, Any] = {
        "levels": int(meta["netmorph.levels"]),
        "channels": tuple(int(c) for c in meta["netmorph.channels"].split(",")),
        "stem": meta.get("netmorph.stem"),
    }
    if meta["netmorph.family"] == "resnet":
        options["residual_ratio"] = float(meta.get("netmorph.residual_ratio", 1.0))
    x, y = graph.inputs[0], graph.outputs[0]
    options["input_shape"] = tuple(int(d) for d in x.type.shape[1:])
    options["classes"] = int(y.type.shape[-1])
    return options
