"""The progress watchdog raises in the watched thread once the beats stop, and only then."""

from __future__ import annotations

import time

import pytest

from trainables.watchdog import NoProgressError, ProgressWatchdog


def _busy(seconds: float, dog: ProgressWatchdog | None = None) -> None:
    deadline = time.monotonic() + seconds
    step = 0
    while time.monotonic() < deadline:
        time.sleep(0.01)
        step += 1
        if dog:
            dog.beat(f"after step {step} of epoch 1")


def test_no_beats_raise_in_the_watched_thread_and_log_why(caplog):
    with pytest.raises(NoProgressError), ProgressWatchdog(0.2) as dog:
        _busy(30)  # far longer than the timeout: only the watchdog ends it
    assert dog.fired and dog.stalled()
    # Logged when it fired: a thread stuck in C code may never raise, and NCCL may end the
    # process at its own timeout, but the worker's log says why.
    assert "no progress for 0.2 s" in caplog.text


def test_beats_keep_it_quiet_and_say_where_training_was():
    with ProgressWatchdog(0.2) as dog:
        _busy(1.0, dog)
    assert not dog.fired
    message = str(dog.error())
    assert "no progress for 0.2 s (train.progress_timeout_s)" in message
    assert "of epoch 1" in message


def test_none_disables_it():
    with ProgressWatchdog(None) as dog:
        _busy(0.3)
    assert not dog.stalled()
