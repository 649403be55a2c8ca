"""Turns a worker that stops making progress into an error that says so, instead of a hang.

Ray Train notices a worker process that dies or stops answering; it cannot tell a live worker
that is stuck: in a collective op whose peer is frozen, in I/O that never returns, in a
deadlock. ``ProgressWatchdog`` watches the training loop's heartbeats (each optimizer step,
evaluation batch and finished epoch) from a thread and, after ``timeout_s`` without one, raises
``NoProgressError`` in the training thread. A thread blocked inside C code (a collective op)
only sees it when that call returns, which is why the process group's own timeout is set a
little longer (``trainables.driver``): on GPU a thread may wait in a CUDA sync that never
returns, and NCCL then ends the whole process at its timeout. The watchdog therefore logs its
reason the moment it fires, so the worker's log says why even when no exception gets out.
"""

from __future__ import annotations

import ctypes
import logging
import threading
import time

from trainables.loop import EpochMeter, LoopCallbacks, Progress

log = logging.getLogger(__name__)


class NoProgressError(RuntimeError):
    """A trial's worker made no progress for longer than ``train.progress_timeout_s``."""


class ProgressWatchdog(LoopCallbacks):
    """``with ProgressWatchdog(timeout_s) as dog:`` ... ``dog.beat()`` on progress; as loop
    callbacks, every optimizer step, evaluation batch and epoch is a beat."""

    def __init__(self, timeout_s: float | None) -> None:
        self.timeout_s = timeout_s
        self.last_beat = time.monotonic()
        self.where = "before the first optimizer step"
        self.fired = False
        self._target = threading.get_ident()
        self._stop = threading.Event()
        self._lock = threading.Lock()  # no error raised once the watched block has ended
        self._thread = threading.Thread(target=self._watch, name="progress-watchdog", daemon=True)

    def __enter__(self) -> ProgressWatchdog:
        if self.timeout_s is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self._stop.set()

    def beat(self, where: str | None = None) -> None:
        """Progress was made; ``where`` (e.g. "after step 37 of epoch 2") goes in the error."""
        self.last_beat = time.monotonic()
        if where:
            self.where = where

    def on_step(self, progress: Progress, meter: EpochMeter, lr: float) -> None:
        self.beat(f"after step {progress.step} of epoch {progress.epoch + 1}")

    def on_eval_batch(self) -> None:
        self.beat()

    def on_epoch(self, row, recipe) -> None:
        self.beat()

    def stalled(self) -> bool:
        """Whether the watched block has gone ``timeout_s`` without progress."""
        idle = time.monotonic() - self.last_beat
        return self.fired or (self.timeout_s is not None and idle >= self.timeout_s)

    def error(self) -> NoProgressError:
        return NoProgressError(
            f"no progress for {self.timeout_s:g} s (train.progress_timeout_s) {self.where}: "
            "a worker is stuck, or waits in a collective op for one that is"
        )

    def _watch(self) -> None:
        poll = min(1.0, self.timeout_s / 4)
        while not self._stop.wait(poll):
            with self._lock:
                if self._stop.is_set() or time.monotonic() - self.last_beat <= self.timeout_s:
                    continue
                self.fired = True
                log.error("%s", self.error())
                # Raised in the training thread at its next Python instruction.
                ctypes.pythonapi.PyThreadState_SetAsyncExc(
                    ctypes.c_ulong(self._target), ctypes.py_object(NoProgressError)
                )
                return
