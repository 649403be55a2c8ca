"""``analyze`` on synthetic experiment directories: outputs, numbers, refusals and errors.

The directories are written in the exact format of the sweep runner. Errors follow a known
joint law and times a known Amdahl law, so the analysis is checked against the truth:
E(N, D) = 0.05 + 20/N^0.3 + 3/D^0.4, serial fraction 0.1 in the training loop, and a 30 s
start-up on top for the whole trial.
"""

from __future__ import annotations

import base64
import csv
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib.image
import numpy as np
import pandas as pd
import pytest

from contract.rows import latency_column
from orchestrator.analysis import AnalysisError, AnalysisResult, analyze

REPO = Path(__file__).resolve().parents[2]
PLOTS = (
    "model_axis",
    "data_axis",
    "joint_fit",
    "compute_axis",
    "cost_frontier",
    "learning_curves",
    "convergence",
    "inference",
)
# What the trials measured besides quality (inference, convergence, utilisation), as results.csv
# columns: latency in ms grows with the model, and is 8x as long at batch 32.
MEASURES = [
    "latency_p50_ms_b1", "latency_p95_ms_b1", "latency_p99_ms_b1", "latency_batches_b1",
    "latency_p50_ms_b32", "latency_p95_ms_b32", "latency_p99_ms_b32", "latency_batches_b32",
    "inference_examples_per_s", "converged_level", "device", "model_flops_per_s", "mfu",
    "peak_tflops", "peak_gpu_memory_gib", "peak_host_rss_gib",
]  # fmt: skip
H100 = "NVIDIA H100 80GB HBM3"
POINTS_PER_EPOCH = 4  # train.eval_every_steps: a quarter of an epoch


def latency_ms(params_non_embedding: float, batch: int) -> float:
    return (0.5 + params_non_embedding / 1e7) * (1 if batch == 1 else 8)


PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

Analysed = tuple[Path, AnalysisResult]

LAW = {"E": 0.05, "A": 20.0, "alpha": 0.3, "B": 3.0, "beta": 0.4}
SERIAL_FRACTION = 0.1
START_UP_S = 30.0
FULL_TRAIN_EXAMPLES = 10_000
TOKENS_PER_EXAMPLE = 40
EPOCHS = 3
# name: (params_total, params_non_embedding), roughly the BERT ladder's.
MODELS = {
    "bert-tiny": (4_386_178, 393_216),
    "bert-mini": (11_170_000, 3_145_728),
    "bert-small": (28_760_000, 12_582_912),
}
# Three more rungs, for sweeps of six model sizes.
LADDER = MODELS | {
    "bert-medium": (41_370_000, 25_165_824),
    "bert-base": (109_480_000, 85_054_464),
    "bert-large": (335_140_000, 302_315_520),
}
FRACTIONS = (0.1, 0.3, 1.0)
WORKERS = (1, 2, 4)
SEEDS = (0, 1)
FAILED = ("bert-small", 0.3, 2, 1)  # (model, fraction, workers, seed) of the one failed trial
OOM = "torch.OutOfMemoryError: CUDA out of memory"

COLUMNS = [
    "trial_id", "label", "status", "error", "model.name", "model.num_layers",
    "data.train_fraction", "compute.num_workers", "train.seed", "params_total",
    "params_non_embedding", "train_examples", "global_batch", "per_worker_batch", "use_gpu",
    "gpus_per_worker", "cpus_per_worker", "epochs_completed", "train_time_s", "trial_wall_s",
    "examples_per_s", "tokens_per_s", "train_tokens", "eval_loss", "eval_accuracy", "eval_f1",
    "best_accuracy", "train_loss",
]  # fmt: skip


def true_error(params_non_embedding: float, train_examples: float) -> float:
    return (
        LAW["E"]
        + LAW["A"] * params_non_embedding ** -LAW["alpha"]
        + LAW["B"] * train_examples ** -LAW["beta"]
    )


def write_experiment(
    directory: Path,
    *,
    models: tuple[str, ...] = tuple(MODELS),
    fractions: tuple[float, ...] = FRACTIONS,
    workers: tuple[int, ...] = WORKERS,
    seeds: tuple[int, ...] = SEEDS,
    failed: tuple[tuple[str, float, int, int], ...] = (FAILED,),
    dropped: tuple[tuple[str, float], ...] = (),
    shifted: dict[tuple[str, float, int], float] | None = None,
    accuracy: dict[tuple[str, float, int, int], float] | None = None,
    chance: float | None = None,
    names: dict[str, tuple[str, int]] | None = None,
    noise: float = 0.003,
    measures: bool = True,
    only: Callable[[str, float, int, int], bool] | None = None,
) -> Path:
    """Write experiment.json, results.csv and histories; return the directory.

    ``failed`` trials get status ERROR; ``dropped`` (model, fraction) cells are left out of
    results.csv at every worker count; ``shifted`` adds to the accuracy of (model, fraction,
    workers) cells, as a broken strong-scaling setup would; ``accuracy`` sets the final
    accuracy of single (model, fraction, workers, seed) trials (a diverged or a lucky one);
    ``chance`` writes the chance_accuracy column newer trials report; ``names`` writes a model
    as a local directory and a depth, (model.name, model.num_layers); ``measures`` writes the
    inference, convergence and utilisation columns and evaluation points (False: a sweep from
    before them). ``only`` keeps the (model, fraction, workers, seed) trials it accepts, and
    writes them as the plan: a union of grids, not their product.
    """
    rng = np.random.default_rng(0)
    directory.mkdir(parents=True, exist_ok=True)
    axes = ["model.name", "data.train_fraction", "compute.num_workers"]
    columns = [*COLUMNS, *(["chance_accuracy"] if chance is not None else [])]
    columns += MEASURES if measures else []
    rows = []
    for model in models:
        total, non_embedding = LADDER[model]
        name, layers = (names or {}).get(model, (model, ""))
        for fraction in fractions:
            if (model, fraction) in dropped:
                continue
            examples = round(fraction * FULL_TRAIN_EXAMPLES)
            # The loop's time on one worker grows with parameters × examples, like the FLOPs.
            t1 = 1e-9 * total * examples * EPOCHS
            for w in workers:
                for seed in seeds:
                    if only is not None and not only(model, fraction, w, seed):
                        continue
                    trial_id = f"t{len(rows):03d}"
                    label = f"{model}·f{fraction:g}·w{w}·s{seed}"
                    row = dict.fromkeys(columns, "") | {
                        "trial_id": trial_id,
                        "label": label,
                        "model.name": name,
                        "model.num_layers": layers,
                        "data.train_fraction": fraction,
                        "compute.num_workers": w,
                        "train.seed": seed,
                        "params_total": total,
                        "params_non_embedding": non_embedding,
                        "train_examples": examples,
                        "global_batch": 32,
                        "per_worker_batch": 32 // w,
                        "use_gpu": True,
                        "gpus_per_worker": 1,
                        "cpus_per_worker": 4,
                    }
                    if (model, fraction, w, seed) in failed:
                        rows.append(row | {"status": "ERROR", "error": OOM, "trial_wall_s": 12.0})
                        continue
                    error = true_error(non_embedding, examples) + rng.normal(0.0, noise)
                    score = 1.0 - error + (shifted or {}).get((model, fraction, w), 0.0)
                    score = (accuracy or {}).get((model, fraction, w, seed), score)
                    train_time = t1 * (SERIAL_FRACTION + (1 - SERIAL_FRACTION) / w)
                    train_time *= 1 + rng.normal(0.0, 0.01)
                    throughput = examples * EPOCHS / train_time
                    measured = _measures(total, non_embedding, w, score, throughput)
                    rows.append(
                        row
                        | {
                            "status": "TERMINATED",
                            "epochs_completed": EPOCHS,
                            "train_time_s": train_time,
                            "trial_wall_s": train_time + START_UP_S,
                            "examples_per_s": throughput,
                            "tokens_per_s": throughput * TOKENS_PER_EXAMPLE,
                            "train_tokens": examples * EPOCHS * TOKENS_PER_EXAMPLE,
                            "eval_loss": 2 * error,
                            "eval_accuracy": score,
                            "eval_f1": score - 0.02,
                            "best_accuracy": score + 0.005,
                            "train_loss": 1.5 * error,
                        }
                        | ({"chance_accuracy": chance} if chance is not None else {})
                        | (measured if measures else {})
                    )
                    _write_history(
                        directory / "trials" / trial_id,
                        error,
                        train_time,
                        examples,
                        final_error=(1.0 - score) if measures else None,
                    )
    planned = None
    if only is not None:
        # As run writes it: every trial's axis values, JSON null where a value is unset.
        planned = [
            {a: row[a] if row[a] != "" else None for a in [*axes, "model.num_layers", "train.seed"]}
            for row in rows
        ]
    (directory / "experiment.json").write_text(
        json.dumps(
            {
                "name": directory.name,
                "primary_metric": "accuracy",
                "axes": axes,
                "seeds": list(seeds),
                "num_trials": len(models) * len(fractions) * len(workers) * len(seeds),
            }
            | ({"planned": planned} if planned is not None else {})
        )
    )
    with (directory / "results.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return directory


def _measures(
    total: int, non_embedding: int, workers: int, score: float, throughput: float
) -> dict[str, Any]:
    flops = 6 * non_embedding * throughput * TOKENS_PER_EXAMPLE / workers
    row = {
        latency_column(stat, batch): (
            48 if stat == "batches" else latency_ms(non_embedding, batch) * factor
        )
        for batch in (1, 32)
        for stat, factor in (("p50_ms", 1.0), ("p95_ms", 1.2), ("p99_ms", 1.5), ("batches", 1))
    }
    return row | {
        "inference_examples_per_s": 2e9 / total * workers,
        "converged_level": 0.95 * score,
        "device": H100,
        "model_flops_per_s": flops,
        "mfu": flops / 989e12,
        "peak_tflops": 989.0,
        "peak_gpu_memory_gib": 1 + 16 * total / 2**30,
        "peak_host_rss_gib": 2.5,
    }


def _points(epoch: int, final_error: float, train_time: float, examples: int) -> list[dict]:
    """The evaluations of one epoch: every quarter epoch, the error falling linearly by 0.1
    over the run to the final value (so 95 % of the final accuracy comes late in the run)."""
    points = []
    total_steps = EPOCHS * POINTS_PER_EPOCH
    for quarter in range(1, POINTS_PER_EPOCH + 1):
        done = ((epoch - 1) * POINTS_PER_EPOCH + quarter) / total_steps
        e = final_error + 0.1 * (1 - done)
        points.append(
            {
                "epoch": epoch - 1 + quarter / POINTS_PER_EPOCH,
                "step": round(done * EPOCHS * examples / 32),
                "examples_seen": round(done * EPOCHS * examples),
                "train_time_s": done * train_time,
                "eval_loss": 2 * e,
                "eval_accuracy": 1 - e,
                "eval_f1": 1 - e - 0.02,
            }
        )
    return points


def _write_history(
    directory: Path,
    error: float,
    train_time: float,
    examples: int,
    *,
    final_error: float | None = None,
) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    lines = []
    for epoch in range(1, EPOCHS + 1):
        e = error + 0.1 * (EPOCHS - epoch) / EPOCHS  # improves each epoch, ends at the final value
        points = {}
        if final_error is not None:
            points["eval_points"] = _points(epoch, final_error, train_time, examples)
        lines.append(
            json.dumps(
                points
                | {
                    "epoch": epoch,
                    "train_loss": 1.5 * e,
                    "eval_loss": 2 * e,
                    "eval_accuracy": 1 - e,
                    "eval_f1": 1 - e - 0.02,
                    "examples_per_s": examples / (train_time / EPOCHS),
                    "tokens_per_s": TOKENS_PER_EXAMPLE * examples / (train_time / EPOCHS),
                    "epoch_time_s": train_time / EPOCHS,
                    "train_time_s": train_time * epoch / EPOCHS,
                    "examples_seen": examples * epoch,
                    "train_tokens": examples * epoch * TOKENS_PER_EXAMPLE,
                }
            )
        )
    (directory / "history.jsonl").write_text("\n".join(lines) + "\n")


@pytest.fixture
def make_experiment(tmp_path: Path) -> Callable[..., Path]:
    """``make_experiment(name, **options)`` writes a synthetic experiment under tmp_path."""

    def make(name: str = "synthetic", **options: Any) -> Path:
        return write_experiment(tmp_path / name, **options)

    return make


@pytest.fixture(scope="module")
def analysed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, AnalysisResult]:
    """The default experiment (3 models × 3 fractions × 3 worker counts × 2 seeds, one trial
    failed), analysed once for the module: a full analysis takes seconds."""
    directory = write_experiment(tmp_path_factory.mktemp("analysed") / "synthetic")
    return directory, analyze(directory)


def test_every_output_is_written(analysed: Analysed) -> None:
    directory, result = analysed
    expected = {"summary.json", "report.md", "report.html"}
    expected |= {f"{plot}.{ext}" for plot in PLOTS for ext in ("png", "svg")}
    assert set(result.paths) == expected
    for name, path in result.paths.items():
        assert path == directory / "analysis" / name
        assert path.stat().st_size > 1000, name
    for plot in PLOTS:
        assert (directory / "analysis" / f"{plot}.png").read_bytes().startswith(PNG_MAGIC)
        assert "<svg" in (directory / "analysis" / f"{plot}.svg").read_text()
    on_disk = json.loads(result.paths["summary.json"].read_text())
    assert on_disk["recommendation"] == json.loads(json.dumps(result.summary["recommendation"]))


def test_summary_counts_trials_and_names_the_failed_cell(analysed: Analysed) -> None:
    _, result = analysed
    trials = result.summary["trials"]
    assert (trials["in_results"], trials["finished"], trials["failed"]) == (54, 53, 1)
    assert trials["failed_trials"][0]["error"] == OOM
    model, fraction, workers, seed = FAILED
    (missing,) = result.summary["missing_cells"]
    assert missing["cell"] == {
        "model": model,
        "data.train_fraction": fraction,
        "compute.num_workers": workers,
    }
    assert (missing["seeds_ok"], missing["seeds_expected"]) == (1, 2)
    assert missing["reason"] == f"seed {seed}: {OOM}"


def test_joint_fit_recovers_the_law_the_sweep_was_generated_from(analysed: Analysed) -> None:
    (joint,) = analysed[1].summary["fits"]["joint"]
    assert joint["refusal"] is None
    params = joint["fit"]["params"]
    # One decade of data and three models: beta is the least determined constant.
    assert params["alpha"] == pytest.approx(LAW["alpha"], abs=0.05)
    assert params["beta"] == pytest.approx(LAW["beta"], abs=0.1)
    assert params["E"] == pytest.approx(LAW["E"], abs=0.02)
    assert joint["fit"]["r2"] > 0.99


def test_axis_fits_exist_per_series_with_intervals(analysed: Analysed) -> None:
    fits = analysed[1].summary["fits"]
    model_axis, data_axis = fits["model_axis"]["curves"], fits["data_axis"]["curves"]
    assert [c["key"] for c in model_axis] == [{"data.train_fraction": f} for f in (0.1, 0.3, 1.0)]
    assert [c["key"] for c in data_axis] == [{"model": m} for m in tuple(MODELS)]
    for curve in model_axis:
        alpha = curve["fit"]["params"]["alpha"]
        low, high = curve["fit"]["ci95"]["alpha"]
        assert alpha == pytest.approx(LAW["alpha"], abs=0.08)
        assert low <= alpha <= high
    for curve in data_axis:
        assert curve["fit"]["r2"] > 0.95
        assert set(curve["fit"]["params"]) == {"E_inf", "B", "beta"}


def test_amdahl_recovers_the_serial_fraction_of_the_training_loop(analysed: Analysed) -> None:
    amdahl = analysed[1].summary["fits"]["amdahl"]
    for loop, whole in zip(amdahl["train_time_s"], amdahl["trial_wall_s"], strict=True):
        assert loop["fit"]["params"]["s"] == pytest.approx(SERIAL_FRACTION, abs=0.02)
        # The start-up is serial too, so the whole trial parallelises worse than its loop.
        assert whole["fit"]["params"]["s"] > loop["fit"]["params"]["s"]


def test_compute_table_strong_scaling_and_cost(analysed: Analysed) -> None:
    directory, result = analysed
    summary = result.summary
    assert summary["compute"]["strong_scaling"]["status"] == "ok"
    assert summary["compute"]["strong_scaling"]["flags"] == []
    cells = pd.DataFrame(summary["compute"]["cells"])
    at_one = cells[cells["compute.num_workers"] == 1]
    assert (at_one["speedup_train_time_s"] == 1.0).all()
    four = cells[cells["compute.num_workers"] == 4]["speedup_train_time_s"]
    assert four.between(1 / (0.1 + 0.9 / 4) - 0.2, 1 / (0.1 + 0.9 / 4) + 0.2).all()

    trials = pd.read_csv(directory / "results.csv")
    expected_hours = (trials["compute.num_workers"] * trials["trial_wall_s"]).sum() / 3600
    cost = summary["cost"]
    assert cost["unit"] == "GPU-hours"
    assert cost["total_hours"] == pytest.approx(expected_hours)
    assert cost["hours_on_failed_trials"] == pytest.approx(2 * 12.0 / 3600)
    assert cost["total_money"] is None
    frontier = [f["error_mean"] for f in cost["frontier"]]
    assert frontier == sorted(frontier, reverse=True)  # each frontier cell beats the cheaper ones


def test_recommendation_with_default_options(analysed: Analysed) -> None:
    recommendation = analysed[1].summary["recommendation"]
    # Within ε = 0.01 of the best at full data only the biggest model qualifies; it needs all
    # the data; with no budget the fastest worker count at ≥ 50 % efficiency is 4.
    assert recommendation["model"]["choice"] == "bert-small"
    assert recommendation["data"]["choice"] == 1.0
    assert recommendation["workers"]["choice"] == 4


def test_html_is_self_contained_with_the_recommendation_first(analysed: Analysed) -> None:
    html = analysed[1].paths["report.html"].read_text()
    images = re.findall(r'<img [^>]*src="([^"]+)"', html)
    assert len(images) == len(PLOTS)
    for src in images:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1]).startswith(PNG_MAGIC)
    assert html.index("Recommendation") < html.index("<img")
    assert "bert-small" in html[: html.index("<img")]


def test_markdown_report_links_its_plots(analysed: Analysed) -> None:
    markdown = analysed[1].paths["report.md"].read_text()
    assert markdown.index("## Recommendation") < markdown.index("## Fitted laws")
    for plot in PLOTS:
        assert f"]({plot}.png)" in markdown


def test_terminal_summary_starts_with_the_recommendation(analysed: Analysed) -> None:
    lines = analysed[1].render_terminal().splitlines()
    assert lines[1].strip().startswith("Smallest model within ε = 0.01 of the best: bert-small")
    assert lines[2].strip().startswith("Least data for bert-small")
    assert lines[3].strip().startswith("Workers for bert-small at 100 % data: 4")
    table = "\n".join(lines[4:])
    assert all(model in table for model in tuple(MODELS))
    assert "53 of 54 trials finished, 1 failed" in table


def test_target_and_epsilon_pick_a_smaller_model_and_fraction(make_experiment) -> None:
    directory = make_experiment(workers=(1,), failed=())
    # True accuracies at full data: tiny 0.455, mini 0.650, small 0.726; for bert-mini the
    # 30 % fraction is 0.047 below full data, the 10 % one 0.114.
    result = analyze(directory, target=0.6, epsilon=0.06)
    recommendation = result.summary["recommendation"]
    assert recommendation["model"]["choice"] == "bert-mini"
    assert recommendation["data"]["choice"] == 0.3
    assert recommendation["workers"]["choice"] is None  # one worker count: nothing to compare
    assert result.summary["fits"]["amdahl"]["refusal"].startswith("compute.num_workers was not")
    assert "compute_axis.png" not in result.paths


def test_an_unreachable_target_is_said_so(make_experiment) -> None:
    directory = make_experiment(models=("bert-small",), fractions=(1.0,), workers=(1,))
    answer = analyze(directory, target=0.9).summary["recommendation"]["model"]
    assert answer["choice"] is None
    assert answer["text"].startswith("none at 100 % data; the best is bert-small")


@pytest.mark.parametrize(
    ("options", "choice"),
    [
        ({"time_budget_s": 600.0}, 2),  # 1 worker takes ~15 min; 2 is the cheaper of 2 and 4
        ({"money_budget": 0.6, "price_per_gpu_hour": 2.0}, 2),  # 4 workers cost ~0.69
        ({"time_budget_s": 60.0}, None),  # nothing finishes in a minute
    ],
)
def test_worker_choice_under_a_budget(make_experiment, options: dict, choice: int | None) -> None:
    directory = make_experiment(models=("bert-small",), fractions=(1.0,), failed=())
    workers = analyze(directory, **options).summary["recommendation"]["workers"]
    assert workers["choice"] == choice
    if choice is None:
        assert workers["text"].startswith("none fits the budget")


def test_strong_scaling_flags_a_cell_whose_metric_moves_with_workers(make_experiment) -> None:
    directory = make_experiment(
        models=("bert-small",), fractions=(1.0,), failed=(), shifted={("bert-small", 1.0, 4): -0.05}
    )
    check = analyze(directory).summary["compute"]["strong_scaling"]
    assert check["status"] == "flagged"
    (flag,) = check["flags"]
    assert (flag["model"], flag["compute.num_workers"], flag["reference_workers"]) == (
        "bert-small",
        4,
        1,
    )
    assert flag["difference"] == pytest.approx(-0.05, abs=0.01)


def test_loss_as_the_metric(make_experiment) -> None:
    directory = make_experiment(models=("bert-small",), fractions=(1.0,), failed=())
    summary = analyze(directory, metric="loss").summary
    assert summary["experiment"]["metric"] == "loss"
    assert summary["experiment"]["error"] == "eval loss"
    assert summary["cells"][0]["error_mean"] == pytest.approx(summary["cells"][0]["metric_mean"])


def test_missing_cells_are_listed_and_their_curves_refused(make_experiment) -> None:
    directory = make_experiment(workers=(1,), failed=(), dropped=(("bert-mini", 0.3),))
    summary = analyze(directory).summary
    (missing,) = summary["missing_cells"]
    assert missing["cell"]["model"] == "bert-mini"
    assert missing["reason"] == "no trial in results.csv"
    by_model = {c["key"]["model"]: c for c in summary["fits"]["data_axis"]["curves"]}
    assert by_model["bert-mini"]["fit"] is None
    assert by_model["bert-mini"]["refusal"].startswith("too few points to fit: 2 distinct D")
    assert by_model["bert-tiny"]["fit"] is not None
    assert summary["fits"]["joint"][0]["fit"] is not None  # 8 of 9 cells still fit 5 constants


def test_a_union_of_grids_expects_only_its_cells(make_experiment) -> None:
    # Every model x fraction on one worker with one seed; a middle model at all data on 1, 2
    # and 4 workers with every seed: what a sweep with `axes` as a list of two grids runs.
    swept = list(MODELS)[1]
    directory = make_experiment(
        failed=(),
        only=lambda model, fraction, w, seed: (
            (w == 1 and seed == SEEDS[0]) or (model == swept and fraction == max(FRACTIONS))
        ),
    )
    summary = analyze(directory).summary
    assert summary["missing_cells"] == [] and summary["absent_cells"] == []
    for clock in ("train_time_s", "trial_wall_s"):
        (curve,) = summary["fits"]["amdahl"][clock]  # the one model swept on workers
        assert curve["key"]["model"] == swept and curve["fit"]["ci95"] is not None
    assert all(c["fit"] is not None for c in summary["fits"]["data_axis"]["curves"])
    assert summary["fits"]["joint"][0]["fit"] is not None
    # The chosen model ran on one worker count: workers are compared where they were swept.
    recommendation = summary["recommendation"]
    chosen = recommendation["model"]["choice"]
    assert chosen != swept
    assert recommendation["workers"]["question"].startswith(
        f"Workers for {swept} at 100 % data (the sweep ran {chosen} at 100 % data on one"
    )
    assert recommendation["workers"]["choice"] is not None


def test_a_planned_trial_that_never_ran_is_missing(make_experiment) -> None:
    directory = make_experiment(failed=(), only=lambda model, fraction, w, seed: w == 1)
    experiment = json.loads((directory / "experiment.json").read_text())
    planned = experiment["planned"][0]
    experiment["planned"].append(planned | {"train.seed": 99})
    (directory / "experiment.json").write_text(json.dumps(experiment))
    (missing,) = analyze(directory).summary["missing_cells"]
    assert missing["seeds_ok"] == len(SEEDS) and missing["seeds_expected"] == len(SEEDS) + 1


def test_too_few_points_everywhere_still_writes_a_report(make_experiment) -> None:
    directory = make_experiment(
        models=("bert-tiny", "bert-mini"), fractions=(0.1, 1.0), workers=(1, 2), failed=()
    )
    result = analyze(directory, flops_budget=1e14)
    fits = result.summary["fits"]
    (allocation,) = result.summary["compute_optimal"]["allocations"]
    assert allocation["refusal"].startswith("joint fit: too few points to fit")
    refusals = [c["refusal"] for axis in ("model_axis", "data_axis") for c in fits[axis]["curves"]]
    refusals += [j["refusal"] for j in fits["joint"]]
    assert refusals and all("too few points to fit" in r for r in refusals)
    # Amdahl's one shape parameter needs only two worker counts.
    assert all(c["fit"] for c in fits["amdahl"]["train_time_s"])
    assert result.paths["report.html"].is_file()
    assert "refused" in result.paths["report.md"].read_text()


def test_unfinished_and_failed_sweeps_are_user_errors(make_experiment) -> None:
    everything_failed = tuple(("bert-tiny", 1.0, 1, seed) for seed in (0, 1))
    directory = make_experiment(
        "failed", models=("bert-tiny",), fractions=(1.0,), workers=(1,), failed=everything_failed
    )
    with pytest.raises(AnalysisError, match=r"all 2 trials in .*results.csv failed.*out of memory"):
        analyze(directory)

    directory = make_experiment("pending", models=("bert-tiny",), fractions=(1.0,), workers=(1,))
    results = pd.read_csv(directory / "results.csv")
    results.assign(status="PENDING", eval_accuracy=None).to_csv(
        directory / "results.csv", index=False
    )
    with pytest.raises(AnalysisError, match=r"no finished trial .*\(2 PENDING\)"):
        analyze(directory)

    (directory / "results.csv").write_text(",".join(results.columns) + "\n")
    with pytest.raises(AnalysisError, match=r"no results: .* has a header but no trials"):
        analyze(directory)
    (directory / "results.csv").unlink()
    with pytest.raises(AnalysisError, match=r"no results: .*results.csv does not exist"):
        analyze(directory)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"metric": "bleu"}, r"metric 'bleu' is not in .*; available: accuracy, f1, loss"),
        ({"model": "bert-huge"}, r"model 'bert-huge' has no finished trial .*models: bert-tiny"),
        ({"money_budget": 10.0}, r"a money budget needs a price per GPU-hour"),
        ({"epsilon": -0.1}, r"epsilon must be ≥ 0"),
    ],
)
def test_bad_options_are_user_errors(
    make_experiment: Callable[..., Path], options: dict, message: str
) -> None:
    directory = make_experiment(models=("bert-tiny",), fractions=(1.0,), workers=(1,))
    with pytest.raises(AnalysisError, match=message):
        analyze(directory, **options)


def test_not_an_experiment_directory(tmp_path: Path) -> None:
    with pytest.raises(AnalysisError, match="experiment directory not found"):
        analyze(tmp_path / "nowhere")
    with pytest.raises(AnalysisError, match=r"experiment.json not found"):
        analyze(tmp_path)
    (tmp_path / "experiment.json").write_text('{"name": "x"}')
    with pytest.raises(AnalysisError, match=r"lacks key\(s\): primary_metric, axes, seeds"):
        analyze(tmp_path)


def test_importing_analysis_pulls_in_no_ray_torch_or_transformers() -> None:
    code = (
        "import sys, orchestrator.analysis; "
        "print(sorted(m for m in ('ray', 'torch', 'transformers') if m in sys.modules))"
    )
    output = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout
    assert output.strip() == "[]"


SIX_MODELS = tuple(LADDER)
SIX_FRACTIONS = (1 / 32, 1 / 16, 1 / 8, 1 / 4, 1 / 2, 1.0)
DIVERGED = ("bert-medium", 1 / 4, 1, 1)  # one trial of 108 that diverged to chance
FLOPS_BUDGET = 1e15


@pytest.fixture(scope="module")
def ladder(tmp_path_factory: pytest.TempPathFactory) -> Analysed:
    """6 models × 6 fractions × 3 seeds on one worker (108 trials), one of them diverged to
    accuracy 0.5, analysed with a FLOPs budget."""
    directory = write_experiment(
        tmp_path_factory.mktemp("ladder") / "ladder",
        models=SIX_MODELS,
        fractions=SIX_FRACTIONS,
        workers=(1,),
        seeds=(0, 1, 2),
        failed=(),
        accuracy={DIVERGED: 0.5},
    )
    return directory, analyze(directory, flops_budget=FLOPS_BUDGET)


def test_one_diverged_trial_is_flagged_and_the_laws_hold(ladder: Analysed) -> None:
    summary = ladder[1].summary
    (joint,) = summary["fits"]["joint"]
    assert joint["fit"]["params"]["alpha"] == pytest.approx(LAW["alpha"], abs=0.05)
    assert joint["fit"]["params"]["beta"] == pytest.approx(LAW["beta"], abs=0.05)
    (outlier,) = summary["outliers"]
    model, fraction, workers, seed = DIVERGED
    assert (outlier["model"], outlier["data.train_fraction"]) == (model, fraction)
    assert (outlier["compute.num_workers"], outlier["train.seed"]) == (workers, seed)
    assert outlier["metric"] == 0.5
    # The joint law, the N-axis law at 25 % and the D-axis law of bert-medium all saw it.
    assert set(outlier["flagged_by"]) == {
        "joint law",
        "N-axis law (train_fraction=0.25)",
        "D-axis law (model=bert-medium)",
    }
    terminal = ladder[1].render_terminal()
    assert "Outlier: bert-medium at 25 % data, 1 worker, seed 1: accuracy 0.5000, " in terminal
    assert "× the noise above the " in terminal
    assert "Outlier: bert-medium at 25 % data" in ladder[1].paths["report.md"].read_text()


def test_leave_largest_out_is_reported_next_to_r2(ladder: Analysed) -> None:
    (joint,) = ladder[1].summary["fits"]["joint"]
    by_axis = {h["held_out"]: h for h in joint["leave_largest_out"]}
    assert set(by_axis) == {"N", "D"}
    assert by_axis["N"]["value"] == LADDER["bert-large"][1]
    assert all(h["mean_abs_relative_error"] < 0.1 for h in by_axis.values())
    for curve in ladder[1].summary["fits"]["model_axis"]["curves"]:
        assert curve["leave_largest_out"]["held_out"] == "N"
    assert "leave-largest-out error" in ladder[1].paths["report.md"].read_text()


def test_compute_optimal_allocation_for_a_flops_budget(ladder: Analysed) -> None:
    optimal = ladder[1].summary["compute_optimal"]
    assert optimal["flops_budget"] == FLOPS_BUDGET
    (allocation,) = optimal["allocations"]
    p = ladder[1].summary["fits"]["joint"][0]["fit"]["params"]
    # C = 6 · N · examples · tokens per example · epochs.
    nd = FLOPS_BUDGET / (6 * TOKENS_PER_EXAMPLE * EPOCHS)
    a, b = p["alpha"], p["beta"]
    n_star = (a * p["A"] / (b * p["B"])) ** (1 / (a + b)) * nd ** (b / (a + b))
    assert allocation["params"] == pytest.approx(n_star, rel=1e-6)
    assert allocation["examples"] == pytest.approx(nd / n_star, rel=1e-6)
    assert allocation["error"] == pytest.approx(true_error(n_star, nd / n_star), abs=0.02)
    for name in ("params", "examples", "error"):
        low, high = allocation[f"{name}_ci95"]
        assert low <= allocation[name] <= high
    assert allocation["params_exponent"] + allocation["examples_exponent"] == pytest.approx(1.0)
    assert "Compute-optimal allocation for 1.00e+15 FLOPs: N* = " in ladder[1].render_terminal()


def test_an_n1_winner_is_caveated(make_experiment) -> None:
    directory = make_experiment(workers=(1,), failed=(("bert-small", 1.0, 1, 1),))
    answer = analyze(directory).summary["recommendation"]["model"]
    assert answer["choice"] == "bert-small"
    assert "(n = 1)" in answer["text"]
    assert "bert-small rests on 1 seed: no spread of its own" in answer["text"]


def test_a_model_whose_reference_cells_failed_is_read_at_more_workers(make_experiment) -> None:
    failed = tuple(("bert-small", f, 1, s) for f in FRACTIONS for s in SEEDS)
    result = analyze(make_experiment(workers=(1, 2), failed=failed))
    summary = result.summary
    assert [q["cell"]["data.train_fraction"] for q in summary["quality_workers"]] == list(FRACTIONS)
    assert {q["workers"] for q in summary["quality_workers"]} == {2}
    assert summary["quality_workers"][0]["reason"] == f"seed 0: {OOM}; seed 1: {OOM}"
    # bert-small does not vanish: it has its data curve and is still the best model.
    curves = {c["key"]["model"]: c for c in summary["fits"]["data_axis"]["curves"]}
    assert curves["bert-small"]["fit"] is not None
    answer = summary["recommendation"]["model"]
    assert answer["choice"] == "bert-small"
    assert "bert-small is read at 2 workers (none finished with 1)" in answer["text"]
    assert (
        f"Read at 2 workers: bert-small at 10 %, 30 %, 100 % data (at 1 worker: seed 0: {OOM}"
        in result.render_terminal()
    )


def test_a_failed_full_data_cell_is_named_not_called_all_of_it(make_experiment) -> None:
    failed = tuple(("bert-small", 1.0, w, s) for w in (1, 2) for s in SEEDS)
    summary = analyze(make_experiment(workers=(1, 2), failed=failed)).summary
    (absent,) = summary["absent_cells"]
    assert absent["cell"] == {"model": "bert-small", "data.train_fraction": 1.0}
    model = summary["recommendation"]["model"]
    assert f"the 100 % cell of bert-small failed (1 worker, seed 0: {OOM}; 3 more)" in model["text"]
    data = analyze(make_experiment("again", workers=(1, 2), failed=failed), model="bert-small")
    text = data.summary["recommendation"]["data"]["text"]
    assert "all of it" not in text
    assert "the largest fraction that finished and learned, 30 %" in text
    assert "the 100 % cell of bert-small failed" in text


def test_cells_at_chance_are_left_out_of_the_fits(make_experiment) -> None:
    at_chance = {("bert-tiny", 0.1, 1, s): 0.3 for s in SEEDS}
    directory = make_experiment(workers=(1,), failed=(), chance=0.3, accuracy=at_chance)
    result = analyze(directory)
    summary = result.summary
    (cell,) = summary["did_not_learn"]
    assert (cell["model"], cell["data.train_fraction"], cell["chance"]) == ("bert-tiny", 0.1, 0.3)
    assert "chance_accuracy in results.csv" in summary["chance"]["source"]
    (joint,) = summary["fits"]["joint"]
    assert joint["fit"]["n_points"] == 9 * len(SEEDS) - len(SEEDS)
    tiny = {c["key"]["model"]: c for c in summary["fits"]["data_axis"]["curves"]}["bert-tiny"]
    assert [p["x"] for p in tiny["did_not_learn"]] == [0.1 * FULL_TRAIN_EXAMPLES]
    assert tiny["fit"] is None and "2 distinct D" in tiny["refusal"]
    assert (
        "Did not learn (within noise of chance; left out of the fits): bert-tiny at 10 % data"
        in (result.render_terminal())
    )
    row = next(
        c for c in summary["cells"] if c["model"] == "bert-tiny" and c["data.train_fraction"] == 0.1
    )
    assert row["learned"] is False
    assert "did not learn" in result.paths["report.md"].read_text()


def test_a_sweep_without_chance_columns_says_chance_is_unknown(analysed: Analysed) -> None:
    summary = analysed[1].summary
    assert summary["chance"]["source"].startswith("unknown for accuracy")
    assert summary["did_not_learn"] == []


def test_ties_within_seed_noise_go_to_the_smaller_model(make_experiment) -> None:
    # bert-small 0.807 ± 0.110 against bert-mini 0.793 ± 0.006: not a real difference.
    scores = {
        ("bert-small", 1.0, 1, s): v for s, v in zip((0, 1, 2), (0.68, 0.87, 0.87), strict=True)
    }
    scores |= {
        ("bert-mini", 1.0, 1, s): v for s, v in zip((0, 1, 2), (0.787, 0.793, 0.799), strict=True)
    }
    directory = make_experiment(
        fractions=(1.0,), workers=(1,), seeds=(0, 1, 2), failed=(), accuracy=scores
    )
    answer = analyze(directory).summary["recommendation"]["model"]
    assert answer["choice"] == "bert-mini"
    assert "accuracy 0.7930 ± 0.0060 (n = 3)" in answer["text"]
    assert "(best: bert-small, 0.8067 ± 0.1097 (n = 3), within seed noise)" in answer["text"]


def test_one_lucky_small_fraction_does_not_cut_the_data(make_experiment) -> None:
    # 6.25 % happens to match 100 %, while 50 % is 0.024 short of it.
    fractions = (0.0625, 0.125, 0.25, 0.5, 1.0)
    lucky = {("bert-small", 0.0625, 1, s): 0.726 for s in SEEDS}
    directory = make_experiment(
        models=("bert-small",), fractions=fractions, workers=(1,), failed=(), accuracy=lucky
    )
    answer = analyze(directory).summary["recommendation"]["data"]
    assert answer["choice"] == 1.0
    assert "6.25 % also came within ε, but a larger fraction did not" in answer["text"]


def test_strong_scaling_is_corrected_for_many_comparisons(make_experiment) -> None:
    directory = make_experiment(workers=(1, 2, 4, 8), failed=(), noise=0.01)
    check = analyze(directory).summary["compute"]["strong_scaling"]
    assert check["comparisons"] == 9 * 3
    assert "Holm-corrected to a 5% family-wise error rate" in check["message"]
    assert check["status"] == "ok"


def test_local_model_directories_get_short_names(make_experiment) -> None:
    names = {m: ("/data/checkpoints/minilm", k) for m, k in zip(MODELS, (2, 4, 6), strict=True)}
    directory = make_experiment(workers=(1,), failed=(), names=names)
    result = analyze(directory, model="minilm-L4")
    summary = result.summary
    assert sorted({c["model"] for c in summary["cells"]}) == ["minilm-L2", "minilm-L4", "minilm-L6"]
    assert summary["models"]["minilm-L6"] == "/data/checkpoints/minilm"
    assert summary["recommendation"]["model"]["choice"] == "minilm-L6"
    assert summary["recommendation"]["data"]["text"]
    assert "/data/checkpoints" not in result.render_terminal()
    assert "/data/checkpoints" not in result.paths["report.md"].read_text()
    with pytest.raises(AnalysisError, match=r"'/data/checkpoints/minilm' is 3 models here"):
        analyze(directory, model="/data/checkpoints/minilm")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--epsilon", "-1"], "epsilon must be ≥ 0, got -1.0"),
        (["--epsilon", "nan"], "epsilon must be ≥ 0, got nan"),
        (["--target", "80"], "target 80.0 is outside the range of accuracy (0 to 1); give it as"),
        (["--flops-budget", "0"], "FLOPs budget must be a positive number, got 0.0"),
        (["--price-per-gpu-hour", "inf"], "price per GPU-hour must be a positive number, got inf"),
        (["--time-budget-s", "-5"], "time budget must be a positive number, got -5.0"),
        (["--money-budget", "3"], "a money budget needs a price per GPU-hour"),
        (["--metric", "bleu"], "metric 'bleu' is not in"),
        (["--model", "bert-huge"], "model 'bert-huge' has no finished trial"),
    ],
)
def test_out_of_range_options_are_one_line_errors(
    make_experiment, capsys, monkeypatch, argv: list[str], message: str
) -> None:
    from orchestrator.cli import EXIT_USER_ERROR, main

    monkeypatch.delenv("WANDB_MODE", raising=False)
    directory = make_experiment(models=("bert-tiny",), fractions=(1.0,), workers=(1,))
    assert main(["analyze", str(directory), *argv]) == EXIT_USER_ERROR
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: {message}")


def test_cli_passes_the_flops_budget(make_experiment, capsys, monkeypatch) -> None:
    from orchestrator.cli import main

    monkeypatch.delenv("WANDB_MODE", raising=False)
    directory = make_experiment(workers=(1,), failed=())
    assert main(["analyze", str(directory), "--flops-budget", "1e14"]) == 0
    assert "Compute-optimal allocation for 100T FLOPs" in capsys.readouterr().out
    summary = json.loads((directory / "analysis" / "summary.json").read_text())
    assert summary["options"]["flops_budget"] == 1e14


@pytest.mark.parametrize(
    ("budget", "percentile", "batch", "choice"),
    [
        (1.0, "p95", None, "bert-mini"),  # p95 at batch 1: tiny 0.65, mini 0.98, small 2.1 ms
        (5.0, "p95", None, "bert-small"),
        (0.9, "p95", None, "bert-tiny"),
        (0.9, "p50", None, "bert-mini"),  # p50: mini 0.81 ms
        (10.0, "p95", 32, "bert-mini"),  # batch 32 is 8x: mini 7.8, small 16.9 ms
        (0.1, "p95", None, None),
    ],
)
def test_the_best_model_within_a_latency_budget(
    make_experiment, budget, percentile, batch, choice
) -> None:
    directory = make_experiment(workers=(1,), failed=())
    options = {"latency_percentile": percentile, "latency_batch_size": batch}
    summary = analyze(directory, max_latency_ms=budget, **options).summary
    answer = summary["recommendation"]["latency"]
    assert answer["choice"] == choice
    assert answer["question"].startswith(f"Best model within {budget:g} ms {percentile} latency")
    if choice == "bert-mini" and batch is None and percentile == "p95":
        assert "bert-mini: 0.977 ms p95 at batch 1 (NVIDIA H100 80GB HBM3)" in answer["text"]
        assert "bert-small is better (0.72" in answer["text"] and "takes 2.11 ms" in answer["text"]
    if choice is None:
        assert (
            answer["text"] == "none: the fastest, bert-tiny, takes 0.647 ms (NVIDIA H100 80GB HBM3)"
        )
    assert summary["options"]["latency_batch_size"] == (batch or 1)


def test_latency_options_out_of_range_are_one_line_errors(make_experiment) -> None:
    directory = make_experiment(workers=(1,), failed=())
    with pytest.raises(AnalysisError, match=r"batch size 4 was not measured; .* measured 1, 32"):
        analyze(directory, max_latency_ms=1.0, latency_batch_size=4)
    with pytest.raises(AnalysisError, match="percentile 'p90'; valid: p50, p95, p99"):
        analyze(directory, max_latency_ms=1.0, latency_percentile="p90")
    with pytest.raises(AnalysisError, match="max latency must be a positive number"):
        analyze(directory, max_latency_ms=-1.0)


def test_inference_table_and_figure(analysed: Analysed) -> None:
    directory, result = analysed
    latency = result.summary["inference"]["latency"]
    assert {(r["model"], r["batch_size"]) for r in latency} == {
        (m, b) for m in MODELS for b in (1, 32)
    }
    small = next(r for r in latency if r["model"] == "bert-small" and r["batch_size"] == 1)
    assert small["p50_ms"] == pytest.approx(latency_ms(MODELS["bert-small"][1], 1))
    assert small["trials"] == 3 * 3 * 2 - 1  # every finished trial of the model measured it
    throughput = result.summary["inference"]["throughput"]
    tiny = {
        r["compute.num_workers"]: r["examples_per_s"]
        for r in throughput
        if r["model"] == "bert-tiny"
    }
    assert tiny[4] == pytest.approx(4 * tiny[1])
    assert "inference" in result.summary["plots"]
    report = (directory / "analysis" / "report.md").read_text()
    assert "## Inference" in report and "| bert-small | NVIDIA H100 80GB HBM3 | 1 |" in report


def test_convergence_per_cell_and_workers_by_time_to_target(analysed: Analysed) -> None:
    _, result = analysed
    convergence = result.summary["convergence"]
    assert convergence["level"].startswith("its converged level (train.convergence_fraction")
    cells = {
        (c["model"], c["data.train_fraction"], c["compute.num_workers"]): c
        for c in convergence["cells"]
    }
    # 95 % of the final accuracy is reached 2/3 into the run (the error falls by 0.1 over
    # it, to a final error near 0.27..0.64): steps and examples do not depend on the workers,
    # training seconds do.
    small = [cells[("bert-small", 1.0, w)] for w in WORKERS]
    assert [c["n_reached"] for c in small] == [2, 2, 2]
    assert {c["examples_to"] for c in small} == {2 / 3 * EPOCHS * FULL_TRAIN_EXAMPLES}
    times = [c["time_to_s"] for c in small]
    assert times == sorted(times, reverse=True)
    answer = result.summary["recommendation"]["workers_to_target"]
    assert answer["question"].startswith("Workers for bert-small at 100 % data, by training time")
    assert answer["choice"] == 4 and "the same as by whole-trial time" in answer["text"]
    report = result.paths["report.md"].read_text()
    assert "## Convergence" in report and "## Utilisation" in report


def test_a_target_no_trial_reached_is_never_not_zero(make_experiment) -> None:
    directory = make_experiment(workers=(1, 2), failed=())
    summary = analyze(directory, target=0.72).summary
    convergence = summary["convergence"]
    assert convergence["level"] == "accuracy 0.72 (--target)"
    cells = {(c["model"], c["data.train_fraction"]): c for c in convergence["cells"]}
    assert cells[("bert-small", 1.0)]["n_reached"] == 2
    never = cells[("bert-tiny", 1.0)]
    assert never["n_reached"] == 0 and never["time_to_s"] is None
    trial = next(t for t in convergence["trials"] if t["model"] == "bert-tiny")
    assert trial["reached"] is False and trial["time_to_s"] is None
    report = (directory / "analysis" / "report.md").read_text()
    assert "| bert-tiny | 100 % | 1 | 0/2 | – | – | – |" in report


def test_utilisation_table(analysed: Analysed) -> None:
    _, result = analysed
    rows = {
        (c["model"], c["data.train_fraction"], c["compute.num_workers"]): c
        for c in result.summary["utilisation"]
    }
    cell = rows[("bert-mini", 1.0, 2)]
    assert cell["device"] == "NVIDIA H100 80GB HBM3"
    assert cell["mfu"] == pytest.approx(cell["model_flops_per_s"] / 989e12)
    assert cell["peak_host_rss_gib"] == 2.5 and cell["peak_gpu_memory_gib"] > 1


def test_a_sweep_from_before_these_measures_skips_them_with_a_note(make_experiment) -> None:
    directory = make_experiment(workers=(1, 2), failed=(), measures=False)
    result = analyze(directory, max_latency_ms=1.0)
    summary = result.summary
    assert "inference" not in summary["plots"] and "convergence" not in summary["plots"]
    assert summary["convergence"] is None and summary["utilisation"] == []
    notes = " ".join(summary["notes"])
    assert "no inference columns" in notes and "no evaluation points in history.jsonl" in notes
    assert "no utilisation columns" in notes
    assert "no latency measured in this sweep" in summary["recommendation"]["latency"]["text"]
    assert "workers_to_target" not in summary["recommendation"]
    assert "learning_curves" in summary["plots"]  # per epoch, from the rows themselves


def test_cli_passes_the_latency_budget(make_experiment, capsys, monkeypatch) -> None:
    from orchestrator.cli import main

    monkeypatch.delenv("WANDB_MODE", raising=False)
    directory = make_experiment(workers=(1,), failed=())
    args = ["analyze", str(directory), "--max-latency-ms", "1", "--latency-percentile", "p50"]
    assert main(args) == 0
    assert "Best model within 1 ms p50 latency at batch 1: bert-mini" in capsys.readouterr().out
    assert main([*args, "--latency-batch-size", "8"]) == 2
    assert "error: latency batch size 8 was not measured" in capsys.readouterr().err


CHROMIUM = Path("/usr/bin/chromium")


@pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="needs headless Chromium at /usr/bin/chromium (Debian: apt-get install -y chromium)",
)
def test_report_renders_with_its_images(
    analysed: tuple[Path, AnalysisResult], tmp_path: Path
) -> None:
    # Rendered from a directory of its own: the plots must come from the page, not lie beside it.
    page = tmp_path / "report.html"
    shutil.copy(analysed[1].paths["report.html"], page)
    shot = tmp_path / "screenshot.png"
    subprocess.run(
        [
            str(CHROMIUM),
            "--headless",
            "--no-sandbox",  # tests may run as root, where Chromium's sandbox refuses to start
            "--disable-gpu",
            "--hide-scrollbars",
            f"--screenshot={shot}",
            "--window-size=1200,2000",
            page.as_uri(),
        ],
        capture_output=True,
        timeout=120,
        check=True,
    )
    pixels = matplotlib.image.imread(shot)[..., :3]
    assert pixels.shape[:2] == (2000, 1200)
    assert pixels.std() > 0.02, "the page rendered blank"
    # Text, tables and the page's tints are greys or pale; the plots' markers and lines are
    # saturated colours. A report whose images failed to decode shows almost none (~0.01 %).
    saturation = pixels.max(axis=2) - pixels.min(axis=2)
    assert (saturation > 0.4).mean() > 0.001, "no plot was drawn: are the data URIs broken?"
    # Every figure further down the page decodes, the inference and convergence ones too: a
    # copy of the page records each image's decoded width once loaded, and Chromium dumps it.
    probe = tmp_path / "probe.html"
    script = (
        "<script>window.addEventListener('load', () => { for (const i of document.images)"
        " i.setAttribute('data-width', i.naturalWidth); });</script></body>"
    )
    probe.write_text(page.read_text().replace("</body>", script))
    dom = subprocess.run(
        [
            str(CHROMIUM),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--virtual-time-budget=5000",
            "--dump-dom",
            probe.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    widths = dict(re.findall(r'<img alt="([^"]+)" [^>]*data-width="(\d+)"', dom))
    assert set(widths) >= {"Inference speed", "Convergence", "Learning curves", "Compute"}
    assert all(int(w) > 300 for w in widths.values()), widths
