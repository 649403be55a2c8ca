"""Progress you can see, on a real sweep: `scalesweep status` caught mid-epoch, then finished;
the console's progress lines; and none of Tune's own console output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

# One trial long enough to be caught mid-epoch at a 1 s cadence (~125 steps an epoch), and one
# that fails at once (Tune prints failed trials itself unless the sweep silences it).
SPACE = """
name: progress
data:
  {source: synthetic, synthetic_train_size: 2000, synthetic_validation_size: 200, max_length: 48}
model: {name: bert-mini, from_scratch: true, tokenizer: wordpiece, wordpiece_vocab_size: 500}
compute: {cpus_per_worker: 1, global_batch_size: 16}
train: {epochs: 2, lr: 1e-3}
axes:
  model.name: [bert-mini, no-such-org/no-such-model]
"""
TUNE_OUTPUT = (
    "Configuration for experiment",
    "View detailed results here",
    "errored after",
    "Trial status",
    "Wrote the latest version",
)


def _mid_epoch(experiment: Path) -> dict | None:
    """A trial's progress record from the middle of an epoch, if one is there yet."""
    for path in experiment.glob("trials/*/progress.json"):
        try:
            record = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if not record["evaluated"] and 0 < record["epoch_step"] < record["steps_per_epoch"]:
            return record
    return None


def test_status_of_a_running_then_a_finished_sweep(tmp_path, scalesweep):
    space = tmp_path / "space.yaml"
    space.write_text(textwrap.dedent(SPACE))
    experiment = tmp_path / "experiment"
    command = [sys.executable, "-m", "orchestrator.cli", "run", str(space), "-o", str(experiment)]
    sweep = subprocess.Popen(
        [*command, "--progress-every", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=dict(os.environ),
    )
    try:
        deadline = time.monotonic() + 600
        record = None
        while record is None and sweep.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
            record = _mid_epoch(experiment)
        assert record is not None, sweep.communicate(timeout=60)[0] if sweep.poll() else "timeout"

        running = scalesweep("status", experiment, timeout=120)
        assert running.returncode == 0, running.stderr
        screen = running.stdout
        assert "sweep progress: running, 2 trials" in screen, screen
        row = next(line for line in screen.splitlines() if line.startswith("bert-mini·"))
        assert "RUNNING" in row and f"/{record['steps_per_epoch']} (" in row, screen
        assert "ETA" in screen and "elapsed" in screen

        output, _ = sweep.communicate(timeout=600)
    finally:
        if sweep.poll() is None:
            sweep.kill()
    assert sweep.returncode == 0, output

    # Progress lines within the epoch, the sweep's line as trials start and end, and its end.
    assert " step " in output and "ex/s, loss " in output and "trial ETA" in output, output
    assert "[sweep] " in output and "[sweep finished] 2/2 done (1 failed)" in output, output
    for text in TUNE_OUTPUT:
        assert text not in output, f"Tune printed {text!r}:\n{output}"

    finished = scalesweep("status", experiment, timeout=120)
    assert finished.returncode == 0, finished.stderr
    screen = finished.stdout
    assert "sweep progress: finished, 2 trials (1 finished, 1 failed" in screen, screen
    assert f"scalesweep results {experiment}" in screen
    assert f"scalesweep analyze {experiment}" in screen
    assert "TERMINATED" in screen and "ERROR" in screen
    sweep_record = json.loads((experiment / "progress.json").read_text())
    assert sweep_record["state"] == "finished" and sweep_record["progress_every_s"] == 1.0
