"""Test-wide settings, and the CLI run as a user runs it: in a process of its own."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

# The hub is unreachable here: fail fast instead of retrying.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

Scalesweep = Callable[..., subprocess.CompletedProcess]


@pytest.fixture(scope="session")
def scalesweep() -> Scalesweep:
    """``scalesweep(*args, timeout=..., env=...)``: the CLI in a subprocess, output captured;
    ``env`` adds variables to this process' environment (None: removes one).

    Sweeps run there, as users run them: a sweep's Ray, W&B and tokenizer threads live and die
    with its own process, never in pytest's.
    """

    def run(
        *args: str | Path, timeout: float = 900, env: dict[str, str | None] | None = None
    ) -> subprocess.CompletedProcess:
        environment = dict(os.environ)
        for key, value in (env or {}).items():
            if value is None:
                environment.pop(key, None)
            else:
                environment[key] = value
        return subprocess.run(
            [sys.executable, "-m", "orchestrator.cli", *map(str, args)],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=environment,
        )

    return run
