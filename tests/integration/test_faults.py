"""Faults with real processes and real signals: a killed worker, an interrupted sweep."""

from __future__ import annotations

import contextlib
import json
import os
import random
import resource
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest

from orchestrator.spec import load_spec
from orchestrator.wandb.offline import find_run_files, read_run
from trainables.loop import fit

pytestmark = pytest.mark.integration

BASE = """
name: faults
data: {source: synthetic, synthetic_train_size: 1500, synthetic_validation_size: 200,
       max_length: 48}
model: {name: bert-tiny, from_scratch: true, tokenizer: wordpiece, wordpiece_vocab_size: 500}
compute: {num_workers: 1, cpus_per_worker: 1, global_batch_size: 16}
train: {epochs: 3, lr: 1e-3, max_failures: 1}
"""


def _start(args: list[str], log: Path) -> subprocess.Popen:
    # A new session: a signal for the CLI reaches it alone, not pytest. SIGINT as a terminal's
    # Ctrl-C finds it, even when pytest runs as a background job (a shell ignores SIGINT there,
    # and children inherit that).
    return subprocess.Popen(
        [sys.executable, "-m", "orchestrator.cli", *args],
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def _wait_for(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _history(experiment: Path) -> list[tuple[str, list[dict]]]:
    return [
        (d.name, [json.loads(x) for x in (d / "history.jsonl").read_text().splitlines() if x])
        for d in sorted((experiment / "trials").glob("*"))
        if (d / "history.jsonl").is_file()
    ]


def _table(experiment: Path) -> pd.DataFrame:
    return pd.read_csv(experiment / "results.csv", keep_default_na=False, na_values=[""])


def test_killed_worker_restarts_from_its_checkpoint(tmp_path, monkeypatch):
    """A worker killed mid-trial: the trial restarts from its checkpoint and ends as if run
    straight through, and its W&B run carries on under the same id (one kill checks both)."""
    monkeypatch.delenv("WANDB_MODE", raising=False)
    space = tmp_path / "space.yaml"
    space.write_text(textwrap.dedent(BASE) + "wandb: {log_every_steps: 20}\n")
    experiment = tmp_path / "experiment"
    log = tmp_path / "log.txt"
    cli = _start(["run", str(space), "-o", str(experiment), "--wandb", "offline"], log)
    try:
        histories = _wait_for(
            lambda: [h for _, h in _history(experiment) if h], 300, "the first epoch"
        )
        time.sleep(2.5)  # wandb writes its run file every 2 s: epoch 1 is on disk by now
        os.kill(histories[0][0]["worker_pid"], signal.SIGKILL)  # mid-way through the trial
        assert cli.wait(timeout=600) == 0, log.read_text()
    finally:
        cli.kill()

    row = _table(experiment).iloc[0]
    assert row["status"] == "TERMINATED", row["error"]
    assert row["restarts"] == 1
    [(_, history)] = _history(experiment)
    assert [h["epoch"] for h in history] == [1, 2, 3]  # each epoch once
    assert history[-1]["examples_seen"] == 3 * 1500
    # The same trial run straight through, in this process: the restart changed nothing.
    reference = fit(load_spec(space).trials[0])
    for key in ("eval_loss", "eval_accuracy", "train_loss"):
        assert row[key] == pytest.approx(getattr(reference, key), abs=1e-4)

    files = [f for f in find_run_files(experiment / "wandb") if not f.run_id.endswith("summary")]
    assert len(files) == 2 and len({f.run_id for f in files}) == 1  # one run, resumed once
    first, second = (read_run(f.path) for f in files)
    assert first.job_type == second.job_type == "trial" and first.exit_code is None  # killed
    assert 1 in [h["epoch"] for h in first.history if "eval/accuracy" in h]
    resumed = [h["epoch"] for h in second.history if "eval/accuracy" in h]
    assert resumed == list(range(resumed[0], 4)) and resumed[0] >= 2
    steps_per_epoch = 1500 // 16 + 1  # 94
    steps = [h["optimizer_step"] for h in second.history if "train/loss" in h]
    assert steps[0] > (resumed[0] - 1) * steps_per_epoch  # counting on from the checkpoint
    assert second.summary["restarts"] == 1 and second.summary["epochs_completed"] == 3
    assert second.summary["status"] == "finished" and second.exit_code == 0
    assert second.history[-1]["eval/accuracy"] == pytest.approx(row["eval_accuracy"])


def test_a_tune_retry_resumes_the_trial_from_its_checkpoint(tmp_path):
    # No restart inside Ray Train (max_failures 0): the trial errors, and Tune runs it again.
    space = tmp_path / "space.yaml"
    space.write_text(textwrap.dedent(BASE) + "trial_retries: 1\n")
    experiment = tmp_path / "experiment"
    log = tmp_path / "log.txt"
    # 4000 pairs: epochs of seconds, so the kill lands mid-trial.
    overrides = ["train.max_failures=0", "data.synthetic_train_size=4000"]
    cli = _start(["run", str(space), *overrides, "-o", str(experiment)], log)
    try:
        histories = _wait_for(
            lambda: [h for _, h in _history(experiment) if h], 300, "the first epoch"
        )
        os.kill(histories[0][0]["worker_pid"], signal.SIGKILL)
        assert cli.wait(timeout=600) == 0, log.read_text()
    finally:
        cli.kill()

    row = _table(experiment).iloc[0]
    assert row["status"] == "TERMINATED", row["error"]
    assert (row["trial_retries"], row["restarts"]) == (1, 1)
    [(_, history)] = _history(experiment)
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert "failed, retry 1:" in log.read_text()


def _limit_data_segment(limit: int):
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))

    return apply


def test_out_of_memory_retries_with_half_the_micro_batch(tmp_path):
    # A real allocation failure: every process of the sweep may hold 3.5 GiB of data at most,
    # and a micro-batch of 256 sequences of 512 tokens needs more (~25 MB each for bert-tiny).
    rng = random.Random(0)
    words = [f"w{i}" for i in range(200)]
    for split, rows in (("train", 256), ("dev", 16)):
        lines = [f"{' '.join(rng.choices(words, k=600))},{i % 2}" for i in range(rows)]
        (tmp_path / f"{split}.csv").write_text("text,label\n" + "\n".join(lines) + "\n")
    space = tmp_path / "space.yaml"
    space.write_text(
        textwrap.dedent(f"""
        name: oom
        data: {{source: files, train_file: {tmp_path / "train.csv"},
               validation_file: {tmp_path / "dev.csv"}, text_columns: [text], max_length: 512}}
        model: {{name: bert-tiny, from_scratch: true, tokenizer: wordpiece}}
        compute: {{num_workers: 1, cpus_per_worker: 1, global_batch_size: 256}}
        train: {{epochs: 1, oom_retries: 5}}
        """)
    )
    experiment = tmp_path / "experiment"
    run = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "run", str(space), "-o", str(experiment)],
        capture_output=True,
        text=True,
        timeout=900,
        preexec_fn=_limit_data_segment(int(3.5 * 2**30)),
    )
    assert run.returncode == 0, run.stdout + run.stderr
    row = _table(experiment).iloc[0]
    assert row["status"] == "TERMINATED", row["error"]
    assert row["oom_retries"] >= 1
    # Same batch per optimizer step, in 2^retries micro-batches.
    assert row["per_worker_batch"] == 256
    assert row["accumulation_steps"] == 2 ** row["oom_retries"]


def test_a_stuck_worker_fails_the_trial_saying_so(tmp_path):
    # Rank 0 frozen mid-epoch: rank 1 waits for it in the gradient all-reduce, with no progress.
    space = tmp_path / "space.yaml"
    space.write_text(textwrap.dedent(BASE))
    experiment = tmp_path / "experiment"
    log = tmp_path / "log.txt"
    overrides = ["compute.num_workers=2", "train.max_failures=0", "train.progress_timeout_s=15"]
    overrides.append("data.synthetic_train_size=6000")  # epochs of seconds: stopped mid-trial
    cli = _start(["run", str(space), *overrides, "-o", str(experiment)], log)
    pid = None
    try:
        histories = _wait_for(
            lambda: [h for _, h in _history(experiment) if h], 300, "the first epoch"
        )
        pid = histories[0][0]["worker_pid"]
        os.kill(pid, signal.SIGSTOP)
        assert cli.wait(timeout=600) == 0, log.read_text()
    finally:
        cli.kill()
        if pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)  # Ray kills its workers; in case it could not

    row = _table(experiment).iloc[0]
    assert row["status"] == "ERROR"
    assert "NoProgressError: no progress for 15 s (train.progress_timeout_s)" in row["error"]
    assert 1 <= row["epochs_completed"] < 3


def test_killed_driver_resumes_without_rerunning_finished_trials(tmp_path):
    """SIGKILL of the sweep's driver after a trial finished, mid-way through the next, with a
    torn history line: resume runs only what did not finish. (A graceful stop, Ctrl-C or
    SIGTERM, then resume: test_durable.py with SIGTERM, one handler for both; exit 130 and the
    INTERRUPTED rows: test_ctrl_c_twice below.)"""
    space = tmp_path / "space.yaml"
    space.write_text(
        textwrap.dedent(BASE)
        + "axes: {data.train_fraction: [0.2, 0.4, 0.6]}\nmax_concurrent_trials: 1\n"
    )
    experiment = tmp_path / "experiment"
    log = tmp_path / "run.txt"
    cli = _start(["run", str(space), "train.epochs=2", "-o", str(experiment)], log)
    try:
        _wait_for(
            lambda: (
                (experiment / "results.csv").is_file()
                and (_table(experiment)["status"] == "TERMINATED").any()
            ),
            300,
            "a finished trial",
        )
        time.sleep(3)  # let Tune save its experiment state, as it does every few seconds
        cli.send_signal(signal.SIGKILL)
        cli.wait(timeout=120)
    finally:
        cli.kill()
    before = _table(experiment)
    finished = before[before["status"] == "TERMINATED"].set_index("trial_id")
    assert 1 <= len(finished) < 3
    finished_histories = {
        t: (experiment / "trials" / t / "history.jsonl").read_text() for t in finished.index
    }
    # Killed mid-write: a torn last line, which resume must survive.
    unfinished = before[before["status"] != "TERMINATED"]["trial_id"]
    torn = [experiment / "trials" / t / "history.jsonl" for t in unfinished]
    torn = [path for path in torn if path.is_file()]
    assert torn
    with torn[0].open("a") as f:
        f.write('{"epoch": 1, "train_lo')

    resume = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "resume", str(experiment)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert resume.returncode == 0, resume.stdout + resume.stderr

    after = _table(experiment).set_index("trial_id")
    assert len(after) == 3 and set(after["status"]) == {"TERMINATED"}
    for trial_id, row in finished.iterrows():  # not re-run: same rows, same histories
        assert after.loc[trial_id, "trial_wall_s"] == row["trial_wall_s"]
        assert (experiment / "trials" / trial_id / "history.jsonl").read_text() == (
            finished_histories[trial_id]
        )
    for trial_id, history in _history(experiment):
        assert [h["epoch"] for h in history] == [1, 2], trial_id


def test_ctrl_c_twice_exits_130_with_the_rows_interrupted(tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text(textwrap.dedent(BASE))
    experiment = tmp_path / "experiment"
    log = tmp_path / "log.txt"
    # 4000 pairs: epochs of seconds, so the second Ctrl-C lands while Tune is stopping.
    cli = _start(["run", str(space), "data.synthetic_train_size=4000", "-o", str(experiment)], log)
    try:
        _wait_for(lambda: [h for _, h in _history(experiment) if h], 300, "the first epoch")
        cli.send_signal(signal.SIGINT)
        time.sleep(0.5)
        cli.send_signal(signal.SIGINT)  # impatient: stop now
        assert cli.wait(timeout=120) == 130, log.read_text()
    finally:
        cli.kill()
    assert _table(experiment)["status"].tolist() == ["INTERRUPTED"]
    assert log.read_text().count(f"scalesweep resume {experiment}") == 1


def test_ctrl_c_while_ray_starts_leaves_a_directory_that_resumes(tmp_path, scalesweep):
    space = tmp_path / "space.yaml"
    space.write_text(textwrap.dedent(BASE))
    experiment = tmp_path / "experiment"
    log = tmp_path / "log.txt"
    cli = _start(["run", str(space), "train.epochs=1", "-o", str(experiment)], log)
    try:
        _wait_for(lambda: (experiment / "experiment.json").is_file(), 120, "the directory")
        cli.send_signal(signal.SIGINT)  # before any trial started: Ray is starting
        assert cli.wait(timeout=120) == 130, log.read_text()
    finally:
        cli.kill()
    assert f"scalesweep resume {experiment}" in log.read_text()
    assert not (experiment / "results.csv").exists()

    resume = scalesweep("resume", experiment, timeout=600)
    assert resume.returncode == 0, resume.stdout + resume.stderr
    assert "running the sweep from the start" in resume.stderr
    assert _table(experiment)["status"].tolist() == ["TERMINATED"]
