"""The trial driver's failure handling: which failures run the trial again, how often, and
with what; and a gang that cannot be placed."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch
from ray.train import ControllerError, WorkerGroupError

import trainables.driver
from trainables.driver import _out_of_memory, run_trial


def _raised(fn) -> Exception:
    try:
        fn()
    except Exception as err:
        return err
    raise AssertionError("expected an exception")


def test_out_of_memory_is_recognised_in_a_worker_failure():
    cpu_oom = _raised(lambda: torch.empty(2**50))  # the CPU allocator's real error
    assert _out_of_memory(WorkerGroupError("training failed", {0: cpu_oom}))
    assert _out_of_memory(WorkerGroupError("training failed", {1: MemoryError()}))
    cuda_oom = torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    assert _out_of_memory(WorkerGroupError("training failed", {0: cuda_oom}))
    assert not _out_of_memory(WorkerGroupError("training failed", {0: ValueError("bad label")}))
    assert not _out_of_memory(ControllerError(RuntimeError("worker group failed to start")))


OOM = WorkerGroupError("training failed", {0: torch.OutOfMemoryError("CUDA out of memory")})
CRASH = WorkerGroupError("training failed", {0: RuntimeError("worker died")})
TRIAL = {
    "compute": {"global_batch_size": 32, "max_micro_batch_size": 16},
    "train": {"max_failures": 1, "oom_retries": 2},
}


def _fits(monkeypatch, failures: list[Exception]) -> list[dict]:
    """Stands in for the TorchTrainer runs: each raises the next failure, then one succeeds."""
    runs = []

    def fit(trial, loop_config, run_config):
        runs.append(loop_config)
        if len(runs) <= len(failures):
            raise failures[len(runs) - 1]
        return {"epoch": 3}

    monkeypatch.setattr(trainables.driver, "_fit", fit)
    return runs


def test_out_of_memory_halves_the_micro_batch_without_spending_worker_restarts(monkeypatch):
    runs = _fits(monkeypatch, [OOM, CRASH, OOM])
    assert run_trial(TRIAL) == {"epoch": 3}
    micro = [r["trial"]["compute"]["max_micro_batch_size"] for r in runs]
    assert micro == [16, 8, 8, 4]  # the crash reran the same micro-batch
    assert [r["oom_retries"] for r in runs] == [0, 1, 1, 2]


@pytest.mark.parametrize(
    ("failures", "error"), [([CRASH, CRASH], CRASH), ([OOM, OOM, OOM], OOM)], ids=["crash", "oom"]
)
def test_each_budget_runs_out_on_its_own(monkeypatch, failures, error):
    runs = _fits(monkeypatch, failures)
    with pytest.raises(WorkerGroupError) as info:
        run_trial(TRIAL)
    assert info.value is error and len(runs) == len(failures)


@pytest.mark.integration
def test_a_gang_that_cannot_be_placed_fails_saying_why(tmp_path):
    script = textwrap.dedent(
        f"""
        import ray
        from trainables.driver import PlacementTimeoutError, run_trial

        ray.init(address="local", num_cpus=1, log_to_driver=False, logging_level="error")
        trial = {{
            "model": {{"from_scratch": True, "tokenizer": "wordpiece"}},
            "data": {{"source": "synthetic"}},
            "compute": {{"num_workers": 2, "cpus_per_worker": 1, "placement_timeout_s": 2}},
        }}
        try:
            run_trial(trial, storage_path={str(tmp_path)!r})
        except PlacementTimeoutError as err:
            print(f"PlacementTimeoutError: {{err}}")
        """
    )
    run = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )
    assert (
        "PlacementTimeoutError: could not place 2 worker(s) of 1 CPU each within 2 s "
        "(compute.placement_timeout_s); free now: 1 of 1 CPU"
    ) in run.stdout, run.stdout + run.stderr
