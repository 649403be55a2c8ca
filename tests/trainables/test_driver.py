"""The trial driver's failure handling: out-of-memory retries and unplaceable gangs."""

from __future__ import annotations

import pytest
import ray
import torch
from ray.train import ControllerError, WorkerGroupError

from trainables.driver import PlacementTimeoutError, _out_of_memory, run_trial


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


@pytest.fixture
def one_cpu_ray():
    ray.init(address="local", num_cpus=1, log_to_driver=False, logging_level="error")
    yield
    ray.shutdown()


@pytest.mark.integration
def test_a_gang_that_cannot_be_placed_fails_saying_why(one_cpu_ray, tmp_path):
    trial = {
        "model": {"from_scratch": True, "tokenizer": "wordpiece"},
        "data": {"source": "synthetic"},
        "compute": {"num_workers": 2, "cpus_per_worker": 1, "placement_timeout_s": 2},
    }
    with pytest.raises(PlacementTimeoutError) as info:
        run_trial(trial, storage_path=str(tmp_path))
    assert str(info.value) == (
        "could not place 2 worker(s) of CPU 1 each within 2 s (compute.placement_timeout_s); "
        "free now: CPU 1 of 1"
    )
