"""W&B end to end: real sweeps on local Ray (CPU), read back from the `.wandb` record files and
compared with the experiment directory, which stays the source of truth. A restarted trial's
run (same id, steps counting on) is checked with the killed worker of test_faults.py."""

from __future__ import annotations

import json
import os
import socket
import tempfile
import textwrap
from pathlib import Path

import pandas as pd
import pytest

from contract.tracking import run_id
from orchestrator.wandb.offline import find_run_files, read_run

pytestmark = pytest.mark.integration

SPACE = """
name: wb
data: {source: synthetic, synthetic_train_size: 200, synthetic_validation_size: 100, max_length: 32}
model: {from_scratch: true, tokenizer: wordpiece, wordpiece_vocab_size: 300}
compute: {cpus_per_worker: 1, global_batch_size: 16}
train: {epochs: 2, lr: 1e-3}
axes:
  compute.num_workers: [1, 2]
wandb: {project: scalesweep-test, tags: [it], log_every_steps: 2}
"""
# Shaped like a real key (wandb checks its length); it must never reach a file or the console.
DUMMY_KEY = "scalesweep0test0dummy0key0abcdefghij0123456789"


def _ray_sessions() -> set[Path]:
    root = Path(os.environ.get("RAY_TMPDIR") or tempfile.gettempdir()) / "ray"
    return set(root.glob("session_2*"))


def _run(
    scalesweep, root: Path, space: str, *args: str, env: dict[str, str | None] | None = None
) -> tuple[Path, str]:
    """``scalesweep run`` with a dummy key in the environment; the experiment dir and the
    output, which holds the logs of the Ray session it started too."""
    (root / "space.yaml").write_text(textwrap.dedent(space))
    experiment = root / "experiment"
    sessions = _ray_sessions()
    # No WANDB_MODE: the mode comes from the spec and the options.
    env = {"WANDB_API_KEY": DUMMY_KEY, "WANDB_MODE": None, **(env or {})}
    run = scalesweep("run", root / "space.yaml", "-o", experiment, *args, env=env)
    assert run.returncode == 0, run.stdout + run.stderr
    logs = [p for s in _ray_sessions() - sessions for p in (s / "logs").rglob("*") if p.is_file()]
    assert logs, "the Ray session this sweep started was not found"
    ray_logs = "\n".join(p.read_text(errors="replace") for p in logs)
    return experiment, run.stdout + run.stderr + ray_logs


def _assert_key_never_written(experiment: Path, output: str) -> None:
    assert DUMMY_KEY not in output  # the console and Ray's own logs
    for path in experiment.rglob("*"):
        if path.is_file() and not path.is_symlink():
            assert DUMMY_KEY.encode() not in path.read_bytes(), f"API key written to {path}"


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, scalesweep):
    """Two trials (1 and 2 DDP workers) logged offline, a dummy API key in the environment."""
    root = tmp_path_factory.mktemp("wandb")
    experiment, output = _run(scalesweep, root, SPACE, "--wandb", "offline")
    table = pd.read_csv(experiment / "results.csv", keep_default_na=False, na_values=[""])
    sweep_name = json.loads((experiment / "wandb" / "sweep.json").read_text())["sweep"]
    runs = {f.run_id: read_run(f.path) for f in find_run_files(experiment / "wandb")}
    return experiment, output, table, sweep_name, runs


def test_one_run_per_trial_grouped_by_sweep(sweep):
    experiment, _, table, name, runs = sweep
    trial_runs = {i: r for i, r in runs.items() if r.job_type == "trial"}
    assert set(trial_runs) == {run_id(name, t) for t in table["trial_id"]}
    assert len(find_run_files(experiment / "wandb")) == len(runs)  # one file per run: no dupes
    for _, row in table.iterrows():
        run = trial_runs[run_id(name, row["trial_id"])]
        assert run.project == "scalesweep-test" and run.group == name
        assert run.name == row["label"] and run.exit_code == 0
        assert run.config["compute"]["num_workers"] == row["compute.num_workers"]
        assert run.config["model"]["name"] == "bert-tiny"
        assert run.config["sweep"]["trial_id"] == row["trial_id"]
        derived = run.config["derived"]
        assert derived["global_batch"] == 16 and derived["train_examples"] == 200
        assert derived["params_non_embedding"] == row["params_non_embedding"]
        workers = row["compute.num_workers"]
        assert {"it", f"compute.num_workers={workers}", "train.seed=0"} <= set(run.tags)


def test_step_and_epoch_history_match_the_local_results(sweep):
    experiment, _, table, name, runs = sweep
    for _, row in table.iterrows():
        run = runs[run_id(name, row["trial_id"])]
        steps = [h for h in run.history if "train/loss" in h]
        epochs = [h for h in run.history if "eval/accuracy" in h]
        # 200 examples / 16 per step = 13 steps an epoch, logged every 2nd step.
        assert [h["optimizer_step"] for h in steps] == list(range(2, 27, 2))
        for h in steps:
            assert h["train/loss"] > 0 and h["train/examples_per_s"] > 0 and h["train/lr"] >= 0
            if h["optimizer_step"] <= 12:  # whole steps of epoch 1: every worker's examples count
                assert h["examples_seen"] == 16 * h["optimizer_step"]
        local = [
            json.loads(line)
            for line in (experiment / "trials" / row["trial_id"] / "history.jsonl").open()
        ]
        assert [h["epoch"] for h in epochs] == [h["epoch"] for h in local] == [1, 2]
        for logged, kept in zip(epochs, local, strict=True):
            for metric in ("accuracy", "f1", "loss"):
                assert logged[f"eval/{metric}"] == pytest.approx(kept[f"eval_{metric}"], abs=1e-12)
            assert logged["examples_seen"] == kept["examples_seen"]
            assert logged["optimizer_step"] == 13 * kept["epoch"]
        assert epochs[-1]["eval/accuracy"] == pytest.approx(row["eval_accuracy"], abs=1e-12)
        summary = run.summary
        assert summary["status"] == "finished" and summary["epochs_completed"] == 2
        assert summary["best_accuracy"] == pytest.approx(row["best_accuracy"], abs=1e-12)
        assert summary["train_time_s"] == pytest.approx(row["train_time_s"])
        assert 0 < summary["train_time_s"] < summary["trial_wall_s"]
        assert summary["gpu_hours"] == 0  # a CPU sweep


def test_summary_run_holds_the_results_table_and_scaling_charts(sweep):
    experiment, _, table, name, runs = sweep
    summary = runs[run_id(name, "summary")]
    assert summary.job_type == "sweep-summary" and summary.group == name
    assert summary.exit_code == 0 and summary.config["spec"]["name"] == "wb"
    logged = next(h for h in summary.history if "results/path" in h)
    assert logged["results/nrows"] == len(table) == 2
    run_dir = next(
        f.directory for f in find_run_files(experiment / "wandb") if f.run_id == summary.run_id
    )
    results = json.loads((run_dir / "files" / logged["results/path"]).read_text())
    ids = results["data"]
    column = results["columns"].index("trial_id")
    assert sorted(r[column] for r in ids) == sorted(table["trial_id"])
    assert "scaling/train_time_vs_workers_table/path" in logged
    assert "scaling/speedup_vs_workers_table/path" in logged
    assert summary.summary["trials"] == 2 and summary.summary["finished"] == 2


def test_offline_runs_say_how_to_upload_and_the_key_is_never_written(sweep):
    experiment, output, *_ = sweep
    assert "W&B: offline" in output
    assert f"scalesweep wandb {experiment.resolve()} --sync" in output
    _assert_key_never_written(experiment, output)


def test_wandb_command_lists_the_runs(sweep, scalesweep):
    experiment, _, table, name, _ = sweep
    listed = scalesweep("wandb", experiment)
    assert listed.returncode == 0, listed.stderr
    out = listed.stdout
    assert f"group {name!r}: 3 run(s)" in out
    for trial_id in table["trial_id"]:
        assert run_id(name, trial_id) in out
    assert "summary" in out and "3 offline file(s) not uploaded yet" in out


def test_analyze_uploads_to_the_sweeps_group(sweep, scalesweep):
    experiment, _, _, name, _ = sweep
    analyzed = scalesweep("analyze", experiment)
    assert analyzed.returncode == 0, analyzed.stderr
    analysis = [
        read_run(f.path)
        for f in find_run_files(experiment / "wandb")
        if f.run_id == run_id(name, "analysis")
    ]
    assert len(analysis) == 1 and analysis[0].group == name and analysis[0].exit_code == 0
    logged = {k for row in analysis[0].history for k in row}
    assert "analysis/report/path" in logged
    assert any(
        k.startswith("analysis/") and k.endswith("/path") for k in logged - {"analysis/report/path"}
    )


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_server_falls_back_to_offline_and_the_sweep_completes(
    tmp_path_factory, scalesweep
):
    """Online with a key but no server: one warning, the runs land offline, results intact."""
    server = {"WANDB_BASE_URL": f"http://127.0.0.1:{_closed_port()}", "WANDB_INIT_TIMEOUT": "3"}
    space = SPACE.replace("[1, 2]", "[1]").replace("epochs: 2", "epochs: 1")
    root = tmp_path_factory.mktemp("down")
    experiment, output = _run(scalesweep, root, space, "--wandb", "online", env=server)
    assert "warning: W&B: cannot start run" in output and "logging offline instead" in output
    table = pd.read_csv(experiment / "results.csv")
    assert list(table["status"]) == ["TERMINATED"] and 0 <= table["eval_accuracy"][0] <= 1
    runs = [read_run(f.path) for f in find_run_files(experiment / "wandb")]
    assert all(f.offline for f in find_run_files(experiment / "wandb"))  # no stub of the attempt
    assert sorted(r.job_type for r in runs) == ["sweep-summary", "trial"]
    trial = next(r for r in runs if r.job_type == "trial")
    assert trial.summary["best_accuracy"] == pytest.approx(table["best_accuracy"][0], abs=1e-12)
    _assert_key_never_written(experiment, output)
