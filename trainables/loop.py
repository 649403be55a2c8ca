"""The per-worker fine-tuning recipe: data shard -> model -> AdamW -> epochs -> eval -> row.

``fit`` runs the same on one process (a test, a REPL) and on each Ray Train worker, where
torch.distributed is already initialised and the model is wrapped in DDP. Every reported number
is aggregated across workers, so rank 0's row (the one Tune sees) speaks for the whole trial.
Side concerns (checkpoints, the progress watchdog, W&B) plug in through ``LoopCallbacks``.

    recipe = FineTuneRecipe(trial)
    recipe.setup(resume_from=None)          # data, model, optimizer; or a checkpoint's state
    callbacks.on_start(recipe)
    for epoch in remaining epochs:
        recipe.train_epoch(epoch, callbacks)  # + an evaluation every train.eval_every_steps
        scores = recipe.evaluate(callbacks)
        inference = recipe.measure_inference(callbacks) if final epoch else {}
        row = recipe.epoch_row(scores, inference)   # final row: + convergence figures
        callbacks.on_epoch(row, recipe)      # e.g. save recipe.state_dict()
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler
from transformers import DataCollatorWithPadding, get_linear_schedule_with_warmup

from contract.config import Precision, TrialConfig
from contract.convergence import converged_level, first_reaching
from contract.rows import METRIC_NAMES, EpochRow, EvalPoint, Latency, chance_column, score_column
from trainables.data import (
    TaskData,
    default_cache_dir,
    load_task_data,
    nested_subset,
    tokenize_cached,
)
from trainables.distributed import all_gather_objects, all_reduce, rank_and_world
from trainables.hardware import peak_host_rss_bytes, peak_tflops, training_flops_per_token
from trainables.inference import percentile, predict, time_latency, time_throughput
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
_GIB = 2**30


@dataclass
class Progress:
    """Where training stands, over all epochs and restarts; saved with every checkpoint."""

    epoch: int = 0  # epochs completed
    step: int = 0  # optimizer steps completed
    train_time_s: float = 0.0
    examples_seen: int = 0  # all workers
    train_tokens: int = 0  # non-padding tokens, all workers
    restarts: int = 0
    eval_points: list[EvalPoint] = dataclasses.field(default_factory=list)  # every evaluation


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

    @contextmanager
    def paused(self) -> Iterator[None]:
        """Time spent inside is not training time (a mid-epoch evaluation)."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.started += time.perf_counter() - start

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
        """Before every evaluation batch (and every batch the inference timing predicts)."""

    def on_eval(self, point: EvalPoint) -> None:
        """After every mid-epoch evaluation (``train.eval_every_steps``); the epoch's own
        evaluation comes with its row, in ``on_epoch``."""

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

    def on_eval(self, point: EvalPoint) -> None:
        for callback in self.callbacks:
            callback.on_eval(point)

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
    """Fine-tune and evaluate once per epoch (and every ``train.eval_every_steps`` steps),
    time inference after the last; the last epoch's row (None when ``resume_from`` already
    holds every epoch). ``resume_from`` is a ``FineTuneRecipe.state_dict()``: training
    continues after its epoch as if it had never stopped."""
    recipe = FineTuneRecipe(trial, device=device, cache_dir=cache_dir)
    recipe.setup(resume_from)
    hooks = _Callbacks(callbacks)
    hooks.on_start(recipe)
    row = None
    for epoch in range(recipe.progress.epoch + 1, trial.train.epochs + 1):
        recipe.train_epoch(epoch, hooks)
        scores = recipe.evaluate(hooks)
        final = epoch == trial.train.epochs and trial.inference.enabled
        inference = recipe.measure_inference(hooks) if final else {}
        row = recipe.epoch_row(scores, inference)
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
        every = self.trial.train.eval_every_steps
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
                # Mid-epoch evaluation; the epoch's last step is evaluated with the epoch.
                if every and self.progress.step % every == 0 and i + 1 < len(loader):
                    with meter.paused():
                        done = epoch - 1 + (i + 1) / len(loader)
                        point = self._evaluate_mid_epoch(done, meter, callbacks)
                    callbacks.on_eval(point)
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

    def _evaluate_mid_epoch(
        self, epoch: float, meter: EpochMeter, callbacks: LoopCallbacks
    ) -> EvalPoint:
        """Evaluate between optimizer steps, leaving training exactly as it would have been:
        the model goes back to train mode, and the RNG states (which iterating a DataLoader
        draws from, on every rank) are restored, so dropout and the batch order are those of
        a run without it."""
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            scores = self.evaluate(callbacks)
        (examples,) = all_reduce([meter.examples])
        (seconds,) = all_reduce([meter.seconds()], op="max")
        return self._record_point(
            scores,
            epoch=epoch,
            examples_seen=self.progress.examples_seen + int(examples),
            train_time_s=self.progress.train_time_s + seconds,
        )

    def _record_point(
        self, scores: dict[str, float], *, epoch: float, examples_seen: int, train_time_s: float
    ) -> EvalPoint:
        point = EvalPoint(
            epoch=epoch,
            step=self.progress.step,
            examples_seen=examples_seen,
            train_time_s=train_time_s,
            eval_loss=scores["eval_loss"],
            scores={m: scores[score_column(m)] for m in METRIC_NAMES if score_column(m) in scores},
        )
        self.progress.eval_points.append(point)
        return point

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
            predictions.append(predict(out.logits, self.problem_type == "regression"))
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

    def measure_inference(self, callbacks: LoopCallbacks | None = None) -> dict[str, Any]:
        """Time prediction with the trained model (``inference`` settings): throughput at the
        eval batch, every worker over its shard of the validation split (examples summed, the
        slowest worker's time), then latency at each batch size on rank 0 alone (the other
        ranks wait at the next collective). The ``EpochRow`` fields it fills, for
        ``epoch_row``. A collective: every rank must call it."""
        start = time.perf_counter()
        settings, rank, world = self.trial.inference, *rank_and_world()
        callbacks = callbacks or LoopCallbacks()
        model = _unwrap(self.model)  # no DDP: its forward may broadcast buffers
        options = {
            "device": self.device,
            "autocast": self.autocast,
            "regression": self.problem_type == "regression",
            "warmup_steps": settings.warmup_steps,
            "on_batch": callbacks.on_eval_batch,
        }
        cap = settings.max_examples and math.ceil(settings.max_examples / world)
        model.eval()
        # Iterating a DataLoader draws from the global RNG: leave it as training left it.
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            batches = _first_examples(self.eval_loader, cap)
            all_reduce([0.0])  # start together: the pass is timed by its slowest worker
            examples, tokens, seconds = time_throughput(model, batches, **options)
            examples, tokens = all_reduce([examples, tokens])
            (seconds,) = all_reduce([seconds], op="max")
            latency = []
            if rank == 0:
                for size in settings.batch_sizes:
                    timed = time_latency(model, self._latency_batches(size), **options)
                    latency.append(
                        Latency(
                            batch_size=size,
                            p50_ms=percentile(timed, 50),
                            p95_ms=percentile(timed, 95),
                            p99_ms=percentile(timed, 99),
                            batches=len(timed),
                        )
                    )
        model.train()
        return {
            "inference_examples_per_s": examples / seconds if seconds > 0 else None,
            "inference_tokens_per_s": tokens / seconds if seconds > 0 else None,
            "inference_examples": int(examples),
            "inference_batch_size": self.eval_loader.batch_size,
            "latency": tuple(latency),
            "inference_time_s": time.perf_counter() - start,
        }

    def _latency_batches(self, size: int) -> list[dict[str, torch.Tensor]]:
        """Batches of ``size`` from this worker's validation shard, in a fixed shuffled order
        (the shard is sorted by length), cycling through it when the shard is smaller."""
        dataset, collate = self.eval_loader.dataset, self.eval_loader.collate_fn
        count = self.trial.inference.latency_batches(size, len(dataset))
        order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(0)).tolist()
        picks = [order[i % len(order)] for i in range(count * size)]
        return [
            collate([dataset[j] for j in picks[k : k + size]]) for k in range(0, len(picks), size)
        ]

    def _utilisation(self) -> dict[str, Any]:
        """Model FLOP/s per worker and MFU over training so far, peak memories (largest over
        workers). A collective: every rank must call it."""
        progress, cuda = self.progress, self.device.type == "cuda"
        world = rank_and_world()[1]
        gpu = torch.cuda.max_memory_allocated(self.device) if cuda else 0
        gpu, rss = all_reduce([gpu, peak_host_rss_bytes()], op="max")
        figures: dict[str, Any] = {
            "device": torch.cuda.get_device_name(self.device) if cuda else "cpu",
            "peak_gpu_memory_gib": gpu / _GIB if cuda else None,
            "peak_host_rss_gib": rss / _GIB,
        }
        if progress.train_time_s <= 0 or progress.examples_seen <= 0:
            return figures
        config = _unwrap(self.model).config
        per_token = training_flops_per_token(
            self.params_non_embedding,
            layers=config.num_hidden_layers,
            hidden=config.hidden_size,
            seq_len=progress.train_tokens / progress.examples_seen,
        )
        flops = per_token * progress.train_tokens / progress.train_time_s / world
        figures["model_flops_per_s"] = flops
        if cuda:
            mode = "tf32" if self.trial.train.precision is Precision.fp32 else "bf16"
            peak = self.trial.compute.peak_tflops or peak_tflops(figures["device"], mode)
            figures["peak_tflops"] = peak
            figures["mfu"] = flops / (peak * 1e12) if peak else None
        return figures

    def _convergence(self) -> dict[str, Any]:
        """When the evaluations first reached ``train.convergence_fraction`` of the final
        metric and ``train.target``: the final row's convergence fields (empty: never)."""
        points, train = self.progress.eval_points, self.trial.train
        metric = self.trial.primary_metric()
        final = points[-1].score(metric)
        figures: dict[str, Any] = {}
        if final is not None and not math.isnan(final):
            level = converged_level(final, train.convergence_fraction)
            figures["converged_level"] = level
            figures |= _reached(first_reaching(points, metric, level), "converge")
        if train.target is not None:
            reached = first_reaching(points, metric, train.target)
            figures |= {"target": train.target, "target_reached": reached is not None}
            figures |= _reached(reached, "target")
        return figures

    def epoch_row(
        self, scores: dict[str, float], inference: dict[str, Any] | None = None
    ) -> EpochRow:
        """The row of the epoch just trained, with its ``evaluate`` scores (recorded as the
        epoch's last evaluation point) and, after the final epoch, ``measure_inference``'s
        figures and the convergence figures. A collective: every rank must call it."""
        compute, progress = self.trial.compute, self.progress
        self._record_point(
            scores,
            epoch=float(progress.epoch),
            examples_seen=progress.examples_seen,
            train_time_s=progress.train_time_s,
        )
        final = progress.epoch == self.trial.train.epochs
        return EpochRow(
            epoch=self.progress.epoch,
            **scores,
            **self.chance,
            **self._epoch,
            eval_points=tuple(p for p in progress.eval_points if p.epoch > progress.epoch - 1),
            **(self._convergence() if final else {}),
            **self._utilisation(),
            **(inference or {}),
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
            "progress": dataclasses.asdict(self.progress)
            | {"eval_points": [p.to_dict() for p in self.progress.eval_points]},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        _unwrap(self.model).load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        _set_rng_state(state["rng"][rank_and_world()[0]])
        progress = state["progress"]
        points = [EvalPoint.from_dict(p) for p in progress.get("eval_points", [])]
        self.progress = Progress(**progress | {"eval_points": points})
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


def _reached(point: EvalPoint | None, name: str) -> dict[str, Any]:
    """``steps_to_<name>``, ``examples_to_<name>``, ``time_to_<name>_s`` of the point that
    reached a level; none (empty columns) when no point did."""
    if point is None:
        return {}
    return {
        f"steps_to_{name}": point.step,
        f"examples_to_{name}": point.examples_seen,
        f"time_to_{name}_s": point.train_time_s,
    }


def _first_examples(loader: DataLoader, cap: int | None) -> list[dict[str, torch.Tensor]]:
    """The loader's batches, up to ``cap`` examples (the last batch cut to fit), collated on
    the host ahead of timing."""
    batches, count = [], 0
    for batch in loader:
        if cap is not None and count + len(batch["input_ids"]) > cap:
            batch = {k: v[: cap - count] for k, v in batch.items()}
        if len(batch["input_ids"]):
            batches.append(batch)
            count += len(batch["input_ids"])
        if cap is not None and count >= cap:
            break
    return batches


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
