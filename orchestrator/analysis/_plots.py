"""The figures, each saved as PNG (for the HTML report) and SVG (for papers and slides).

Figures are built on ``matplotlib.figure.Figure`` with an explicit Agg canvas rather than
through pyplot: no global backend switch in the caller's process, no figure registry to leak.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import PolyCollection
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator

from contract.rows import EvalPoint
from orchestrator.analysis import _format
from orchestrator.analysis._convergence import Convergence
from orchestrator.analysis._curves import Curve, JointFit, groups
from orchestrator.analysis._fits import Fit
from orchestrator.analysis._table import DATA, MODEL, WORKERS, Table

__all__ = [
    "Plot",
    "plot_compute",
    "plot_convergence",
    "plot_data_axis",
    "plot_frontier",
    "plot_inference",
    "plot_joint",
    "plot_learning_curves",
    "plot_model_axis",
]

_DPI = 110
_LEGEND_INSIDE = 4  # more entries than this go below the axes, where they cover no point
# Cells that did not learn: drawn apart, hollow and grey, never joined to a fitted curve.
_NOT_LEARNED = {"marker": "o", "facecolors": "none", "edgecolors": "0.55", "zorder": 3}
_OUTLIER = {"marker": "x", "color": "red", "s": 50, "linewidths": 1.5, "zorder": 4}


@dataclass(frozen=True)
class Plot:
    """A written figure and the sentence that tells a reader how to read it."""

    name: str
    title: str
    caption: str
    png: Path
    svg: Path


def _figure(
    ncols: int = 1, nrows: int = 1, size: tuple[float, float] = (7.5, 4.8)
) -> tuple[Figure, np.ndarray]:
    figure = Figure(figsize=size)
    FigureCanvasAgg(figure)
    return figure, figure.subplots(nrows, ncols, squeeze=False).ravel()


def _save(figure: Figure, out: Path, name: str, title: str, caption: str) -> Plot:
    figure.tight_layout()
    png, svg = out / f"{name}.png", out / f"{name}.svg"
    figure.savefig(png, dpi=_DPI)
    figure.savefig(svg, metadata={"Date": None})  # no timestamp: reruns give identical files
    return Plot(name=name, title=title, caption=caption, png=png, svg=svg)


def _log_y_if_positive(ax: Axes, values: Sequence[float]) -> None:
    low, high = np.nanmin(values), np.nanmax(values)
    if low <= 0:
        return
    ax.set_yscale("log")
    plain = FuncFormatter(lambda v, _: f"{v:g}")
    ax.yaxis.set_major_formatter(plain)
    # Errors often span less than a decade, where no major tick would be labelled at all.
    if high / low < 10:
        ax.yaxis.set_minor_formatter(plain)


def _worker_axis(ax: Axes, workers: Sequence[int], *, y_too: bool = False) -> None:
    """Log-2 scale with a tick at each swept worker count, labelled as a plain integer."""
    ticks, labels = sorted(set(workers)), [str(w) for w in sorted(set(workers))]
    ax.set_xscale("log", base=2)
    ax.set_xticks(ticks, labels)
    if y_too:
        ax.set_yscale("log", base=2)
        ax.set_yticks(ticks, labels)
    ax.minorticks_off()
    ax.set_xlabel("workers")


def _legend(ax: Axes) -> None:
    """Inside the axes when short; below them, in two columns, when it would hide points."""
    entries = len(ax.get_legend_handles_labels()[1])
    if entries <= _LEGEND_INSIDE:
        ax.legend(fontsize=7, loc="best")
    else:
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncols=2)


def _workers_text(table: Table) -> str:
    """ "1 worker", or "1 worker; 2 cells at more" when some cells had none at the fewest."""
    text = _format.workers(table.reference_workers)
    if table.substituted:
        text += f"; {len(table.substituted)} cell(s) at more"
    return text


def _outliers(ax: Axes, table: Table, curves: Sequence[Curve], x: str) -> None:
    """A red cross on each trial the robust fits flagged, at its own error."""
    ids = [o["trial_id"] for curve in curves for o in curve.outliers]
    if not ids:
        return
    flagged = table.trials.set_index("trial_id").loc[ids]
    ax.scatter(flagged[x], flagged["error_value"], label="outlier (down-weighted)", **_OUTLIER)


def _fitted(ax: Axes, fit: Fit, x: np.ndarray, color: tuple[float, ...]) -> None:
    """The fitted law across ``x``, shaded with its 95 % bootstrap band where it has one."""
    ax.plot(x, fit.predict(x), "-", color=color, alpha=0.8)
    if (band := fit.band(x)) is not None:
        low, high = band
        outline = np.concatenate([np.column_stack([x, low]), np.column_stack([x, high])[::-1]])
        # Kept out of the axis limits: a wide band (few points to spare) would flatten the data.
        shade = PolyCollection([outline], facecolors=[color], alpha=0.12, linewidths=0)
        ax.add_collection(shade, autolim=False)


def _curves_panel(ax: Axes, curves: list[Curve], x_label: str, y_label: str) -> None:
    """Seed means with std error bars, and each curve's fitted law across its x range (with
    its 95 % band when it has an interval)."""
    for curve, color in zip(curves, _colors(len(curves)), strict=True):
        points = curve.points
        if curve.fit is not None:
            label = f"{curve.label}: {curve.fit.equation()}, R² = {curve.fit.r2:.3f}"
        else:
            label = f"{curve.label} (no fit: see the fitted-laws table)"
        ax.errorbar(
            points["x"],
            points["mean"],
            yerr=points["std"].fillna(0.0),
            fmt="o",
            color=color,
            capsize=3,
            label=label,
        )
        if curve.fit is not None:
            x = np.geomspace(points["x"].min() / 1.3, points["x"].max() * 1.3, 200)
            _fitted(ax, curve.fit, x, color)
    excluded = [c.excluded for c in curves if not c.excluded.empty]
    if excluded:
        apart = pd.concat(excluded)
        ax.scatter(apart["x"], apart["mean"], label="did not learn (not fitted)", **_NOT_LEARNED)
    ax.set_xscale("log")
    ax.set_xlabel(x_label)
    ax.set_ylabel(y_label)
    ax.grid(True, which="both", alpha=0.3)


def _colors(n: int) -> list[tuple[float, ...]]:
    cmap = colormaps["viridis" if n > 10 else "tab10"]
    return [cmap(i / max(n - 1, 1)) if n > 10 else cmap(i) for i in range(n)]


def _all_means(curves: list[Curve]) -> pd.Series:
    return pd.concat([c.points["mean"] for c in curves] + [c.excluded.get("mean") for c in curves])


def plot_model_axis(table: Table, curves: list[Curve], out: Path) -> Plot:
    figure, (ax,) = _figure()
    _curves_panel(ax, curves, "non-embedding parameters N", f"error ({table.metric.error_label})")
    _outliers(ax, table, curves, "params_non_embedding")
    _log_y_if_positive(ax, _all_means(curves))
    # Each model named once, above or below its point in turn, so neighbours do not collide.
    named = pd.concat([curves[0].points, curves[0].excluded]).drop_duplicates("x").sort_values("x")
    for i, (_, point) in enumerate(named.iterrows()):
        ax.annotate(
            str(point["name"]),
            (point["x"], point["mean"]),
            fontsize=7,
            xytext=(4, 6 if i % 2 == 0 else -12),
            textcoords="offset points",
        )
    _legend(ax)
    ax.set_title(f"Error vs model size, one curve per data fraction ({_workers_text(table)})")
    return _save(
        figure,
        out,
        "model_axis",
        "Model size",
        "Error against non-embedding parameters (log-log), one colour per training-data fraction; "
        "points are seed means with ±1 std error bars, lines the fitted E(N) = E_inf + A·N^-alpha "
        "(shaded: its 95 % bootstrap band, where the curve has points to spare). "
        "A steeper curve means a bigger model pays off more; a flat one that E_inf dominates. "
        "Hollow grey points did not learn (within noise of chance) and are not fitted; red "
        "crosses are single trials the robust fit flagged as outliers.",
    )


def plot_data_axis(table: Table, curves: list[Curve], out: Path) -> Plot:
    figure, (ax,) = _figure()
    _curves_panel(ax, curves, "training examples D", f"error ({table.metric.error_label})")
    _outliers(ax, table, curves, "train_examples")
    _log_y_if_positive(ax, _all_means(curves))
    _legend(ax)
    ax.set_title(f"Error vs training data, one curve per model ({_workers_text(table)})")
    return _save(
        figure,
        out,
        "data_axis",
        "Training data",
        "Error against training examples (log-log), one colour per model, with the fitted "
        "E(D) = E_inf + B·D^-beta (shaded: its 95 % band, where it has one). Where a curve has "
        "flattened, more data of this kind buys little "
        "for that model. Hollow grey points did not learn and are not fitted; red crosses are "
        "outlying trials.",
    )


def plot_joint(table: Table, joint: JointFit, out: Path) -> Plot:
    figure, (ax,) = _figure(size=(6.0, 5.4))
    fit, observed = joint.fit, joint.observed
    assert fit is not None
    predicted = fit.predict(observed["N"], observed["D"])
    ax.scatter(
        predicted,
        observed["error"],
        s=18,
        alpha=0.8,
        label=f"{fit.equation()}\nR² = {fit.r2:.3f}, {fit.n_points} trials",
    )
    low = float(min(predicted.min(), observed["error"].min())) * 0.95
    high = float(max(predicted.max(), observed["error"].max())) * 1.05
    if not joint.excluded.empty:
        ax.scatter(
            fit.predict(joint.excluded["N"], joint.excluded["D"]),
            joint.excluded["error"],
            label="did not learn (not fitted)",
            **_NOT_LEARNED,
        )
    if joint.outliers:
        flagged = table.trials.set_index("trial_id").loc[[o["trial_id"] for o in joint.outliers]]
        ax.scatter(
            fit.predict(flagged["params_non_embedding"], flagged["train_examples"]),
            flagged["error_value"],
            label="outlier (down-weighted)",
            **_OUTLIER,
        )
    ax.plot([low, high], [low, high], "k--", lw=1, label="perfect fit")
    ax.set_xlabel(f"predicted error E(N, D) ({table.metric.error_label})")
    ax.set_ylabel(f"observed error ({table.metric.error_label})")
    ax.set_title("Joint fit E(N, D) = E + A/N^alpha + B/D^beta")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    suffix = "".join(f"_{_format.value(v)}" for v in joint.key.values())
    return _save(
        figure,
        out,
        f"joint_fit{suffix}",
        "Joint model × data fit",
        "Every trial's observed error against the joint law's prediction; points on the dashed "
        "diagonal are explained by model size and data alone. E is the error no model or data "
        "size in this family removes; alpha and beta say which of the two scales faster.",
    )


def plot_compute(
    table: Table,
    amdahl: dict[str, list[Curve]],
    speedups: pd.DataFrame,
    flags: list[dict],
    out: Path,
) -> Plot:
    figure, axes = _figure(ncols=2, nrows=2, size=(11.0, 8.5))
    workers = speedups[WORKERS].unique()
    clocks = {"train_time_s": "training loop", "trial_wall_s": "whole trial"}
    for ax, (time, curves) in zip(axes[:2], amdahl.items(), strict=True):
        ax.plot(sorted(workers), sorted(workers), "k:", lw=1, label="ideal (linear)")
        for curve, color in zip(curves, _colors(len(curves)), strict=True):
            p = curve.points
            if curve.fit is None:
                label = f"{curve.label} (no fit: see the fitted-laws table)"
            else:
                label = f"{curve.label}: s = {curve.fit.params['s']:.3f}, R² = {curve.fit.r2:.2f}"
            ax.errorbar(
                p["x"],
                p["mean"],
                yerr=p["std"].fillna(0.0),
                fmt="o",
                color=color,
                capsize=3,
                label=label,
            )
            if curve.fit is not None:
                w = np.geomspace(p["x"].min(), p["x"].max(), 100)
                _fitted(ax, curve.fit, w, color)
        _worker_axis(ax, workers, y_too=True)
        ax.set_ylabel(f"speed-up T(w0)/T(w), {time}")
        ax.set_title(f"Speed-up of the {clocks[time]}, with Amdahl fits")

    throughput, quality = axes[2], axes[3]
    full = speedups[DATA].max()
    at_full = speedups[speedups[DATA] == full].sort_values(["params", WORKERS])
    models = list(dict.fromkeys(at_full[MODEL]))
    for model, color in zip(models, _colors(len(models)), strict=True):
        rows = at_full[at_full[MODEL] == model]
        throughput.plot(
            rows[WORKERS], rows["examples_per_s_per_worker"], "o-", color=color, label=model
        )
        quality.errorbar(
            rows[WORKERS],
            rows["metric_mean"],
            yerr=rows["metric_std"].fillna(0.0),
            fmt="o-",
            color=color,
            capsize=3,
            label=model,
        )
    for flag in flags:
        if flag[DATA] == full:
            quality.scatter(
                [flag[WORKERS]],
                [flag["metric_mean"]],
                s=160,
                facecolors="none",
                edgecolors="red",
                linewidths=2,
                zorder=3,
            )
    throughput.set_ylabel("examples/s per worker")
    throughput.set_title(f"Throughput per worker ({_format.fraction(full)} data)")
    quality.set_ylabel(f"final {table.metric.name} (mean ± std over seeds)")
    quality.set_title(f"Strong-scaling check ({_format.fraction(full)} data; red = flagged)")
    for ax in (throughput, quality):
        _worker_axis(ax, workers)
    for ax in axes:
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    return _save(
        figure,
        out,
        "compute_axis",
        "Compute",
        "Top: speed-up over the fewest workers, at each model's largest data fraction, for the "
        "training loop and for the whole trial (start-up included), with Amdahl fits "
        "(s = serial fraction; shaded: the 95 % band) and the ideal line. Bottom left: "
        "throughput per worker, flat when scaling is perfect. Bottom right: the final metric "
        "per worker count, which at a fixed global batch should not move beyond seed noise; "
        "cells circled red differ significantly "
        "(flags at other data fractions are listed in the Compute table).",
    )


def plot_frontier(table: Table, frontier: list[dict], out: Path) -> Plot:
    figure, (ax,) = _figure()
    quality = table.quality[table.quality["learned"]]
    models = list(dict.fromkeys(quality.sort_values("params")[MODEL]))
    for model, color in zip(models, _colors(len(models)), strict=True):
        rows = quality[quality[MODEL] == model]
        ax.errorbar(
            rows["flops"],
            rows["error_mean"],
            yerr=rows["error_std"].fillna(0.0),
            fmt="o",
            color=color,
            capsize=3,
            label=model,
        )
    apart = table.quality[~table.quality["learned"]]
    if not apart.empty:
        ax.scatter(apart["flops"], apart["error_mean"], label="did not learn", **_NOT_LEARNED)
    line = pd.DataFrame(frontier)
    if not line.empty:
        ax.step(
            line["flops"], line["error_mean"], where="post", color="black", lw=1.2, label="frontier"
        )
    ax.set_xscale("log")
    _log_y_if_positive(ax, table.quality["error_mean"])
    ax.set_xlabel("training FLOPs ≈ 6 · N_non-embedding · tokens")
    ax.set_ylabel(f"error ({table.metric.error_label})")
    ax.set_title("Compute-quality frontier (every model × data cell)")
    ax.grid(True, which="both", alpha=0.3)
    _legend(ax)
    return _save(
        figure,
        out,
        "cost_frontier",
        "Compute-quality frontier",
        "Error against estimated training FLOPs for every model × data cell; the black steps join "
        "the cells no cheaper cell beats. A cell above the line wastes compute: some smaller model "
        "or data fraction did as well for less. Hollow grey cells did not learn.",
    )


def _evaluations(history: pd.DataFrame, metric_column: str) -> tuple[pd.DataFrame, bool]:
    """One row per evaluation (trial_id, epoch, metric): every evaluation point where the
    history has them (fractional epochs), else one per epoch row; and which it was."""
    if "eval_points" not in history.columns or not history["eval_points"].notna().any():
        return history[["trial_id", "epoch", metric_column]], False
    rows = []
    for trial_id, points in zip(history["trial_id"], history["eval_points"], strict=True):
        for record in points if isinstance(points, list | tuple) else ():
            point = EvalPoint.from_dict(record)
            column = metric_column.removeprefix("eval_")
            rows.append(
                {"trial_id": trial_id, "epoch": point.epoch, metric_column: point.score(column)}
            )
    return pd.DataFrame(rows, columns=["trial_id", "epoch", metric_column]), True


def plot_learning_curves(table: Table, out: Path) -> Plot | None:
    history = table.experiment.history
    if history.empty or table.metric.column not in history.columns:
        return None
    ok = table.ok
    full = ok[ok["quality"] & (ok[DATA] == ok[DATA].max())]
    series = [MODEL, *table.extra_axes]
    evaluations, resolved = _evaluations(history, table.metric.column)
    epochs = evaluations.merge(full[["trial_id", *series]], on="trial_id")
    if epochs.empty:
        return None
    epochs["error_value"] = table.metric.error(epochs[table.metric.column].astype(float))
    figure, (ax,) = _figure()
    lines = list(groups(epochs, series))
    for (key, trials), color in zip(lines, _colors(len(lines)), strict=True):
        per_epoch = trials.groupby("epoch")["error_value"].agg(["mean", "std"])
        ax.errorbar(
            per_epoch.index,
            per_epoch["mean"],
            yerr=per_epoch["std"].fillna(0.0),
            fmt=".-" if resolved else "o-",
            color=color,
            capsize=3,
            label=", ".join(_format.value(v) for v in key.values()),
        )
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(f"eval error ({table.metric.error_label})")
    ax.set_title(f"Learning curves at {_format.fraction(full[DATA].max())} data")
    ax.grid(True, alpha=0.3)
    _legend(ax)
    return _save(
        figure,
        out,
        "learning_curves",
        "Learning curves",
        "Eval error at every evaluation (each epoch's end, and every train.eval_every_steps "
        "optimizer steps where set; mean ± std over seeds) at the largest data fraction. A curve "
        "still falling at the last epoch means the scaling points understate what longer training "
        "would reach.",
    )


_DASHES = {"p50": "-", "p95": "--", "p99": ":"}


def plot_inference(
    table: Table, latency: pd.DataFrame, throughput: pd.DataFrame, out: Path
) -> Plot:
    """Latency p50 and p95 against parameters, one colour per batch size; inference throughput
    against workers, one line per model."""
    figure, (lat, thr) = _figure(ncols=2, size=(11.0, 4.8))
    devices = sorted(set(latency["device"])) if not latency.empty else []
    # One device: named in the title; several: in each line's label.
    by_device = ["device"] if len(devices) > 1 else []
    series = [c for c in ("batch_size", *table.extra_axes, *by_device) if c in latency.columns]
    lines = list(groups(latency, series)) if not latency.empty else []
    for (key, rows), color in zip(lines, _colors(len(lines)), strict=True):
        rows = rows.sort_values("params")
        name = f"batch {key['batch_size']}" + "".join(
            f", {_format.value(v)}" for k, v in key.items() if k != "batch_size"
        )
        for percentile in ("p50", "p95"):
            lat.plot(
                rows["params"],
                rows[f"{percentile}_ms"],
                _DASHES[percentile],
                marker="o" if percentile == "p50" else "s",
                color=color,
                label=f"{name}, {percentile}",
            )
    if lines:
        named = latency.drop_duplicates(MODEL).sort_values("params")
        for i, (_, point) in enumerate(named.iterrows()):
            lat.annotate(
                str(point[MODEL]),
                (point["params"], point["p50_ms"]),
                fontsize=7,
                xytext=(4, 6 if i % 2 == 0 else -12),
                textcoords="offset points",
            )
        lat.set_xscale("log")
        _log_y_if_positive(lat, latency[["p50_ms", "p95_ms"]].to_numpy().ravel())
    lat.set_xlabel("non-embedding parameters N")
    lat.set_ylabel("latency per batch (ms)")
    on = f" on {devices[0]}" if len(devices) == 1 else ""
    lat.set_title(f"Prediction latency{on} (solid p50, dashed p95)", fontsize=10)
    if not throughput.empty:
        keys = [MODEL, *table.extra_axes]
        models = list(groups(throughput.sort_values(["params", WORKERS]), keys))
        for (key, rows), color in zip(models, _colors(len(models)), strict=True):
            thr.errorbar(
                rows[WORKERS],
                rows["examples_per_s"],
                yerr=rows["examples_per_s_std"].fillna(0.0),
                fmt="o-",
                color=color,
                capsize=3,
                label=", ".join(_format.value(v) for v in key.values()),
            )
        _worker_axis(thr, throughput[WORKERS].unique())
    thr.set_ylabel("inference examples/s, all workers")
    thr.set_title("Inference throughput at the eval batch")
    for ax in (lat, thr):
        ax.grid(True, which="both", alpha=0.3)
        if ax.get_legend_handles_labels()[1]:
            _legend(ax)
    return _save(
        figure,
        out,
        "inference",
        "Inference speed",
        "Left: milliseconds per batch to predict on one worker (rank 0), from a tokenised batch on "
        "the host to its predicted labels on the host, after warm-up, against model size; one "
        "colour per batch size, the median over the model's trials; solid lines p50, dashed p95. "
        "Right: prediction throughput at the eval batch over the validation split, all workers "
        "of a trial together, against their number (mean ± std over the model's trials). Both "
        "are measured on each trial's own device and dtype after its final epoch.",
    )


def plot_convergence(table: Table, convergence: Convergence, out: Path) -> Plot:
    """Training time to reach the level against training examples (at the quality worker
    count) and against workers (at the largest data fraction), one line per model."""
    figure, (by_data, by_workers) = _figure(ncols=2, size=(11.0, 4.8))
    cells = convergence.cells
    keys = [MODEL, *table.extra_axes]
    quality = table.quality[[MODEL, DATA, WORKERS, *table.extra_axes]]
    at_quality = cells.merge(quality, on=[MODEL, DATA, WORKERS, *table.extra_axes])
    at_full = cells[cells[DATA] == cells[DATA].max()]
    models = list(dict.fromkeys(cells.sort_values("params")[MODEL]))
    colors = dict(zip(models, _colors(len(models)), strict=True))
    for ax, frame, x in ((by_data, at_quality, "train_examples"), (by_workers, at_full, WORKERS)):
        for key, rows in groups(frame.sort_values(x), keys):
            color = colors[key[MODEL]]
            label = ", ".join(_format.value(v) for v in key.values())
            every = rows[rows["n_reached"] == rows["n"]]
            some = rows[(rows["n_reached"] > 0) & (rows["n_reached"] < rows["n"])]
            ax.errorbar(
                every[x],
                every["time_to_s"],
                yerr=every["time_to_std"].fillna(0.0),
                fmt="o-",
                color=color,
                capsize=3,
                label=label,
            )
            if not some.empty:
                ax.scatter(some[x], some["time_to_s"], facecolors="none", edgecolors=color, s=60)
            never = rows[rows["n_reached"] == 0]
            if not never.empty:  # along the top edge: these cells have no time to draw
                ax.scatter(
                    never[x],
                    [0.97] * len(never),
                    marker="x",
                    color=color,
                    transform=ax.get_xaxis_transform(),
                    clip_on=False,
                )
    by_data.set_xscale("log")
    # Crosses at the top edge do not widen the x limits: set them from every cell drawn.
    if not at_quality.empty:
        low, high = at_quality["train_examples"].min(), at_quality["train_examples"].max()
        by_data.set_xlim(low / 1.5, high * 1.5)
    _worker_axis(by_workers, cells[WORKERS].unique())
    for ax, frame in ((by_data, at_quality), (by_workers, at_full)):
        reached = frame.loc[frame["n_reached"] > 0, "time_to_s"]
        if not reached.empty:
            _log_y_if_positive(ax, reached)
        if (frame["n_reached"] == 0).any():
            ax.scatter([], [], marker="x", color="0.4", label="never reached (at the top)")
    by_data.set_xlabel("training examples D")
    by_data.set_title(f"Time to the level vs data ({_workers_text(table)})")
    by_workers.set_title(
        f"Time to the level vs workers ({_format.fraction(cells[DATA].max())} data)"
    )
    for ax in (by_data, by_workers):
        ax.set_ylabel("training seconds to reach it")
        ax.grid(True, which="both", alpha=0.3)
        if ax.get_legend_handles_labels()[1]:
            _legend(ax)
    return _save(
        figure,
        out,
        "convergence",
        "Convergence",
        f"Training seconds (evaluations excluded) until a trial's evaluations first reached "
        f"{convergence.level}; mean ± std over the seeds that reached it, hollow where only some "
        "did; a cross at the top edge marks a cell where none did (see the Convergence table). "
        "Evaluations come "
        "at each epoch's end and every train.eval_every_steps optimizer steps, so a time is "
        "exact to that resolution. Left: against training examples, at the worker count quality "
        "is read at. Right: against workers, at the largest data fraction.",
    )
