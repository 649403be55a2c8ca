"""Real sweeps on local Ray (CPU): Tune grid -> TorchTrainer trials -> experiment directory."""

from __future__ import annotations

import json
import textwrap
from dataclasses import fields

import pandas as pd
import pytest

from contract.rows import LATENCY_STATS, RESULT_FIELDS, EpochRow, latency_column

pytestmark = pytest.mark.integration

SPACE = """
name: it
data: {source: synthetic, synthetic_train_size: 400, synthetic_validation_size: 200, max_length: 48}
model: {from_scratch: true, tokenizer: wordpiece, wordpiece_vocab_size: 500}
compute: {cpus_per_worker: 1, global_batch_size: 16}
train: {epochs: 2, lr: 1e-3, eval_every_steps: 10, target: 0.3}
inference: {batch_sizes: [1, 8], max_examples: 32, warmup_steps: 2}
axes:  # two grids whose 1-worker trials coincide: each runs once
  - {model.name: [bert-tiny, no-such-org/no-such-model]}
  - {model.name: [bert-tiny, no-such-org/no-such-model], compute.num_workers: [1, 2]}
"""


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, scalesweep):
    """One sweep shared by the checks below: 2 good trials (1 and 2 DDP workers), 2 failing."""
    root = tmp_path_factory.mktemp("sweep")
    space = root / "space.yaml"
    space.write_text(textwrap.dedent(SPACE))
    experiment = root / "experiment"
    run = scalesweep("run", space, "-o", experiment)
    assert run.returncode == 0, run.stdout + run.stderr
    (root / "stdout.txt").write_text(run.stdout)
    (root / "stderr.txt").write_text(run.stderr)
    table = pd.read_csv(experiment / "results.csv", keep_default_na=False, na_values=[""])
    return experiment, table


def test_every_cell_has_a_row(sweep):
    experiment, table = sweep
    assert len(table) == 4
    cells = set(zip(table["model.name"], table["compute.num_workers"], strict=True))
    assert cells == {(m, w) for m in ("bert-tiny", "no-such-org/no-such-model") for w in (1, 2)}
    meta = json.loads((experiment / "experiment.json").read_text())
    assert meta["primary_metric"] == "accuracy" and meta["num_trials"] == 4
    assert len(meta["planned"]) == 4


def test_good_trials_terminate_with_sane_metrics(sweep):
    experiment, table = sweep
    good = table[table["model.name"] == "bert-tiny"]
    assert list(good["status"]) == ["TERMINATED", "TERMINATED"]
    assert set(good["compute.num_workers"]) == {1, 2}  # one of them is a 2-worker DDP trial
    for _, row in good.iterrows():
        assert 0.0 <= row["eval_accuracy"] <= 1.0 and 0.0 <= row["eval_f1"] <= 1.0
        assert row["best_accuracy"] >= row["eval_accuracy"]
        assert row["epochs_completed"] == 2
        assert row["train_examples"] == 400
        assert row["global_batch"] == 16
        assert row["per_worker_batch"] == 16 // row["compute.num_workers"]
        assert 0 < row["params_non_embedding"] < row["params_total"]
        assert 0 < row["train_time_s"] < row["trial_wall_s"]
        history = [
            json.loads(line)
            for line in (experiment / "trials" / row["trial_id"] / "history.jsonl").open()
        ]
        assert [h["epoch"] for h in history] == [1, 2]
        # Every worker's examples are counted, not rank 0's share alone.
        assert history[-1]["examples_seen"] == 2 * 400
        assert history[-1]["eval_accuracy"] == pytest.approx(row["eval_accuracy"])


def test_ddp_and_single_worker_see_the_same_validation_set(sweep):
    _, table = sweep
    good = table[table["model.name"] == "bert-tiny"]
    # Each DDP worker scores its own shard; gathered, they score the whole split, as one worker
    # does, and chance is that of the whole split's labels.
    assert list(good["eval_examples"]) == [200, 200]
    assert good["chance_accuracy"].nunique() == 1
    assert good["chance_accuracy"].iloc[0] == pytest.approx(0.5, abs=0.1)


def test_failed_trials_are_rows_with_a_reason(sweep):
    experiment, table = sweep
    bad = table[table["model.name"] == "no-such-org/no-such-model"]
    assert list(bad["status"]) == ["ERROR", "ERROR"]
    for _, row in bad.iterrows():
        assert "no-such-org/no-such-model" in row["error"]
        assert "\n" not in row["error"]
        assert (experiment / "trials" / row["trial_id"] / "error.txt").is_file()
        assert pd.isna(row["eval_accuracy"])


def test_each_failed_trial_is_one_line_on_the_console(sweep):
    experiment, table = sweep
    stdout = (experiment.parent / "stdout.txt").read_text()
    stderr = (experiment.parent / "stderr.txt").read_text()
    # Neither Tune's print of each trial's traceback nor its own error lines and tables.
    assert "Traceback" not in stdout + stderr and "Error file:" not in stdout
    assert "Configuration for experiment" not in stdout
    for _, row in table[table["status"] == "ERROR"].iterrows():
        error_file = experiment.resolve() / "trials" / row["trial_id"] / "error.txt"
        lines = [line for line in stdout.splitlines() if f"{row['label']} ERROR" in line]
        assert lines == [
            f"{lines[0].split(' — ')[0]} — error: {row['error']} (traceback: {error_file})"
        ]
        assert len(error_file.read_text().splitlines()) > 10  # the whole traceback is kept


def test_results_command_prints_the_table(sweep, scalesweep):
    experiment, _ = sweep
    results = scalesweep("results", experiment)
    assert results.returncode == 0, results.stderr
    out = results.stdout
    assert "bert-tiny·f1·w2·s0" in out and "2 TERMINATED" in out and "2 ERROR" in out


# The new columns that a CPU trial leaves empty by definition: MFU and its peak, GPU memory.
GPU_ONLY = {"mfu", "peak_tflops", "peak_gpu_memory_gib"}


def test_every_inference_convergence_and_utilisation_column_is_filled(sweep):
    experiment, table = sweep
    good = table[table["model.name"] == "bert-tiny"]
    new = {
        f.name
        for f in fields(EpochRow)
        if f.name in RESULT_FIELDS and f.metadata["summary"] and not f.metadata["codec"]
    }
    latency = [latency_column(s, b) for b in (1, 8) for s in LATENCY_STATS]
    for _, row in good.iterrows():
        for column in sorted(new - GPU_ONLY) + latency:
            assert column in table.columns and pd.notna(row[column]), column
        for column in GPU_ONLY:
            assert column not in table.columns or pd.isna(row[column]), column
        assert row["device"] == "cpu" and row["model_flops_per_s"] > 0
        assert 0 < row["latency_p50_ms_b1"] <= row["latency_p95_ms_b1"] <= row["latency_p99_ms_b1"]
        assert row["latency_batches_b1"] == 32 and row["latency_batches_b8"] == 4
        assert row["inference_examples"] == 32 and row["inference_examples_per_s"] > 0
        assert 0 < row["inference_time_s"] < row["trial_wall_s"]
        # A target any trial reaches at its first evaluation: filled, and no later than 95 %.
        assert row["target_reached"] and row["steps_to_target"] == 10
        assert row["steps_to_converge"] in (10, 20, 25, 30, 40, 50)
        assert 0 < row["time_to_converge_s"] <= row["train_time_s"]
        history = [
            json.loads(line)
            for line in (experiment / "trials" / row["trial_id"] / "history.jsonl").open()
        ]
        # 25 steps per epoch: evaluations at 10, 20 and 25 (the end), then 30, 40 and 50.
        steps = [[p["step"] for p in h["eval_points"]] for h in history]
        assert steps == [[10, 20, 25], [30, 40, 50]]
        assert history[-1]["eval_points"][-1]["eval_accuracy"] == row["eval_accuracy"]
        assert "latency_p50_ms_b1" not in history[0]  # inference is timed after the last epoch
