"""Plots of a run directory (matplotlib, Agg; no display needed).

* :func:`plot_error_vs_depth` — test error against depth for IterLearn and FixLearn (the paper's
  Fig. 2c): the gap where IterLearn is better is shaded, dashed lines mark each scheme's best.
* :func:`plot_error_vs_epochs` — IterLearn's train/test error against cumulative epochs with the
  growth points marked (Fig. 2e).
* :func:`plot_run` writes both as PNG files.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..atomic import atomic_path
from .results import Results
from .spec import PipelineError

ITER_COLOUR, FIX_COLOUR, GAIN_COLOUR = "#c2185b", "#1f77b4", "#e8a0d0"
DEPTH_PLOT, CURVE_PLOT = "error_vs_depth.png", "error_vs_epochs.png"


def _figure(width: float = 6.4, height: float = 4.2):
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        from ..extras import install_hint

        raise PipelineError(f"plotting: {install_hint('matplotlib')}") from None
    fig = Figure(figsize=(width, height), dpi=120)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", bbox_inches="tight")
    return path


def _xy(records) -> tuple[list[float], list[float]]:
    pts = [(r.depth if r.depth is not None else r.index, 100 * r.test_err)
           for r in records if r.test_err is not None]
    return [p[0] for p in pts], [p[1] for p in pts]


def plot_error_vs_depth(results: Results, path: str | os.PathLike) -> Path:
    """Test error (%) against depth, IterLearn vs FixLearn (Fig. 2c); returns the PNG path."""
    fig = _figure()
    ax = fig.add_subplot(1, 1, 1)
    xi, yi = _xy(results.stages)
    xf, yf = _xy(results.baseline)
    if not xi and not xf:
        raise PipelineError(f"{results.name}: no finished stage with a test error to plot")
    if xf:
        ax.plot(xf, yf, "o-", color=FIX_COLOUR, label="FixLearn (from scratch)")
    if xi:
        ax.plot(xi, yi, "s-", color=ITER_COLOUR, label="IterLearn (grown)")
    common = sorted(set(xi) & set(xf))
    if len(common) >= 2:
        it, fx = dict(zip(xi, yi, strict=True)), dict(zip(xf, yf, strict=True))
        a, b = [it[d] for d in common], [fx[d] for d in common]
        ax.fill_between(common, a, b, where=[u <= v for u, v in zip(a, b, strict=True)], interpolate=True,
                        color=GAIN_COLOUR, alpha=0.5, label="IterLearn gain")
    for ys, colour in ((yf, FIX_COLOUR), (yi, ITER_COLOUR)):
        if ys:
            ax.axhline(min(ys), color=colour, linestyle="--", linewidth=0.9, alpha=0.8)
    depths = sorted(set(xi) | set(xf))
    ax.set_xscale("log")
    ax.set_xticks(depths)
    ax.set_xticklabels([str(d) for d in depths])
    ax.minorticks_off()
    labelled = any(r.depth is not None for r in [*results.stages, *results.baseline])
    ax.set_xlabel("depth (layers)" if labelled else "stage")
    ax.set_ylabel("test error (%)")
    ax.set_title(f"{results.name}: test error vs depth")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    return _save(fig, Path(path))


def _curves(results: Results, out_dir: Path) -> list[tuple[int, int | None, list[dict]]]:
    from ..train.metrics import read_metrics

    curves = []
    for r in results.stages:
        if not r.metrics:
            continue
        path = out_dir / r.metrics
        try:
            curves.append((r.index, r.depth, read_metrics(path)))
        except (OSError, ValueError) as e:
            raise PipelineError(f"{path}: cannot read metrics ({e})") from None
    return curves


def plot_error_vs_epochs(results: Results, out_dir: str | os.PathLike, path: str | os.PathLike) -> Path:
    """IterLearn train/test error (%) against cumulative epochs, growth points marked (Fig. 2e)."""
    out_dir = Path(out_dir)
    fig = _figure(7.2, 4.2)
    ax = fig.add_subplot(1, 1, 1)
    curves = _curves(results, out_dir)
    marker = "." if sum(len(h) for _, _, h in curves) <= 60 else None
    start, last_test = 0, None
    drawn = False
    for index, depth, history in curves:
        if index > 1:
            ax.axvline(start, color="grey", linestyle=":", linewidth=1)
        if history:
            # the morph preserves the function: the child starts at its parent's last test error
            epochs = ([start] if last_test is not None else []) + [start + h["epoch"] for h in history]
            test = ([last_test] if last_test is not None else []) + [100 * h["test_err"] for h in history]
            ax.plot(epochs, test, "-", marker=marker, color=ITER_COLOUR,
                    label=None if drawn else "test error")
            ax.plot([start + h["epoch"] for h in history], [100 * h["train_err"] for h in history], "--",
                    marker=marker, color=ITER_COLOUR, alpha=0.45, label=None if drawn else "train error")
            drawn = True
            label = f"{depth}" if depth is not None else f"stage {index}"
            ax.annotate(label, xy=(start, 1.0), xycoords=("data", "axes fraction"), xytext=(3, -12),
                        textcoords="offset points", fontsize=8, color="dimgrey")
            start, last_test = start + history[-1]["epoch"], test[-1]
    if not drawn:
        raise PipelineError(f"{results.name}: no per-epoch metrics to plot")
    ax.set_xlim(left=0)
    ax.set_xlabel("cumulative epochs (dotted: growth)")
    ax.set_ylabel("error (%)")
    ax.set_title(f"{results.name}: IterLearn error curves (labels: depth)")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper right", fontsize=8)
    return _save(fig, Path(path))


def plot_run(out_dir: str | os.PathLike, dest: str | os.PathLike | None = None) -> list[Path]:
    """Write ``error_vs_depth.png`` and ``error_vs_epochs.png`` for the run in ``out_dir``.

    Parameters
    ----------
    out_dir
        A run directory (``results.json`` inside).
    dest
        Folder for the PNG files (default ``out_dir``).
    """
    out_dir = Path(out_dir)
    results = Results.load(out_dir)
    dest = Path(dest) if dest is not None else out_dir
    dest.mkdir(parents=True, exist_ok=True)
    return [
        plot_error_vs_depth(results, dest / DEPTH_PLOT),
        plot_error_vs_epochs(results, out_dir, dest / CURVE_PLOT),
    ]
