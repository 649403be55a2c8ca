"""The per-worker fine-tuning loop: data shard -> model -> AdamW -> epochs -> eval -> report.

``fit`` runs the same on one process (a test, a REPL) and on each Ray Train worker, where
torch.distributed is already initialised and the model is wrapped in DDP. Every reported number
is aggregated across workers, so rank 0's report (the one Tune sees) speaks for the whole trial.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler
from transformers import DataCollatorWithPadding, get_linear_schedule_with_warmup

from orchestrator.config import Precision, TrialConfig
from trainables.data import (
    TaskData,
    default_cache_dir,
    load_task_data,
    nested_subset,
    tokenize_cached,
)
from trainables.metrics import build_metrics
from trainables.models import build_model, build_tokenizer, count_parameters
from trainables.sampling import LengthGroupedSampler, longest_first, sequence_lengths

# Gets each epoch's row, and the training state to checkpoint with it when one is due.
Report = Callable[[dict[str, Any], dict[str, Any] | None], None]
# Called after every optimizer step with the running counters that step-level logging needs
# (see the call in ``fit``): totals before this epoch, and this rank's sums within it.
StepHook = Callable[[dict[str, float]], None]


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _all_reduce(values: list[float], op: str = "sum") -> list[float]:
    """Sum (or max) a few numbers over all workers; identity on a single process."""
    if _world()[1] == 1:
        return values
    tensor = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM)
    return tensor.tolist()


def _all_gather(items: list[Any]) -> list[Any]:
    if _world()[1] == 1:
        return items
    gathered: list[list[Any]] = [[] for _ in range(_world()[1])]
    dist.all_gather_object(gathered, items)
    return [item for part in gathered for item in part]


def build_dataloaders(
    trial: TrialConfig, task: TaskData, tokenizer, cache_dir: Path, device: torch.device
) -> tuple[DataLoader, DataLoader]:
    """Train loader over this worker's shard of the nested subset; eval loader over its share
    of the whole validation split (disjoint shards, no padding duplicates, so metrics are exact)."""
    rank, world = _world()
    train_set, validation_set = tokenize_cached(task, tokenizer, trial.data.max_length, cache_dir)
    train_set = nested_subset(train_set, trial.data, trial.train.seed)
    # Sorted by length, so eval batches pad little; the scores do not depend on the order.
    validation_set = longest_first(validation_set.select(range(rank, len(validation_set), world)))
    # Dynamic padding: each batch is padded to its own longest sequence, never to max_length.
    collate = DataCollatorWithPadding(
        tokenizer, pad_to_multiple_of=8 if device.type == "cuda" else None
    )
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
    pin = device.type == "cuda"
    train_loader = DataLoader(
        train_set,
        batch_size=trial.compute.micro_batch(),
        sampler=sampler,
        collate_fn=collate,
        pin_memory=pin,
    )
    eval_loader = DataLoader(
        validation_set,
        batch_size=max(64, trial.compute.micro_batch()),
        collate_fn=collate,
        pin_memory=pin,
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


@torch.no_grad()
def evaluate(
    model, loader, device, autocast, metrics, problem_type: str, on_batch=None
) -> dict[str, float]:
    model.eval()
    loss_sum, count, predictions, references = 0.0, 0, [], []
    for batch in loader:
        if on_batch:
            on_batch()
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        with autocast():
            out = model(**batch)
        n = batch["labels"].shape[0]
        loss_sum, count = loss_sum + out.loss.item() * n, count + n
        logits = out.logits.float()
        preds = logits.squeeze(-1) if problem_type == "regression" else logits.argmax(-1)
        predictions += preds.tolist()
        references += batch["labels"].tolist()
    model.train()
    loss_sum, count = _all_reduce([loss_sum, count])
    scores = metrics.compute(
        predictions=_all_gather(predictions), references=_all_gather(references)
    )
    return {"eval_loss": loss_sum / count, **{f"eval_{k}": float(v) for k, v in scores.items()}}


def fit(
    trial: TrialConfig,
    *,
    report: Report | None = None,
    device: torch.device | None = None,
    cache_dir: Path | None = None,
    on_step: StepHook | None = None,
    on_eval_batch: Callable[[], None] | None = None,
    resume_from: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Fine-tune and evaluate once per epoch; returns the last epoch's row.

    ``report(row, state)`` gets each epoch's row, with the full training state (see
    ``training_state``) every ``train.checkpoint_every_epochs`` epochs. ``resume_from`` is such
    a state: training continues after its epoch as if it had never stopped. ``on_step`` gets
    the running counters after every optimizer step (W&B step-level logging);
    ``on_eval_batch`` is called before each evaluation batch (the progress watchdog).
    """
    world = _world()[1]
    cache_dir = cache_dir or default_cache_dir()
    device = device or torch.device("cuda" if trial.compute.use_gpu else "cpu")
    if device.type == "cpu":
        # One thread per reserved CPU: oversubscribed workers run several times slower.
        torch.set_num_threads(max(1, int(trial.compute.cpus_per_worker)))
    torch.manual_seed(trial.train.seed)

    task = load_task_data(trial.data)
    tokenizer = build_tokenizer(trial.model, task, cache_dir)
    train_loader, eval_loader = build_dataloaders(trial, task, tokenizer, cache_dir, device)
    model = build_model(
        trial.model,
        num_labels=task.num_labels,
        problem_type=task.problem_type,
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
    ).to(device)
    params_total, params_non_embedding = count_parameters(model)
    if world > 1:
        model = DistributedDataParallel(
            model, device_ids=[device] if device.type == "cuda" else None
        )

    accumulation = trial.compute.accumulation_steps()
    steps_per_epoch = math.ceil(len(train_loader) / accumulation)
    optimizer, scheduler = build_optimizer(
        model, trial, steps_per_epoch * trial.train.epochs, device
    )
    dtype = {Precision.bf16: torch.bfloat16, Precision.fp16: torch.float16}.get(
        trial.train.precision
    )

    def autocast():
        return torch.autocast("cuda", dtype=dtype) if dtype else nullcontext()

    scaler = torch.amp.GradScaler(enabled=trial.train.precision is Precision.fp16)
    metrics = build_metrics(task.metric_names)
    static = {
        "params_total": params_total,
        "params_non_embedding": params_non_embedding,
        "train_examples": len(train_loader.dataset),
        "global_batch": trial.compute.global_batch(),
        "per_worker_batch": trial.compute.per_worker_batch(),
        "accumulation_steps": accumulation,
    }

    done = {"epoch": 0, "train_time": 0.0, "examples_seen": 0, "train_tokens": 0, "restarts": 0}
    if resume_from:
        _unwrap(model).load_state_dict(resume_from["model"])
        optimizer.load_state_dict(resume_from["optimizer"])
        scheduler.load_state_dict(resume_from["scheduler"])
        scaler.load_state_dict(resume_from["scaler"])
        torch.set_rng_state(resume_from["rng"])
        done = {**resume_from["progress"], "restarts": resume_from["progress"]["restarts"] + 1}
    train_time, examples_seen, train_tokens = (
        done["train_time"],
        done["examples_seen"],
        done["train_tokens"],
    )
    static["restarts"] = done["restarts"]
    row: dict[str, Any] = {}
    model.train()
    for epoch in range(done["epoch"] + 1, trial.train.epochs + 1):
        train_loader.sampler.set_epoch(epoch)
        start, loss_sum, examples, tokens = time.perf_counter(), 0.0, 0, 0
        for i, batch in enumerate(train_loader):
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            last_micro = (i + 1) % accumulation == 0 or i + 1 == len(train_loader)
            # Skip the gradient all-reduce on all but the last micro-batch of a step.
            sync = nullcontext() if last_micro or world == 1 else model.no_sync()
            with sync, autocast():
                loss = model(**batch).loss
            scaler.scale(loss / accumulation).backward()
            n = batch["labels"].shape[0]
            loss_sum, examples = loss_sum + loss.item() * n, examples + n
            tokens += int(batch["attention_mask"].sum())
            if last_micro:
                if trial.train.max_grad_norm:
                    scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_(model.parameters(), trial.train.max_grad_norm)
                scaler.step(optimizer)
                scaler.update()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                if on_step:
                    on_step(
                        {
                            "step": scheduler.last_epoch,  # all epochs, restored on a restart
                            "epoch": epoch,
                            "examples_seen": examples_seen,  # all workers, earlier epochs
                            "train_time_s": train_time,
                            "loss_sum": loss_sum,  # this rank, this epoch so far
                            "examples": examples,
                            "tokens": tokens,
                            "seconds": time.perf_counter() - start,
                            "lr": scheduler.get_last_lr()[0],
                        }
                    )
        elapsed = time.perf_counter() - start
        loss_sum, examples, tokens = _all_reduce([loss_sum, examples, tokens])
        (elapsed,) = _all_reduce([elapsed], op="max")
        train_time, examples_seen, train_tokens = (
            train_time + elapsed,
            examples_seen + examples,
            train_tokens + tokens,
        )
        eval_start = time.perf_counter()
        scores = evaluate(
            model, eval_loader, device, autocast, metrics, task.problem_type, on_eval_batch
        )
        row = {
            "epoch": epoch,
            "train_loss": loss_sum / examples,
            **scores,
            "examples_per_s": examples / elapsed,
            "tokens_per_s": tokens / elapsed,
            "epoch_time_s": elapsed,
            "eval_time_s": time.perf_counter() - eval_start,
            "train_time_s": train_time,
            "examples_seen": int(examples_seen),
            "train_tokens": int(train_tokens),
            "lr": scheduler.get_last_lr()[0],
            "worker_pid": os.getpid(),
            **static,
        }
        every = trial.train.checkpoint_every_epochs
        state = None
        if report and every and (epoch % every == 0 or epoch == trial.train.epochs):
            progress = {
                "epoch": epoch,
                "train_time": train_time,
                "examples_seen": examples_seen,
                "train_tokens": train_tokens,
                "restarts": done["restarts"],
            }
            state = training_state(model, optimizer, scheduler, scaler, progress)
        if report:
            report(row, state)
    return row


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if isinstance(model, DistributedDataParallel) else model


def training_state(model, optimizer, scheduler, scaler, progress: dict) -> dict[str, Any]:
    """Everything needed to continue after an epoch: weights, optimizer and schedule, loss
    scaler, RNG (dropout), counters. The sampler needs no state: each epoch's order is a
    function of (seed, epoch), and checkpoints fall on epoch boundaries. The tensors are the
    live ones: serialise the state before training goes on."""
    return {
        "model": _unwrap(model).state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict(),
        "rng": torch.get_rng_state(),
        "progress": progress,
    }
