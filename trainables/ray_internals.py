"""The few pieces of Ray Train that have no public API yet, in one place.

Ray 2.60's Train V2 reads two timeouts from environment variables of the process that creates
the trainer (its controller inherits them), and reports a gang that could not be placed in time
as ``WorkerGroupStartupTimeoutError``, which only ``ray.train.v2._internal`` exports. Nothing
public says either. ``tests/trainables/test_ray_internals.py`` fails loudly if Ray changes them.
"""

from __future__ import annotations

from ray.train.v2._internal.constants import (
    COLLECTIVE_TIMEOUT_S_ENV_VAR,
    WORKER_GROUP_START_TIMEOUT_S_ENV_VAR,
)
from ray.train.v2._internal.exceptions import WorkerGroupStartupTimeoutError

__all__ = [
    "COLLECTIVE_TIMEOUT_S_ENV_VAR",
    "WORKER_GROUP_START_TIMEOUT_S_ENV_VAR",
    "WorkerGroupStartupTimeoutError",
]
