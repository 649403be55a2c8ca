"""The private Ray pieces the driver relies on (trainables/ray_internals.py) are still there and
still mean what the driver assumes: if Ray changes them, this fails instead of a sweep. (The
behaviour itself is tested end to end in tests/trainables/test_driver.py.)"""

from __future__ import annotations

import inspect

from ray.train.v2._internal.execution.worker_group import worker_group

from trainables import ray_internals


def test_the_worker_group_reads_both_timeouts_from_these_variables():
    assert ray_internals.WORKER_GROUP_START_TIMEOUT_S_ENV_VAR == (
        "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S"
    )
    assert ray_internals.COLLECTIVE_TIMEOUT_S_ENV_VAR == "RAY_TRAIN_COLLECTIVE_TIMEOUT_S"
    source = inspect.getsource(worker_group)
    assert "WORKER_GROUP_START_TIMEOUT_S_ENV_VAR" in source
    assert "COLLECTIVE_TIMEOUT_S_ENV_VAR" in source


def test_the_worker_group_raises_this_error_when_placement_times_out():
    assert "raise WorkerGroupStartupTimeoutError(" in inspect.getsource(worker_group)
    assert (
        worker_group.WorkerGroupStartupTimeoutError is ray_internals.WorkerGroupStartupTimeoutError
    )
