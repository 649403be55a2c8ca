"""Rank 0's progress within epochs: its cadence, its window arithmetic, and a real loop (no Ray)."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace

import pytest

from contract.config import TrialConfig
from contract.progress import StepProgress
from trainables.loop import Progress, fit
from trainables.progress import ProgressSender
from trainables.progress_board import ProgressChannel

TRIAL = TrialConfig.model_validate(
    {
        "model": {"from_scratch": True, "tokenizer": "wordpiece", "wordpiece_vocab_size": 300},
        "data": {"source": "synthetic", "synthetic_train_size": 96, "max_length": 32},
        "compute": {"global_batch_size": 16},
        "train": {"epochs": 2, "seed": 4},
    }
)


@dataclass
class Channel:
    """Stands in for the sweep's board: keeps what rank 0 sends."""

    every_s: float
    sent: list[StepProgress] = field(default_factory=list)

    def send(self, progress: StepProgress) -> None:
        self.sent.append(progress)


class Meter:
    """An epoch's running sums as a script: 16 examples per step, a loss of ``loss`` each, one
    step per half second."""

    def __init__(self, steps: int, loss: float = 0.5) -> None:
        self.steps, self.loss = steps, loss

    def totals(self) -> tuple[float, int, int]:
        return self.loss * 16 * self.steps, 16 * self.steps, 160 * self.steps

    def seconds(self) -> float:
        return 0.5 * self.steps


def test_the_cadence_follows_the_measured_step_time():
    channel = Channel(every_s=2.0)
    sender = ProgressSender(channel, TRIAL)
    sender.on_start(SimpleNamespace(steps_per_epoch=10, progress=Progress()))
    for step in range(1, 11):
        sender.on_step(Progress(step=step), Meter(step), lr=1e-3)
    # The first step, then every 2 s / 0.5 s = 4 steps.
    assert [p.step for p in channel.sent] == [1, 5, 9]
    second = channel.sent[1]
    assert (second.epoch, second.epoch_step, second.steps_per_epoch) == (1, 5, 10)
    assert second.step_time_s == 0.5 and second.examples_per_s == 32.0
    assert second.examples_seen == 80 and second.train_time_s == 2.5
    assert second.loss == pytest.approx(0.5) and second.eval_time_s is None
    assert second.epochs == 2 and not second.evaluated


def test_each_epoch_starts_a_new_window_and_ends_with_an_evaluated_record():
    channel = Channel(every_s=1.0)  # every 2 steps
    sender = ProgressSender(channel, TRIAL)
    sender.on_start(SimpleNamespace(steps_per_epoch=4, progress=Progress()))
    for step in range(1, 5):
        sender.on_step(Progress(step=step), Meter(step, loss=0.7), lr=1e-3)
    row = SimpleNamespace(
        epoch=1,
        examples_seen=64,
        train_time_s=2.0,
        examples_per_s=32.0,
        epoch_time_s=2.0,
        train_loss=0.7,
        eval_time_s=0.25,
    )
    sender.on_epoch(row, SimpleNamespace(progress=Progress(epoch=1, step=4)))
    done = channel.sent[-1]
    assert done.evaluated and (done.epoch, done.epoch_step, done.step) == (1, 4, 4)
    assert done.eval_time_s == 0.25 and done.step_time_s == 0.5
    before = Progress(epoch=1, step=4, train_time_s=2.0, examples_seen=64)
    for step in range(1, 5):  # epoch 2: the loop's meter starts again
        sender.on_step(
            Progress(**{**vars(before), "step": 4 + step}), Meter(step, loss=0.3), lr=1e-3
        )
    second = [p for p in channel.sent if p.epoch == 2]
    assert [p.epoch_step for p in second] == [1, 3]
    assert second[-1].loss == pytest.approx(0.3)  # this epoch's window, not the last one's
    assert second[-1].examples_seen == 64 + 48 and second[-1].train_time_s == 3.5
    assert second[-1].eval_time_s == 0.25  # the latest evaluation, for the ETA


def test_a_resumed_trial_counts_from_its_checkpoint():
    channel = Channel(every_s=100.0)
    sender = ProgressSender(channel, TRIAL)
    restored = Progress(epoch=1, step=6, train_time_s=3.0, examples_seen=96)
    sender.on_start(SimpleNamespace(steps_per_epoch=6, progress=restored))
    sender.on_step(Progress(**{**vars(restored), "step": 7}), Meter(1), lr=1e-3)
    (first,) = channel.sent
    assert (first.epoch, first.epoch_step, first.step) == (2, 1, 7)
    assert first.examples_seen == 96 + 16


def test_without_a_channel_nothing_is_measured_or_sent():
    class Untouchable:
        def totals(self):
            raise AssertionError("read the meter")

        def seconds(self):
            raise AssertionError("read the meter")

    sender = ProgressSender(None, TRIAL)
    sender.on_start(SimpleNamespace(steps_per_epoch=3, progress=Progress()))
    sender.on_step(Progress(step=1), Untouchable(), lr=1e-3)


def test_a_real_loop_sends_every_step_and_every_epoch(tmp_path):
    channel = Channel(every_s=1e-9)
    trial = TRIAL.model_copy(
        update={"train": TRIAL.train.model_copy(update={"eval_every_steps": 4})}
    )
    fit(trial, callbacks=[ProgressSender(channel, trial)], cache_dir=tmp_path)
    steps = [p for p in channel.sent if not p.evaluated]
    ends = [p for p in channel.sent if p.evaluated]
    assert [p.step for p in steps] == list(range(1, 13))  # 96 / 16 = 6 steps x 2 epochs
    assert [(p.epoch, p.epoch_step) for p in steps[4:8]] == [(1, 5), (1, 6), (2, 1), (2, 2)]
    assert [p.epoch for p in ends] == [1, 2] and ends[-1].examples_seen == 2 * 96
    assert all(p.steps_per_epoch == 6 and p.examples_per_s > 0 for p in channel.sent)
    assert all(p.eval_every_steps == 4 for p in channel.sent)
    # Rank 0 timed the mid-epoch evaluation at step 4, before the epoch's own.
    assert [p.eval_time_s is not None for p in steps[:5]] == [False] * 4 + [True]
    assert steps[4].eval_time_s > 0 and ends[0].eval_time_s > 0


def test_sending_never_raises():
    class Broken:
        class put:  # an actor method
            @staticmethod
            def remote(*args):
                raise RuntimeError("actor died")

    ProgressChannel(Broken(), "t_00000", 30.0).send(
        StepProgress(
            epoch=1,
            epochs=1,
            epoch_step=1,
            steps_per_epoch=1,
            step=1,
            examples_seen=1,
            train_time_s=1.0,
            examples_per_s=1.0,
            step_time_s=1.0,
            loss=None,
        )
    )
