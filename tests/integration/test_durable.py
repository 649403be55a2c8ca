"""A sweep whose home is a bucket (a real S3 API: moto's server on 127.0.0.1) survives a
SIGTERM (`ray job stop`) and a SIGKILL (a lost head), each time resumed from the URI alone on a
"fresh machine" (another working directory and cache, no local copy): nothing is lost, and no
finished trial runs again."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest

from orchestrator.storage import open_store

pytestmark = pytest.mark.integration

SPACE = """
name: durable
data: {source: synthetic, synthetic_train_size: 1500, synthetic_validation_size: 200,
       max_length: 48}
model: {name: bert-tiny, from_scratch: true, tokenizer: wordpiece, wordpiece_vocab_size: 500}
compute: {num_workers: 1, cpus_per_worker: 1, global_batch_size: 16}
train: {epochs: 2, lr: 1e-3}
axes: {data.train_fraction: [0.2, 0.4, 0.6]}
max_concurrent_trials: 1
wandb: {mode: disabled}
storage_path: {bucket}/sweeps
"""


def _start(args: list[str], machine: Path, env: dict[str, str]) -> subprocess.Popen:
    """The CLI on a "machine" of its own: its working directory and cache; a new session, so a
    signal reaches it alone."""
    machine.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        [sys.executable, "-m", "orchestrator.cli", *args],
        cwd=machine,
        env=os.environ | env | {"SCALESWEEP_CACHE": str(machine / "cache")},
        stdout=(machine / "log.txt").open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _table(home: str) -> pd.DataFrame | None:
    store = open_store(home)
    if not store.exists("results.csv"):
        return None
    text = store.read("results.csv").decode()
    return pd.read_csv(io.StringIO(text), keep_default_na=False, na_values=[""])


def _histories(home: str) -> dict[str, str]:
    store = open_store(home)
    return {
        name.split("/")[1]: store.read(name).decode()
        for name in store.names(lambda n: n.startswith("trials"))
        if name.endswith("history.jsonl")
    }


def _wait_for_statuses(home: str, cli: subprocess.Popen, finished: int) -> pd.DataFrame:
    """Until the bucket's results.csv shows ``finished`` trials done and the next one running."""
    deadline = time.monotonic() + 400
    while time.monotonic() < deadline:
        assert cli.poll() is None, "the sweep ended early"
        table = _table(home)
        if table is not None:
            statuses = table["status"].tolist()
            if statuses.count("TERMINATED") == finished and "RUNNING" in statuses:
                return table
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {finished} finished trial(s) and one running")


def _stop(cli: subprocess.Popen, how: signal.Signals) -> int:
    try:
        if how == signal.SIGKILL:
            os.killpg(cli.pid, signal.SIGKILL)  # the head is lost: the driver and its children
        else:
            cli.send_signal(how)
        return cli.wait(timeout=120)
    finally:
        if cli.poll() is None:
            cli.kill()


def test_a_sweep_in_a_bucket_survives_sigterm_and_sigkill(tmp_path, s3):
    space = tmp_path / "space.yaml"
    space.write_text(textwrap.dedent(SPACE).replace("{bucket}", s3.uri))
    home = f"{s3.uri}/sweeps/durable"

    # 1. Run; `ray job stop` (SIGTERM) while the second trial runs.
    first = tmp_path / "machine1"
    cli = _start(["run", str(space)], first, s3.env)
    _wait_for_statuses(home, cli, finished=1)
    assert _stop(cli, signal.SIGTERM) == 143, (first / "log.txt").read_text()
    log = (first / "log.txt").read_text()
    assert f"scalesweep resume {home}" in log
    after_term = _table(home)
    assert sorted(after_term["status"]) == ["INTERRUPTED", "TERMINATED"], after_term
    kept = after_term[after_term["status"] == "TERMINATED"].set_index("trial_id")
    kept_histories = {t: h for t, h in _histories(home).items() if t in kept.index}
    shutil.rmtree(first / "experiments")  # the head's disk is gone with it

    # 2. Resume from the URI on another machine; SIGKILL the whole process group mid-trial.
    second = tmp_path / "machine2"
    cli = _start(["resume", home], second, s3.env)
    table = _wait_for_statuses(home, cli, finished=2)
    assert _stop(cli, signal.SIGKILL) == -signal.SIGKILL
    after_kill = _table(home)
    assert sorted(after_kill["status"]) == ["RUNNING", "TERMINATED", "TERMINATED"]  # as killed
    newly = table[(table["status"] == "TERMINATED") & ~table["trial_id"].isin(kept.index)]
    kept = pd.concat([kept, newly.set_index("trial_id")])
    kept_histories |= {t: h for t, h in _histories(home).items() if t in newly["trial_id"].values}

    # 3. Resume from the URI on a third machine, to the end.
    third = tmp_path / "machine3"
    cli = _start(["resume", home], third, s3.env)
    assert cli.wait(timeout=600) == 0, (third / "log.txt").read_text()

    # 4. Nothing lost, nothing run twice.
    final = _table(home).set_index("trial_id")
    assert len(final) == 3 and set(final["status"]) == {"TERMINATED"}, final
    histories = _histories(home)
    for trial_id, row in kept.iterrows():  # not run again: same row, same history
        assert final.loc[trial_id, "trial_wall_s"] == row["trial_wall_s"]
        assert histories[trial_id] == kept_histories[trial_id]
    for trial_id, text in histories.items():
        epochs = [json.loads(line)["epoch"] for line in text.splitlines()]
        assert epochs == [1, 2], trial_id  # each epoch once
    assert (final["epochs_completed"] == 2).all()
    # Tune's and Train's state went to the same bucket (Ray's storage reached it, workers too).
    names = list(open_store(home).names())
    assert any(n.startswith("tune/") for n in names)
    assert any(n.startswith("train/") and "/checkpoint_" in n for n in names)
