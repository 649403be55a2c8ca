"""Prediction speed of a trained model: throughput over the validation split, latency per batch.

After the final epoch the recipe (``FineTuneRecipe.measure_inference``) hands these helpers the
bare model (no DDP wrapper: no collective hides in a forward), in eval mode, on its own device,
with the trial's autocast. Batches are tokenised and collated on the host beforehand, so the
figures are the model's: host-to-device copy, forward, prediction, and (for latency) the
predictions back on the host. CUDA runs asynchronously, so every clock is read after a
synchronisation.

    examples, tokens, seconds = time_throughput(model, batches, device=..., ...)
    milliseconds = time_latency(model, batches, device=..., ...)
    percentile(milliseconds, 95)
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any

import torch

__all__ = ["percentile", "predict", "time_latency", "time_throughput"]

Batch = dict[str, torch.Tensor]
# What a forward pass needs: the labels stay out (no loss is computed, as in serving).
_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) with linear interpolation between the closest ranks
    (numpy's default, "linear"): of [1, 2, 3, 4], the 50th is 2.5 and the 95th 3.85."""
    if not values:
        raise ValueError("percentile of no values")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile {q} is outside 0..100")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def predict(logits: torch.Tensor, regression: bool) -> torch.Tensor:
    """The prediction a logits tensor stands for: the score (regression) or the class."""
    return logits.float().squeeze(-1) if regression else logits.argmax(-1)


def _inputs(batch: Batch, device: torch.device) -> Batch:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items() if k in _INPUTS}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_throughput(
    model: torch.nn.Module,
    batches: Sequence[Batch],
    *,
    device: torch.device,
    autocast: Callable[[], AbstractContextManager],
    regression: bool,
    warmup_steps: int,
    on_batch: Callable[[], Any] = lambda: None,
) -> tuple[int, int, float]:
    """Predict every batch once, after ``warmup_steps`` untimed ones: (examples, non-padding
    tokens, seconds). Predictions stay on the device until the end, as in batch scoring."""
    with torch.inference_mode():
        for batch in batches[:warmup_steps]:
            on_batch()
            with autocast():
                model(**_inputs(batch, device))
        _sync(device)
        start = time.perf_counter()
        predictions = []
        for batch in batches:
            on_batch()
            with autocast():
                logits = model(**_inputs(batch, device)).logits
            predictions.append(predict(logits, regression))
        if predictions:
            torch.cat(predictions).cpu()  # waits for the device
        _sync(device)
        seconds = time.perf_counter() - start
    examples = sum(int(b["input_ids"].shape[0]) for b in batches)
    tokens = sum(int(b["attention_mask"].sum()) for b in batches)
    return examples, tokens, seconds


def time_latency(
    model: torch.nn.Module,
    batches: Sequence[Batch],
    *,
    device: torch.device,
    autocast: Callable[[], AbstractContextManager],
    regression: bool,
    warmup_steps: int,
    on_batch: Callable[[], Any] = lambda: None,
) -> list[float]:
    """Milliseconds of each batch, from the collated batch on the host to its predictions back
    on the host, after ``warmup_steps`` untimed batches (the first ones, again)."""
    times = []
    with torch.inference_mode():
        for i in range(warmup_steps + len(batches)):
            batch = batches[i % len(batches)] if i < warmup_steps else batches[i - warmup_steps]
            on_batch()
            _sync(device)
            start = time.perf_counter()
            with autocast():
                logits = model(**_inputs(batch, device)).logits
            predict(logits, regression).cpu()  # waits for the device
            _sync(device)
            if i >= warmup_steps:
                times.append((time.perf_counter() - start) * 1e3)
    return times
