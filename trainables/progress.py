"""Progress within an epoch, sent to the sweep by rank 0 about every ``every_s`` seconds.

Every figure is summed over all workers, so every rank must join the same all-reduces at the
same steps. Clocks differ between ranks, so the cadence is counted in optimizer steps that all
ranks agree on: after each reduce, the next one is ``every_s`` away at the seconds per step just
measured, and the measurement is the reduced one (the slowest worker's time), the same on every
rank. The first reduce follows the first step, so a trial shows that it trains as soon as it
does; each epoch's end is sent too, with its evaluation time, from the epoch's row (no reduce).
Rank 0 times mid-epoch evaluations itself, for the ETA.

    sender = ProgressSender(channel, trial)     # channel None: does nothing, on every rank
    fit(trial, callbacks=[sender, ...])
"""

from __future__ import annotations

import time

from contract.config import TrialConfig
from contract.progress import StepProgress
from contract.rows import EpochRow, EvalPoint
from trainables.distributed import all_reduce, rank_and_world
from trainables.loop import EpochMeter, FineTuneRecipe, LoopCallbacks, Progress
from trainables.progress_board import ProgressChannel

__all__ = ["ProgressSender"]


class ProgressSender(LoopCallbacks):
    """Sends the sweep a ``StepProgress`` at its channel's cadence, from rank 0."""

    def __init__(self, channel: ProgressChannel | None, trial: TrialConfig) -> None:
        self.channel = channel
        self.epochs = trial.train.epochs
        self.eval_every_steps = trial.train.eval_every_steps or 0
        self.steps_per_epoch = 1
        self.next_step = 1  # the optimizer step (over all epochs) of the next reduce
        self.eval_time_s: float | None = None  # the latest evaluation's seconds
        self._eval_started: float | None = None  # when the evaluation under way started
        # At the last reduce: (epoch, step, loss sum, examples, seconds) of that epoch so far.
        self._last: tuple[int, int, float, float, float] | None = None

    def on_start(self, recipe: FineTuneRecipe) -> None:
        self.steps_per_epoch = recipe.steps_per_epoch
        self.next_step = recipe.progress.step + 1

    def on_step(self, progress: Progress, meter: EpochMeter, lr: float) -> None:
        self._eval_started = None
        if self.channel is None or progress.step < self.next_step:
            return
        loss_sum, examples, _ = all_reduce(list(meter.totals()))
        (seconds,) = all_reduce([meter.seconds()], op="max")
        epoch = progress.epoch + 1  # the epoch under way
        epoch_step = progress.step - progress.epoch * self.steps_per_epoch
        last = self._last
        if last is None or last[0] != epoch:  # the window starts with the epoch
            last = (epoch, progress.step - epoch_step, 0.0, 0.0, 0.0)
        steps, window_s = progress.step - last[1], seconds - last[4]
        window_examples = examples - last[3]
        step_time = window_s / steps if steps > 0 else 0.0
        self._last = (epoch, progress.step, loss_sum, examples, seconds)
        gap = round(self.channel.every_s / step_time) if step_time > 0 else 1
        self.next_step = progress.step + max(1, gap)
        if rank_and_world()[0] != 0:
            return
        self.channel.send(
            StepProgress(
                epoch=epoch,
                epochs=self.epochs,
                epoch_step=epoch_step,
                steps_per_epoch=self.steps_per_epoch,
                step=progress.step,
                examples_seen=progress.examples_seen + int(examples),
                train_time_s=progress.train_time_s + seconds,
                examples_per_s=window_examples / window_s if window_s > 0 else 0.0,
                step_time_s=step_time,
                loss=(loss_sum - last[2]) / window_examples if window_examples > 0 else None,
                eval_time_s=self.eval_time_s,
                eval_every_steps=self.eval_every_steps,
            )
        )

    def on_eval_batch(self) -> None:
        if self._eval_started is None:
            self._eval_started = time.perf_counter()

    def on_eval(self, point: EvalPoint) -> None:
        if self._eval_started is not None:  # a mid-epoch evaluation, timed on this rank
            self.eval_time_s = time.perf_counter() - self._eval_started
            self._eval_started = None

    def on_epoch(self, row: EpochRow, recipe: FineTuneRecipe) -> None:
        self.eval_time_s, self._eval_started = row.eval_time_s, None
        if self.channel is None or rank_and_world()[0] != 0:
            return
        self.channel.send(
            StepProgress(
                epoch=row.epoch,
                epochs=self.epochs,
                epoch_step=self.steps_per_epoch,
                steps_per_epoch=self.steps_per_epoch,
                step=recipe.progress.step,
                examples_seen=row.examples_seen,
                train_time_s=row.train_time_s,
                examples_per_s=row.examples_per_s,
                step_time_s=row.epoch_time_s / self.steps_per_epoch,
                loss=row.train_loss,
                eval_time_s=row.eval_time_s,
                eval_every_steps=self.eval_every_steps,
                evaluated=True,
            )
        )
