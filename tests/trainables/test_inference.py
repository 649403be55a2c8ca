"""Timing prediction: the percentile arithmetic, and what the timers count (no Ray)."""

from __future__ import annotations

from contextlib import nullcontext
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from trainables.inference import percentile, predict, time_latency, time_throughput


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [
        ([1, 2, 3, 4], 50, 2.5),
        ([1, 2, 3, 4], 95, 3.85),  # rank (4 - 1) * 0.95 = 2.85: 3 + 0.85 * (4 - 3)
        ([1, 2, 3, 4], 0, 1),
        ([1, 2, 3, 4], 100, 4),
        ([7.0], 99, 7.0),
        ([10, 1, 5], 50, 5),  # unsorted input
        (list(range(1, 101)), 99, 99.01),
    ],
)
def test_percentile_on_known_inputs(values, q, expected):
    assert percentile(values, q) == pytest.approx(expected)


def test_percentile_matches_numpy_linear():
    values = np.random.default_rng(0).lognormal(size=37).tolist()
    for q in (50, 95, 99):
        assert percentile(values, q) == pytest.approx(np.percentile(values, q))
    with pytest.raises(ValueError):
        percentile([], 50)
    with pytest.raises(ValueError):
        percentile([1.0], 101)


class Counting(torch.nn.Module):
    """A classifier stand-in that counts its forward passes and the examples they saw."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(1, 2)
        self.calls, self.examples = 0, 0

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        self.calls += 1
        self.examples += input_ids.shape[0]
        return SimpleNamespace(logits=self.linear(input_ids.float().mean(-1, keepdim=True)))


def batches(sizes: list[int], length: int = 6) -> list[dict[str, torch.Tensor]]:
    out = []
    for size in sizes:
        mask = torch.ones(size, length, dtype=torch.long)
        mask[:, -2:] = 0  # two padding tokens per example
        out.append(
            {
                "input_ids": torch.randint(1, 50, (size, length)),
                "attention_mask": mask,
                "labels": torch.zeros(size, dtype=torch.long),  # left out of the forward pass
            }
        )
    return out


OPTIONS = {"device": torch.device("cpu"), "autocast": nullcontext, "regression": False}


def test_throughput_counts_every_example_and_real_token_once_after_warm_up():
    model, beats = Counting(), []
    examples, tokens, seconds = time_throughput(
        model, batches([4, 4, 3]), warmup_steps=2, on_batch=lambda: beats.append(1), **OPTIONS
    )
    assert (examples, tokens) == (11, 11 * 4)
    assert seconds > 0
    assert model.calls == 2 + 3 and len(beats) == 2 + 3  # warm-up passes are not counted


def test_latency_times_each_batch_after_warm_up_cycling_when_fewer_batches():
    model = Counting()
    times = time_latency(model, batches([1, 1, 1]), warmup_steps=5, **OPTIONS)
    assert len(times) == 3 and all(t > 0 for t in times)
    assert model.calls == 5 + 3  # the warm-up cycles through the three batches
    assert torch.is_grad_enabled()  # inference mode ends with the timing


def test_predict_is_the_class_or_the_score():
    logits = torch.tensor([[0.1, 0.9], [2.0, -1.0]])
    assert predict(logits, regression=False).tolist() == [1, 0]
    assert predict(torch.tensor([[0.5], [1.5]]), regression=True).tolist() == [0.5, 1.5]
