"""The per-worker fine-tuning recipe: data shard -> model -> AdamW -> epochs -> eval -> row.

``fit`` runs the same on one process (a test, a REPL) and on each Ray Train worker, where
torch.distributed is already initialised and the model is wrapped in DDP. Every reported number
is aggregated across workers, so rank 0's row (the one Tune sees) speaks for the whole trial.
Side concerns (checkpoints, the progress watchdog, W&B) plug in through ``LoopCallbacks``.

    recipe = FineTuneRecipe(trial)
    recipe.setup(resume_from=None)          # data, model, optimizer; or a checkpoint's state
    callbacks.on_start(recipe)
    for epoch in remaining epochs:
        recipe.train_epoch(epoch, callbacks)
        row = recipe.epoch_row(recipe.evaluate(callbacks))
        callbacks.on_epoch(row, recipe)      # e.g. save recipe.state_dict()
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler
from transformers import DataCollatorWithPadding, get_linear_schedule_with_warmup

from contract.config import Precision, TrialConfig
from contract.rows import EpochRow, chance_column, score_column
from trainables.data import (
    TaskData,
    default_cache_dir,
    load_task_data,
    nested_subset,
    tokenize_cached,
)
from trainables.distributed import all_gather_objects, all_reduce, rank_and_world
from trainables.metrics import build_metrics
from trainables.models import build_model, build_tokenizer, count_parameters
from trainables.sampling import LengthGroupedSampler, longest_first, sequence_lengths

__all__ = [
    "EpochMeter",
    "FineTuneRecipe",
    "LoopCallbacks",
    "Progress",
    "build_dataloaders",
    "build_optimizer",
    "fit",
]

log = logging.getLogger(__name__)

# Data-loading processes per GPU worker at most: tokenised examples only need collating.
_MAX_LOADER_PROCESSES = 4


@dataclass
class Progress:
    """Where training stands, over all epochs and restarts; saved with every checkpoint."""

    epoch: int = 0  # epochs completed
    step: int = 0  # optimizer steps completed
    train_time_s: float = 0.0
    examples_seen: int = 0  # all workers
    train_tokens: int = 0  # non-padding tokens, all workers
    restarts: int = 0


class EpochMeter:
    """This rank's running sums within an epoch. They stay on the device, so a step costs no
    host sync; reading them (``totals``) syncs, which callbacks do only when they log."""

    def __init__(self, device: torch.device) -> None:
        self.started = time.perf_counter()
        self.examples = 0  # from batch shapes: known without a sync
        self._loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        self._tokens = torch.zeros((), dtype=torch.int64, device=device)

    def add(self, loss: torch.Tensor, examples: int, attention_mask: torch.Tensor) -> None:
        self._loss_sum += loss.detach().double() * examples
        self._tokens += attention_mask.sum()
        self.examples += examples

    def seconds(self) -> float:
        return time.perf_counter() - self.started

    def totals(self) -> tuple[float, int, int]:
        """(loss sum, examples, tokens) on this rank so far."""
        return self._loss_sum.item(), self.examples, int(self._tokens.item())


class LoopCallbacks:
    """What the loop tells its plug-ins; every method is called on every rank (so a callback
    may take part in collectives) and does nothing unless overridden."""

    def on_start(self, recipe: FineTuneRecipe) -> None:
        """Once, after ``recipe.setup`` (a checkpoint's progress restored), before training."""

    def on_step(self, progress: Progress, meter: EpochMeter, lr: float) -> None:
        """After every optimizer step; ``progress`` holds the epochs before this one."""

    def on_eval_batch(self) -> None:
        """Before every evaluation batch."""

    def on_epoch(self, row: EpochRow, recipe: FineTuneRecipe) -> None:
        """After every epoch's evaluation; ``recipe.state_dict()`` is its training state."""


class _Callbacks(LoopCallbacks):
    """Several callbacks called in order, as one."""

    def __init__(self, callbacks: Sequence[LoopCallbacks]) -> None:
        self.callbacks = callbacks

    def on_start(self, recipe: FineTuneRecipe) -> None:
        for callback in self.callbacks:
            callback.on_start(recipe)

    def on_step(self, progress: Progress, meter: EpochMeter, lr: float) -> None:
        for callback in self.callbacks:
            callback.on_step(progress, meter, lr)

    def on_eval_batch(self) -> None:
        for callback in self.callbacks:
            callback.on_eval_batch()

    def on_epoch(self, row: EpochRow, recipe: FineTuneRecipe) -> None:
        for callback in self.callbacks:
            callback.on_epoch(row, recipe)


def fit(
    trial: TrialConfig,
    *,
    callbacks: Sequence[LoopCallbacks] = (),
    device: torch.device | None = None,
    cache_dir: Path | None = None,
    resume_from: dict[str, Any] | None = None,
) -> EpochRow | None:
    """Fine-tune and evaluate once per epoch; the last epoch's row (None when ``resume_from``
    already holds every epoch). ``resume_from`` is a ``FineTuneRecipe.state_dict()``: training
    continues after its epoch as if it had never stopped."""
    recipe = FineTuneRecipe(trial, device=device, cache_dir=cache_dir)
    recipe.setup(resume_from)
    hooks = _Callbacks(callbacks)
    hooks.on_start(recipe)
    row = None
    for epoch in range(recipe.progress.epoch + 1, trial.train.epochs + 1):
        recipe.train_epoch(epoch, hooks)
        row = recipe.epoch_row(recipe.evaluate(hooks))
        hooks.on_epoch(row, recipe)
    return row


class FineTuneRecipe:
    """One trial's training state on one worker, and the steps that advance it."""

    def __init__(
        self,
        trial: TrialConfig,
        *,
        device: torch.device | None = None,
        cache_dir: Path | None = None,
    ) -> None:
        self.trial = trial
        self.device = device or torch.device("cuda" if trial.compute.use_gpu else "cpu")
        self.cache_dir = cache_dir or default_cache_dir()
        self.progress = Progress()
        self._epoch: dict[str, float] = {}  # the last train_epoch's figures, for its row

    def setup(self, resume_from: dict[str, Any] | None = None) -> None:
        """Data, model, optimizer and schedule, as at the start of training or at the
        checkpoint ``resume_from``."""
        trial, device = self.trial, self.device
        _configure_device(trial, device)
        torch.manual_seed(trial.train.seed)
        task = load_task_data(trial.data)
        self.tokenizer = tokenizer = build_tokenizer(trial.model, task, self.cache_dir)
        self.train_loader, self.eval_loader = build_dataloaders(
            trial, task, tokenizer, self.cache_dir, device
        )
        model = build_model(
            trial.model,
            num_labels=task.num_labels,
            problem_type=task.problem_type,
            vocab_size=len(tokenizer),
            pad_token_id=tokenizer.pad_token_id,
        ).to(device)
        self.params_total, self.params_non_embedding = count_parameters(model)
        if rank_and_world()[1] > 1:
            model = DistributedDataParallel(
                model, device_ids=[device] if device.type == "cuda" else None
            )
        self.model = model
        self.accumulation = trial.compute.accumulation_steps()
        self.steps_per_epoch = math.ceil(len(self.train_loader) / self.accumulation)
        self.optimizer, self.scheduler = build_optimizer(
            model, trial, self.steps_per_epoch * trial.train.epochs, device
        )
        self.scaler = torch.amp.GradScaler(enabled=trial.train.precision is Precision.fp16)
        self.problem_type = task.problem_type
        self.metrics = build_metrics(task.metric_names)
        self.chance = _chance_scores(task, self.metrics)
        if resume_from:
            self.load_state_dict(resume_from)
        self.model.train()

    def autocast(self) -> AbstractContextManager:
        dtype = {Precision.bf16: torch.bfloat16, Precision.fp16: torch.float16}.get(
            self.trial.train.precision
        )
        return torch.autocast("cuda", dtype=dtype) if dtype else nullcontext()

    def train_epoch(self, epoch: int, callbacks: LoopCallbacks) -> None:
        """One pass over this worker's shard; the epoch's figures, summed over workers, go
        into the next ``epoch_row``."""
        model, loader, accumulation = self.model, self.train_loader, self.accumulation
        world = rank_and_world()[1]
        max_grad_norm = self.trial.train.max_grad_norm
        loader.sampler.set_epoch(epoch)
        meter = EpochMeter(self.device)
        for i, batch in enumerate(loader):
            batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
            last_micro = (i + 1) % accumulation == 0 or i + 1 == len(loader)
            # Skip the gradient all-reduce on all but the last micro-batch of a step.
            sync = nullcontext() if last_micro or world == 1 else model.no_sync()
            with sync, self.autocast():
                loss = model(**batch).loss
            self.scaler.scale(loss / accumulation).backward()
            meter.add(loss, batch["labels"].shape[0], batch["attention_mask"])
            if last_micro:
                if max_grad_norm:
                    self.scaler.unscale_(self.optimizer)
                    torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
                self.scaler.step(self.optimizer)
                self.scaler.update()
                self.scheduler.step()
                self.optimizer.zero_grad(set_to_none=True)
                self.progress.step += 1
                callbacks.on_step(self.progress, meter, self.scheduler.get_last_lr()[0])
        loss_sum, examples, tokens = all_reduce(list(meter.totals()))
        (elapsed,) = all_reduce([meter.seconds()], op="max")
        progress = self.progress
        progress.epoch = epoch
        progress.train_time_s += elapsed
        progress.examples_seen += int(examples)
        progress.train_tokens += int(tokens)
        self._epoch = {
            "train_loss": loss_sum / examples,
            "examples_per_s": examples / elapsed,
            "tokens_per_s": tokens / elapsed,
            "epoch_time_s": elapsed,
        }

    @torch.no_grad()
    def evaluate(self, callbacks: LoopCallbacks | None = None) -> dict[str, float]:
        """Score the whole validation split (each worker its shard, predictions gathered):
        ``eval_loss``, ``eval_<metric>`` for each of the task's metrics, ``eval_examples``
        and ``eval_time_s``."""
        start = time.perf_counter()
        callbacks = callbacks or LoopCallbacks()
        self.model.eval()
        meter = EpochMeter(self.device)
        predictions, references = [], []
        for batch in self.eval_loader:
            callbacks.on_eval_batch()
            batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
            with self.autocast():
                out = self.model(**batch)
            meter.add(out.loss, batch["labels"].shape[0], batch["attention_mask"])
            logits = out.logits.float()
            regression = self.problem_type == "regression"
            predictions.append(logits.squeeze(-1) if regression else logits.argmax(-1))
            references.append(batch["labels"])
        self.model.train()
        loss_sum, count, _ = all_reduce(list(meter.totals()))
        scores = self.metrics.compute(
            predictions=all_gather_objects(_as_list(predictions)),
            references=all_gather_objects(_as_list(references)),
        )
        return {
            "eval_loss": loss_sum / count,
            **{score_column(k): float(v) for k, v in scores.items()},
            "eval_examples": int(count),
            "eval_time_s": time.perf_counter() - start,
        }

    def epoch_row(self, scores: dict[str, float]) -> EpochRow:
        """The row of the epoch just trained, with its ``evaluate`` scores."""
        compute = self.trial.compute
        return EpochRow(
            epoch=self.progress.epoch,
            **scores,
            **self.chance,
            **self._epoch,
            train_time_s=self.progress.train_time_s,
            examples_seen=self.progress.examples_seen,
            train_tokens=self.progress.train_tokens,
            lr=self.scheduler.get_last_lr()[0],
            worker_pid=os.getpid(),
            params_total=self.params_total,
            params_non_embedding=self.params_non_embedding,
            train_examples=len(self.train_loader.dataset),
            global_batch=compute.global_batch(),
            per_worker_batch=compute.per_worker_batch(),
            accumulation_steps=self.accumulation,
            restarts=self.progress.restarts,
        )

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue after the current epoch: weights, optimizer and
        schedule, loss scaler, every rank's RNG states (dropout), progress. The sampler needs
        no state: each epoch's order is a function of (seed, epoch), and checkpoints fall on
        epoch boundaries. A collective: every rank must call it. The tensors are the live
        ones: serialise the state before training goes on."""
        return {
            "model": _unwrap(self.model).state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": all_gather_objects([_rng_state()]),  # one per rank, in rank order
            "progress": dataclasses.asdict(self.progress),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        _unwrap(self.model).load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        _set_rng_state(state["rng"][rank_and_world()[0]])
        self.progress = Progress(**state["progress"])
        self.progress.restarts += 1


def build_dataloaders(
    trial: TrialConfig, task: TaskData, tokenizer, cache_dir: Path, device: torch.device
) -> tuple[DataLoader, DataLoader]:
    """Train loader over this worker's shard of the nested subset; eval loader over its share
    of the whole validation split (disjoint shards, no padding duplicates, so metrics are exact)."""
    rank, world = rank_and_world()
    train_set, validation_set = tokenize_cached(task, tokenizer, trial.data.max_length, cache_dir)
    train_set = nested_subset(train_set, trial.data, trial.train.seed)
    # Sorted by length, so eval batches pad little; the scores do not depend on the order.
    validation_set = longest_first(validation_set.select(range(rank, len(validation_set), world)))
    cuda = device.type == "cuda"
    # Dynamic padding: each batch is padded to its own longest sequence, never to max_length.
    collate = DataCollatorWithPadding(tokenizer, pad_to_multiple_of=8 if cuda else None)
    if trial.train.group_by_length:
        sampler = LengthGroupedSampler(
            sequence_lengths(train_set),
            trial.compute.micro_batch(),
            num_replicas=world,
            rank=rank,
            seed=trial.train.seed,
        )
    else:
        sampler = DistributedSampler(
            train_set, num_replicas=world, rank=rank, shuffle=True, seed=trial.train.seed
        )
    # On GPU, collate in background processes on the worker's spare CPUs, so the device never
    # waits for a batch. On CPU the worker's CPUs run the model: loading stays in-process.
    processes = min(int(trial.compute.cpus_per_worker) - 1, _MAX_LOADER_PROCESSES) if cuda else 0
    options = {"collate_fn": collate, "pin_memory": cuda, "num_workers": max(0, processes)}
    if options["num_workers"]:
        options["persistent_workers"] = True
    train_loader = DataLoader(
        train_set, batch_size=trial.compute.micro_batch(), sampler=sampler, **options
    )
    eval_loader = DataLoader(
        validation_set, batch_size=max(64, trial.compute.micro_batch()), **options
    )
    return train_loader, eval_loader


def build_optimizer(model: torch.nn.Module, trial: TrialConfig, total_steps: int, device):
    """AdamW (no decay on biases and LayerNorm) with linear warm-up then linear decay to 0."""
    decay, no_decay = [], []
    for param in model.parameters():
        (no_decay if param.ndim < 2 else decay).append(param)
    groups = [
        {"params": decay, "weight_decay": trial.train.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    # Fused: one kernel over all parameters, on GPU and on CPU (torch >= 2.4): on CPU the
    # per-tensor loop took 58 ms a step for MiniLM against 10 ms fused (BENCHMARKS.md, 2).
    fused = device.type in ("cuda", "cpu")
    optimizer = torch.optim.AdamW(groups, lr=trial.train.lr, fused=fused)
    warmup = int(trial.train.warmup_ratio * total_steps)
    return optimizer, get_linear_schedule_with_warmup(optimizer, warmup, total_steps)


def _configure_device(trial: TrialConfig, device: torch.device) -> None:
    if device.type == "cpu":
        # One thread per reserved CPU: oversubscribed workers run several times slower.
        torch.set_num_threads(max(1, int(trial.compute.cpus_per_worker)))
        return
    # fp32 runs use TF32 tensor cores for matrix products (Ampere and newer): ~8x the FP32
    # rate at a 10-bit mantissa, which fine-tuning does not notice (as HF's `tf32`).
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    if trial.train.precision is Precision.bf16 and not torch.cuda.is_bf16_supported(
        including_emulation=False
    ):
        log.warning(
            "%s has no native bf16 (it is emulated, and slow): train.precision fp16 or fp32 "
            "runs faster on it",
            torch.cuda.get_device_name(device),
        )


def _chance_scores(task: TaskData, metrics) -> dict[str, float]:
    """Each metric's score for the best constant prediction on the validation labels: the
    level a trial that learned nothing reaches (majority-class accuracy, F1 of always
    predicting class 1 where that wins; 0 for correlations and MCC)."""
    references = list(task.validation["label"])
    constants = [0.0] if task.problem_type == "regression" else range(task.num_labels)
    best: dict[str, float] = {}
    for constant in constants:
        scores = metrics.compute(predictions=[constant] * len(references), references=references)
        for name, value in scores.items():
            best[name] = max(best.get(name, -math.inf), float(value))
    return {chance_column(name): value for name, value in best.items()}


def _as_list(tensors: list[torch.Tensor]) -> list:
    """Concatenated on the device and copied to the host once (not once per batch)."""
    return torch.cat(tensors).tolist() if tensors else []


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if isinstance(model, DistributedDataParallel) else model


def _rng_state() -> dict[str, torch.Tensor | None]:
    """This process's RNG states: dropout draws from CUDA's generator on a GPU, CPU's else."""
    cuda = torch.cuda.get_rng_state() if torch.cuda.is_initialized() else None
    return {"cpu": torch.get_rng_state(), "cuda": cuda}


def _set_rng_state(state: dict[str, torch.Tensor | None]) -> None:
    torch.set_rng_state(state["cpu"])
    if state["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])
