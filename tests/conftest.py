"""Test-wide settings, and the CLI run as a user runs it: in a process of its own."""

from __future__ import annotations

import itertools
import os
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from contract.rows import EpochRow

# The hub is unreachable here: fail fast instead of retrying.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

Scalesweep = Callable[..., subprocess.CompletedProcess]
# An epoch row of a small trial: epoch 1 of 100 examples, every required field set.
_ROW = dict(
    epoch=1,
    train_loss=0.7,
    eval_loss=0.69,
    eval_accuracy=0.6,
    examples_per_s=100.0,
    tokens_per_s=1000.0,
    epoch_time_s=1.0,
    eval_time_s=0.1,
    train_time_s=1.0,
    examples_seen=100,
    train_tokens=1000,
    lr=1e-3,
    worker_pid=7,
    params_total=10,
    params_non_embedding=5,
    train_examples=100,
    global_batch=32,
    per_worker_batch=32,
    accumulation_steps=1,
    restarts=0,
)


@pytest.fixture(scope="session")
def epoch_row() -> Callable[..., EpochRow]:
    """``epoch_row(**fields)``: an EpochRow with plausible values for every field not given."""
    return lambda **fields: EpochRow(**_ROW | fields)


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


@dataclass(frozen=True)
class S3:
    """A bucket on a real S3 API on 127.0.0.1 (moto's server mode): ``uri`` is
    s3://<bucket>; ``env`` points boto and pyarrow at it (dummy credentials)."""

    uri: str
    bucket: str
    env: dict[str, str]


@pytest.fixture(scope="session")
def s3_server() -> Iterator[dict[str, str]]:
    from moto.server import ThreadedMotoServer

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield {
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",  # no instance-metadata lookups for credentials
    }
    server.stop()


_buckets = itertools.count()


@pytest.fixture
def s3(s3_server, monkeypatch) -> S3:
    """A new, empty bucket; this process's environment points at it (subprocesses: ``env``)."""
    for key, value in s3_server.items():
        monkeypatch.setenv(key, value)
    import boto3

    bucket = f"sweeps-{os.getpid()}-{next(_buckets)}"
    boto3.client("s3", endpoint_url=s3_server["AWS_ENDPOINT_URL"]).create_bucket(Bucket=bucket)
    return S3(f"s3://{bucket}", bucket, dict(s3_server))
