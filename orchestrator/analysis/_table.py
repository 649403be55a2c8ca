"""Read an experiment directory from disk into one tidy table, and aggregate repeated seeds.

One row per trial: the axis columns, then metrics and the derived numbers every later step
uses (error, resource-hours, FLOPs). Cells are the grid points without the seed; a cell is
missing when none of its seeds finished, partial when some did.

Quality (the metric) is read per model × data cell at the fewest workers that cell finished
with, and a cell whose metric is within noise of chance "did not learn": it stays in the
tables, marked, and out of every fitted law.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from contract.rows import result_fields
from orchestrator.analysis import _format
from orchestrator.analysis._errors import AnalysisError
from orchestrator.experiment import STATUS_COLUMNS, TRIAL_COLUMNS, ExperimentDir, ExperimentError

__all__ = [
    "DATA",
    "MODEL",
    "NOISE_Z",
    "SEED",
    "WORKERS",
    "Experiment",
    "Metric",
    "Table",
    "build_table",
    "load_experiment",
    "resolve_metric",
    "standard_error",
]

# The derived model identity, a short display name: ``model.name`` (a local directory by its
# last path component), plus ``-L<n>`` when ``model.num_layers`` truncates it, so that a sweep
# over the depth of one checkpoint is still a model axis. It is an ordered categorical (smallest
# first), so groupbys pass observed=True: pandas 2 would otherwise yield an empty group for
# every unseen combination.
MODEL = "model"
DATA = "data.train_fraction"
WORKERS = "compute.num_workers"
SEED = "train.seed"
_FIXED_AXES = (MODEL, DATA, WORKERS)
# Columns that make up the model identity or the seed: never an extra axis of their own.
_NOT_EXTRA = {"model.name", "model.num_layers", DATA, WORKERS, SEED}

# What the analysis reads: the ledger's columns, the axes, and these fields of each trial's row.
_REQUIRED_COLUMNS = (
    *STATUS_COLUMNS,
    *TRIAL_COLUMNS,
    "model.name",
    DATA,
    WORKERS,
    SEED,
    *result_fields(
        "params_non_embedding",
        "train_examples",
        "global_batch",
        "train_time_s",
        "examples_per_s",
        "train_tokens",
        "eval_loss",
    ),
)
FINISHED = "TERMINATED"
# The score of the best constant prediction, when results.csv has no chance_<metric> column
# (sweeps from before the trials reported it): 0 by definition for correlations. Accuracy and
# F1 depend on the label mix, so without the column their chance level is unknown.
_DEFAULT_CHANCE = {"matthews_correlation": 0.0, "pearson": 0.0, "spearmanr": 0.0}
# A cell "learned" when its mean beats chance by two standard errors, and by at least this
# much: seeds that all predict one class agree exactly, and a zero spread is no evidence.
_CHANCE_MARGIN = 0.005
NOISE_Z = 2.0  # standard errors of "within noise": about a 95 % two-sided band
# Metrics bounded by construction, for checking a --target.
_RANGES = {"matthews_correlation": (-1.0, 1.0), "pearson": (-1.0, 1.0), "spearmanr": (-1.0, 1.0)}


@dataclass(frozen=True, eq=False)
class Experiment:
    """An experiment directory as read from disk, before any interpretation."""

    directory: Path
    name: str
    primary_metric: str
    axes: tuple[str, ...]
    seeds: tuple[int, ...]
    num_trials: int
    # Each planned trial's axis values; None for experiments from before they were recorded,
    # which planned the product of every axis.
    planned: tuple[dict[str, Any], ...] | None
    trials: pd.DataFrame  # results.csv, one row per trial
    history: pd.DataFrame  # every trials/<id>/history.jsonl, one row per (trial_id, epoch)
    notes: tuple[str, ...]


@dataclass(frozen=True)
class Metric:
    """The quality number being analysed and how it turns into an error (lower is better)."""

    name: str  # "accuracy", "f1", ..., or "loss"
    column: str  # its column in results.csv and history.jsonl

    @property
    def higher_is_better(self) -> bool:
        return self.name != "loss"

    @property
    def error_label(self) -> str:
        return f"1 − {self.name}" if self.higher_is_better else "eval loss"

    def error(self, values: Any) -> Any:
        return 1.0 - values if self.higher_is_better else values

    @property
    def valid_range(self) -> tuple[float, float]:
        """Values the metric can take: [0, 1] for rates and F1, [-1, 1] for correlations."""
        if not self.higher_is_better:
            return (0.0, math.inf)
        return _RANGES.get(self.name, (0.0, 1.0))


@dataclass(frozen=True, eq=False)
class Table:
    """The tidy per-trial table, its seed-aggregated cells, and what is missing."""

    experiment: Experiment
    metric: Metric
    trials: pd.DataFrame  # every trial, with derived columns; ``ok`` marks usable ones
    # One row per cell with at least one usable seed. ``quality`` marks the row a model × data
    # cell is judged by (its fewest workers), ``learned`` whether it beat chance.
    cells: pd.DataFrame
    extra_axes: tuple[str, ...]  # swept axes other than model, data fraction, workers, seed
    missing: tuple[dict[str, Any], ...]  # cells with fewer usable seeds than asked for
    hours_unit: str  # "GPU-hours" or "worker-hours (CPU)"
    model_names: dict[str, str]  # display name -> model.name as the sweep spelled it
    chance: str  # where the chance level came from, in words
    seed_sd: float  # the metric's seed noise pooled over cells with two seeds or more (NaN: none)
    # Model × data cells that quality is read for at another worker count than the sweep's
    # fewest, and those with no usable trial at any worker count: each with why.
    substituted: tuple[dict[str, Any], ...]
    absent: tuple[dict[str, Any], ...]

    @property
    def ok(self) -> pd.DataFrame:
        return self.trials[self.trials["ok"]]

    @property
    def reference_workers(self) -> int:
        """The sweep's fewest workers with results, where quality is read when a cell has it.

        Quality fits must not mix optimisation settings; other worker counts are replicates of
        it only under strong scaling, and that is what the strong-scaling check tests. A cell
        with no result at this count is read at its own fewest (``substituted`` says which).
        """
        return int(self.ok[WORKERS].min())

    @property
    def quality(self) -> pd.DataFrame:
        """One row per model × data (× extra axes) cell: the one its quality is judged by."""
        return self.cells[self.cells["quality"]]


def load_experiment(directory: Path) -> Experiment:
    """Read experiment.json, results.csv and the per-trial histories of ``directory``."""
    directory = Path(directory)
    if not directory.is_dir():
        raise AnalysisError(f"experiment directory not found: {directory}")
    experiment = ExperimentDir(directory)
    results = experiment.results_csv
    try:
        spec = experiment.metadata()
        if not results.is_file():
            raise AnalysisError(
                f"no results: {results} does not exist (has the sweep run a trial?)"
            )
        trials = experiment.read_results()
    except ExperimentError as err:
        raise AnalysisError(str(err)) from None
    if trials.empty:
        raise AnalysisError(f"no results: {results} has a header but no trials")
    absent = [c for c in _REQUIRED_COLUMNS if c not in trials.columns]
    if absent:
        raise AnalysisError(f"{results} lacks column(s): {', '.join(absent)}")
    trials["error"] = trials["error"].fillna("")
    trials["status"] = trials["status"].fillna("").str.upper()
    history, notes = _read_histories(experiment, trials["trial_id"])
    return Experiment(
        directory=directory,
        name=str(spec["name"]),
        primary_metric=str(spec["primary_metric"]),
        axes=tuple(spec["axes"]),
        seeds=tuple(spec["seeds"]),
        num_trials=int(spec["num_trials"]),
        planned=_planned(spec.get("planned")),
        trials=trials,
        history=history,
        notes=notes,
    )


def _planned(value: Any) -> tuple[dict[str, Any], ...] | None:
    if isinstance(value, list) and all(isinstance(p, dict) for p in value):
        return tuple(value)
    return None


def _read_histories(
    experiment: ExperimentDir, trial_ids: pd.Series
) -> tuple[pd.DataFrame, tuple[str, ...]]:
    rows: list[dict[str, Any]] = []
    absent, unreadable = 0, 0
    for trial_id in trial_ids:
        if not (experiment.trial_dir(trial_id) / "history.jsonl").is_file():
            absent += 1
            continue
        # A trial killed mid-write leaves a torn last line; the epochs before it are fine.
        records, skipped = experiment.history_records(trial_id)
        rows += [{**record, "trial_id": trial_id} for record in records]
        unreadable += skipped
    notes = []
    if absent:
        notes.append(f"{absent} trial(s) have no history.jsonl (failed before the first epoch?)")
    if unreadable:
        notes.append(f"{unreadable} unreadable line(s) in history.jsonl files were skipped")
    return pd.DataFrame(rows, columns=None if rows else ["trial_id", "epoch"]), tuple(notes)


def resolve_metric(experiment: Experiment, name: str | None) -> Metric:
    """The metric to analyse: ``name``, or the experiment's primary metric."""
    name = name or experiment.primary_metric
    column = "eval_loss" if name == "loss" else f"eval_{name}"
    if column not in experiment.trials.columns:
        available = sorted(
            c.removeprefix("eval_") for c in experiment.trials if c.startswith("eval_")
        )
        raise AnalysisError(
            f"metric {name!r} is not in {experiment.directory / 'results.csv'}; "
            f"available: {', '.join(available)}"
        )
    return Metric(name=name, column=column)


def build_table(experiment: Experiment, metric: Metric) -> Table:
    """Derive error, resource-hours and FLOPs per trial; aggregate seeds per cell."""
    trials = experiment.trials.copy()
    num_layers = trials.get("model.num_layers", pd.Series(np.nan, index=trials.index))
    names = _display_names(trials["model.name"], num_layers)
    # Ordered by size, so that every table and legend lists models smallest first.
    size = trials.groupby(names)["params_non_embedding"].max().fillna(np.inf)
    by_size = sorted(size.index, key=lambda name: (size[name], name))
    trials[MODEL] = pd.Categorical(names, categories=by_size, ordered=True)
    trials[WORKERS] = trials[WORKERS].astype(int)
    trials["metric"] = pd.to_numeric(trials[metric.column], errors="coerce")
    trials["ok"] = (trials["status"] == FINISHED) & trials["metric"].notna()
    _refuse_if_nothing_finished(experiment, trials, metric)

    trials["error_value"] = metric.error(trials["metric"])
    trials["chance"], chance = _chance(trials, metric)
    trials["use_gpu"] = trials["use_gpu"].astype(str).str.lower().isin(["true", "1", "yes"])
    devices = np.where(trials["use_gpu"], trials["gpus_per_worker"].astype(float), 1.0)
    trials["hours"] = trials[WORKERS] * devices * trials["trial_wall_s"] / 3600.0
    # Fine-tuning a classifier never multiplies by the embedding matrix (no LM head), so the
    # non-embedding count is the better N for 6·N·tokens.
    trials["flops"] = 6.0 * trials["params_non_embedding"] * trials["train_tokens"]

    extra = tuple(
        a for a in experiment.axes if a not in _NOT_EXTRA and a != MODEL and a in trials.columns
    )
    ok_gpu = trials.loc[trials["ok"], "use_gpu"]
    hours_unit = "GPU-hours" if ok_gpu.all() else "worker-hours (CPU)"
    if ok_gpu.any() and not ok_gpu.all():
        hours_unit = "GPU- or worker-hours (mixed sweep)"
    axes = [*_FIXED_AXES, *extra]
    keys = [MODEL, DATA, *extra]
    cells = _aggregate(trials[trials["ok"]], axes)
    seed_sd = _pooled_sd(cells)
    # Each model × data cell is judged at the fewest workers it finished with.
    cells["quality"] = cells[WORKERS] == cells.groupby(keys, observed=True)[WORKERS].transform(
        "min"
    )
    cells["learned"] = _learned(cells, metric, seed_sd)
    flags = cells[[*axes, "quality", "learned"]]
    trials = trials.merge(flags, on=axes, how="left")
    trials[["quality", "learned"]] = trials[["quality", "learned"]].fillna(False).astype(bool)
    reference = int(cells[WORKERS].min())
    return Table(
        experiment=experiment,
        metric=metric,
        trials=trials,
        cells=cells,
        extra_axes=extra,
        missing=_missing_cells(
            trials, axes, _planned_counts(trials, experiment.planned, axes), len(experiment.seeds)
        ),
        hours_unit=hours_unit,
        model_names=dict(zip(names, trials["model.name"], strict=True)),
        chance=chance,
        seed_sd=seed_sd,
        substituted=_substituted(trials, cells, keys, reference),
        absent=_absent(trials, cells, keys, _planned_counts(trials, experiment.planned, keys)),
    )


def standard_error(cells: pd.DataFrame, seed_sd: float) -> pd.Series:
    """Standard error of each cell's mean metric: its own seed spread, or the sweep's pooled
    one where a single seed gives none."""
    sd = cells["metric_std"].where(cells["n"] >= 2, seed_sd)
    return sd / np.sqrt(cells["n"])


def _display_names(names: pd.Series, num_layers: pd.Series) -> list[str]:
    """Hub names as they are; a local directory by its last components, as few as keep two
    different directories apart; ``-L<n>`` for a truncated depth."""
    short = {}
    for name in names.unique():
        parts = Path(name).parts if _is_path(name) else (name,)
        for depth in range(1, len(parts) + 1):
            candidate = "/".join(parts[-depth:])
            clash = any(
                other != name and _is_path(other) and Path(other).parts[-depth:] == parts[-depth:]
                for other in names.unique()
            )
            if not clash:
                break
        short[name] = candidate
    return [
        short[name] if pd.isna(layers) else f"{short[name]}-L{int(layers)}"
        for name, layers in zip(names, num_layers, strict=True)
    ]


def _is_path(name: str) -> bool:
    # Hub ids have one slash at most (org/name); local directories start at a root or a dot.
    return name.startswith(("/", ".", "~")) or name.count("/") > 1 or "\\" in name


def _chance(trials: pd.DataFrame, metric: Metric) -> tuple[pd.Series, str]:
    """The chance level of each trial's metric, and where it came from in words."""
    column = f"chance_{metric.name}"
    default = _DEFAULT_CHANCE.get(metric.name, math.nan)
    fallback = (
        f"{default:g} by definition for {metric.name}"
        if math.isfinite(default)
        else f"unknown for {metric.name}: results.csv has no {column} column (older sweeps), so "
        "no cell is judged to have not learned"
    )
    if column not in trials.columns:
        return pd.Series(default, index=trials.index, dtype=float), fallback
    values = pd.to_numeric(trials[column], errors="coerce")
    source = f"the best constant prediction on the validation labels ({column} in results.csv)"
    if values.isna().any() and values.notna().any():
        source += f"; {fallback} where it is blank"
    return values.fillna(default), source


def _pooled_sd(cells: pd.DataFrame) -> float:
    repeated = cells[cells["n"] >= 2]
    dof = (repeated["n"] - 1).sum()
    if dof == 0:
        return math.nan
    return float(np.sqrt(((repeated["n"] - 1) * repeated["metric_std"] ** 2).sum() / dof))


def _learned(cells: pd.DataFrame, metric: Metric, seed_sd: float) -> pd.Series:
    """False where a cell's mean is within noise of chance (or worse); True where chance is
    unknown."""
    margin = np.maximum(NOISE_Z * standard_error(cells, seed_sd).fillna(0.0), _CHANCE_MARGIN)
    gain = metric.error(cells["chance"]) - cells["error_mean"]
    return ~(gain <= margin)  # NaN chance compares False: unknown counts as learned


def _substituted(
    trials: pd.DataFrame, cells: pd.DataFrame, keys: list[str], reference: int
) -> tuple[dict[str, Any], ...]:
    """Cells judged at more workers than the sweep's fewest, and what happened at those."""
    out = []
    for _, cell in cells[cells["quality"] & (cells[WORKERS] != reference)].iterrows():
        at_reference = _matching(trials, cell, keys)
        at_reference = at_reference[at_reference[WORKERS] == reference]
        out.append(
            {
                "cell": {k: _format.plain(cell[k]) for k in keys},
                "workers": int(cell[WORKERS]),
                "reference_workers": reference,
                "reason": _reasons(at_reference, workers=False) or "no trial in results.csv",
            }
        )
    return tuple(out)


def _planned_counts(
    trials: pd.DataFrame, planned: tuple[dict[str, Any], ...] | None, keys: list[str]
) -> Counter | None:
    """How many trials the sweep planned per cell of ``keys`` (None: every cell of the
    product, as many as the seeds). Models are named as in ``trials``; a planned model no trial
    of results.csv ran has no name there, and is left out."""
    if planned is None:
        return None
    model_of = {
        (_cell_value(name), _cell_value(layers)): model
        for name, layers, model in trials.reindex(
            columns=["model.name", "model.num_layers", MODEL]
        ).itertuples(index=False)
    }
    counts: Counter = Counter()
    for point in planned:
        model = model_of.get(
            (_cell_value(point.get("model.name")), _cell_value(point.get("model.num_layers")))
        )
        if model is not None:
            counts[tuple(model if k == MODEL else _cell_value(point.get(k)) for k in keys)] += 1
    return counts


def _cell_value(value: Any) -> Any:
    """A cell value as JSON and CSV both give it: NaN and None alike are None."""
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else value


def _absent(
    trials: pd.DataFrame, cells: pd.DataFrame, keys: list[str], planned: Counter | None
) -> tuple[dict, ...]:
    """Model × data cells the sweep planned with no usable trial at any worker count, and why."""
    values = [sorted(trials[k].dropna().unique(), key=_sort_key) for k in keys]
    present = set(cells[keys].itertuples(index=False, name=None))
    out = []
    for cell in itertools.product(*values):
        if cell in present or (planned is not None and not planned[tuple(map(_cell_value, cell))]):
            continue
        key = dict(zip(keys, cell, strict=True))
        out.append(
            {
                "cell": {k: _format.plain(v) for k, v in key.items()},
                "reason": _reasons(_matching(trials, key, keys)) or "no trial in results.csv",
            }
        )
    return tuple(out)


def _matching(trials: pd.DataFrame, cell: Any, keys: list[str]) -> pd.DataFrame:
    mask = np.logical_and.reduce([trials[k] == cell[k] for k in keys])
    return trials[mask]


def _reasons(trials: pd.DataFrame, *, workers: bool = True) -> str:
    """Why these trials gave nothing usable, one clause per trial: (workers,) seed and error."""
    bad = trials[~trials["ok"]].sort_values([WORKERS, SEED])
    return "; ".join(
        (f"{_format.workers(int(t[WORKERS]))}, " if workers else "")
        + f"seed {_format.plain(t[SEED])}: {_failure(t)}"
        for _, t in bad.iterrows()
    )


def _refuse_if_nothing_finished(
    experiment: Experiment, trials: pd.DataFrame, metric: Metric
) -> None:
    if trials["ok"].any():
        return
    results = experiment.directory / "results.csv"
    failed = trials[trials["status"] == "ERROR"]
    if len(failed) == len(trials):
        first = failed.iloc[0]
        raise AnalysisError(
            f"all {len(trials)} trials in {results} failed; nothing to analyse "
            f"(first error, trial {first['trial_id']}: {first['error'] or 'no reason recorded'})"
        )
    counts = ", ".join(
        f"{n} {s or 'no status'}" for s, n in trials["status"].value_counts().items()
    )
    raise AnalysisError(
        f"no finished trial with a value for {metric.column} in {results} ({counts})"
    )


def _aggregate(ok: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Mean, standard deviation and count over seeds, per cell."""
    grouped = ok.groupby(keys, dropna=False, sort=True, observed=True)
    cells = grouped.agg(
        n=("metric", "size"),
        metric_mean=("metric", "mean"),
        metric_std=("metric", "std"),
        error_mean=("error_value", "mean"),
        error_std=("error_value", "std"),
        params=("params_non_embedding", "mean"),
        train_examples=("train_examples", "mean"),
        global_batch=("global_batch", "first"),
        train_time_s=("train_time_s", "mean"),
        train_time_std=("train_time_s", "std"),
        trial_wall_s=("trial_wall_s", "mean"),
        trial_wall_std=("trial_wall_s", "std"),
        examples_per_s=("examples_per_s", "mean"),
        hours=("hours", "mean"),
        flops=("flops", "mean"),
        chance=("chance", "mean"),
    )
    return cells.reset_index()


def _missing_cells(
    trials: pd.DataFrame, axes: list[str], planned: Counter | None, seeds: int
) -> tuple[dict[str, Any], ...]:
    """Planned cells (without a plan: the product of every swept value, each with ``seeds``
    seeds) with fewer usable seeds than planned."""
    values = [sorted(trials[a].dropna().unique(), key=_sort_key) for a in axes]
    by_cell = dict(list(trials.groupby(axes, dropna=False, observed=True)))
    missing = []
    for cell in itertools.product(*values):
        expected_seeds = (seeds or 1) if planned is None else planned[tuple(map(_cell_value, cell))]
        if not expected_seeds:
            continue
        group = by_cell.get(cell)
        n_ok = 0 if group is None else int(group["ok"].sum())
        if n_ok >= expected_seeds:
            continue
        if group is None:
            reason = "no trial in results.csv"
        else:
            bad = group[~group["ok"]]
            reason = "; ".join(
                f"seed {_format.plain(row[SEED])}: {_failure(row)}" for _, row in bad.iterrows()
            )
            reason = reason or f"only {n_ok} seed(s) in results.csv"
        missing.append(
            {
                "cell": {a: _format.plain(v) for a, v in zip(axes, cell, strict=True)},
                "seeds_ok": n_ok,
                "seeds_expected": expected_seeds,
                "reason": reason,
            }
        )
    return tuple(missing)


def _failure(trial: pd.Series) -> str:
    if trial["error"]:
        return trial["error"]
    if trial["status"] == FINISHED:
        return "finished without the metric"
    return trial["status"].lower() or "no status"


def _sort_key(value: Any) -> tuple[int, Any]:
    return (0, value) if isinstance(value, int | float | np.number) else (1, str(value))
