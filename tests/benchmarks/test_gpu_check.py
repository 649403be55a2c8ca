"""The GPU check script runs end to end on CPU (gloo in place of NCCL), so that a lent GPU
machine's few minutes are never spent on a script that broke since it last ran."""

from __future__ import annotations

import subprocess
import sys


def test_the_gpu_check_passes_its_cpu_smoke_test():
    args = ["--device", "cpu", "--model", "bert-tiny", "--examples", "96"]
    run = subprocess.run(
        [sys.executable, "-m", "benchmarks.gpu_check", *args],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "gloo: all_reduce, all_gather_objects on cpu: ok" in run.stdout
    assert "eval gathered (64 examples)" in run.stdout
    assert "GPU check: all passed" in run.stdout
