"""The row a trial reports after every epoch, and every table column derived from it.

``EpochRow`` is the central data of a sweep: the worker loop builds one per epoch, the trial
driver reports it to Ray Train (and Tune), the sweep appends it to ``history.jsonl`` and carries
the last one into ``results.csv``, the W&B tracker logs it, and the analysis reads it back. Each
field says once what it means, whether it is a per-epoch figure (history only) or describes the
trial so far (carried into the results table), and its W&B history key, if it has one. A new
measure is one new field here.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

__all__ = [
    "LATENCY_STATS",
    "METRIC_NAMES",
    "REQUIRED_RESULT_FIELDS",
    "RESULT_FIELDS",
    "EpochRow",
    "EvalPoint",
    "Latency",
    "chance_column",
    "latency_column",
    "parse_latency_column",
    "result_fields",
    "score_column",
]

# Every metric a trial can be scored with (trainables.metrics implements exactly these).
METRIC_NAMES = ("accuracy", "f1", "matthews_correlation", "pearson", "spearmanr")


def score_column(metric: str) -> str:
    """The row field of a metric's validation score: ``eval_accuracy``, or ``eval_loss``."""
    return f"eval_{metric}"


def chance_column(metric: str) -> str:
    """The row field of a metric's chance level: the best constant prediction's score."""
    return f"chance_{metric}"


@dataclass(frozen=True, kw_only=True)
class EvalPoint:
    """One evaluation of the whole validation split during training: where training stood
    (after how many optimizer steps, examples and training seconds) and what it scored.

    A trial evaluates at each epoch's end and, with ``train.eval_every_steps``, every that many
    optimizer steps; its learning curve and its convergence figures come from these points.
    """

    epoch: float  # epochs completed: fractional for a mid-epoch evaluation
    step: int  # optimizer steps completed
    examples_seen: int  # training examples so far, all workers
    train_time_s: float  # training seconds so far (slowest worker), evaluations excluded
    eval_loss: float
    scores: Mapping[str, float]  # metric name -> score, e.g. {"accuracy": 0.71, "f1": 0.80}

    def score(self, metric: str) -> float | None:
        """The point's value of ``metric`` ("loss" for the eval loss), None if not scored."""
        return self.eval_loss if metric == "loss" else self.scores.get(metric)

    def to_dict(self) -> dict[str, Any]:
        """Flat, as in history.jsonl: ``{"epoch": 1.5, "step": 40, ..., "eval_accuracy": 0.7}``."""
        record = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "scores"}
        return record | {score_column(name): value for name, value in self.scores.items()}

    @classmethod
    def from_dict(cls, record: Mapping[str, Any]) -> EvalPoint:
        scores = {m: record[score_column(m)] for m in METRIC_NAMES if score_column(m) in record}
        names = [f.name for f in fields(cls) if f.name != "scores"]
        return cls(**{name: record[name] for name in names}, scores=scores)


# What each latency is summarised by, in its column names: latency_p95_ms_b32 is the 95th
# percentile at batch size 32; latency_batches_b32 how many timed batches it was taken over.
LATENCY_STATS = ("p50_ms", "p95_ms", "p99_ms", "batches")
_LATENCY_COLUMN = re.compile(r"latency_(" + "|".join(LATENCY_STATS) + r")_b(\d+)")


def latency_column(stat: str, batch_size: int) -> str:
    """The results column of one latency figure: ``latency_p95_ms_b1``."""
    if stat not in LATENCY_STATS:
        raise ValueError(f"latency statistic {stat!r}; valid: {', '.join(LATENCY_STATS)}")
    return f"latency_{stat}_b{batch_size}"


def parse_latency_column(name: str) -> tuple[str, int] | None:
    """``latency_p95_ms_b32`` -> ("p95_ms", 32); None for any other column."""
    match = _LATENCY_COLUMN.fullmatch(name)
    return (match[1], int(match[2])) if match else None


@dataclass(frozen=True, kw_only=True)
class Latency:
    """Prediction latency at one batch size, timed on one worker (rank 0) after warm-up: from
    a tokenised batch on the host to its predicted labels back on the host."""

    batch_size: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    batches: int  # timed batches the percentiles are taken over

    def columns(self) -> dict[str, Any]:
        return {latency_column(s, self.batch_size): getattr(self, s) for s in LATENCY_STATS}


class _Latencies:
    """How a tuple of ``Latency`` lies in a flat record: four columns per batch size."""

    @staticmethod
    def flatten(name: str, value: tuple[Latency, ...]) -> dict[str, Any]:
        return {k: v for latency in value for k, v in latency.columns().items()}

    @staticmethod
    def parse(name: str, record: Mapping[str, Any]) -> Any:
        found: dict[int, dict[str, Any]] = {}
        for key, value in record.items():
            parsed = parse_latency_column(key)
            if parsed and value is not None:
                found.setdefault(parsed[1], {})[parsed[0]] = value
        complete = {b: stats for b, stats in found.items() if set(stats) == set(LATENCY_STATS)}
        if not complete:
            return dataclasses.MISSING
        return tuple(Latency(batch_size=b, **complete[b]) for b in sorted(complete))


class _Points:
    """How a tuple of ``EvalPoint`` lies in a flat record: a sequence of flat dicts (a tuple,
    which JSON writes as a list and Tune's TensorBoard logger leaves alone: it would try a list
    as a histogram, and warn)."""

    @staticmethod
    def flatten(name: str, value: tuple[EvalPoint, ...]) -> dict[str, Any]:
        return {name: tuple(point.to_dict() for point in value)} if value else {}

    @staticmethod
    def parse(name: str, record: Mapping[str, Any]) -> Any:
        if not record.get(name):
            return dataclasses.MISSING
        return tuple(EvalPoint.from_dict(point) for point in record[name])


def _column(
    doc: str,
    *,
    epoch_only: bool = False,
    wandb: str | None = None,
    summary: str | None = None,
    codec: type | None = None,
    default: Any = dataclasses.MISSING,
) -> Any:
    """A field with what it means, whether it stays out of the results table (a figure of one
    epoch), its W&B history key, the section of the trial's W&B summary it also goes to, and,
    for a field that is not one plain value, how it is flattened into columns (``codec``)."""
    metadata = {"doc": doc, "epoch_only": epoch_only, "wandb": wandb, "summary": summary}
    return field(default=default, metadata=metadata | {"codec": codec})


@dataclass(frozen=True, kw_only=True)
class EpochRow:
    """One epoch of one trial, aggregated over all its workers (rank 0 reports it)."""

    epoch: int = _column("epochs completed", epoch_only=True, wandb="epoch")
    train_loss: float = _column("mean training loss of the epoch", wandb="epoch/train_loss")
    eval_loss: float = _column("mean validation loss", wandb="eval/loss")
    eval_accuracy: float | None = _column(
        "validation accuracy", wandb="eval/accuracy", default=None
    )
    eval_f1: float | None = _column("validation F1 of class 1", wandb="eval/f1", default=None)
    eval_matthews_correlation: float | None = _column(
        "validation Matthews correlation", wandb="eval/matthews_correlation", default=None
    )
    eval_pearson: float | None = _column(
        "validation Pearson correlation", wandb="eval/pearson", default=None
    )
    eval_spearmanr: float | None = _column(
        "validation Spearman correlation", wandb="eval/spearmanr", default=None
    )
    chance_accuracy: float | None = _column(
        "accuracy of the best constant prediction on the validation labels", default=None
    )
    chance_f1: float | None = _column(
        "F1 of the best constant prediction on the validation labels", default=None
    )
    chance_matthews_correlation: float | None = _column(
        "Matthews correlation of a constant prediction (0)", default=None
    )
    chance_pearson: float | None = _column("Pearson correlation of a constant (0)", default=None)
    chance_spearmanr: float | None = _column("Spearman correlation of a constant (0)", default=None)
    eval_examples: int | None = _column(
        "validation examples scored, all workers (the whole split)", default=None
    )
    examples_per_s: float = _column(
        "training examples per second of the epoch, all workers", wandb="epoch/examples_per_s"
    )
    tokens_per_s: float = _column(
        "non-padding training tokens per second of the epoch, all workers",
        wandb="epoch/tokens_per_s",
    )
    epoch_time_s: float = _column(
        "training time of the epoch (slowest worker)", epoch_only=True, wandb="epoch/time_s"
    )
    eval_time_s: float = _column(
        "time of the epoch's evaluation", epoch_only=True, wandb="eval/time_s"
    )
    train_time_s: float = _column("training time of all epochs so far", wandb="train_time_s")
    examples_seen: int = _column("training examples so far, all workers", wandb="examples_seen")
    train_tokens: int = _column("non-padding training tokens so far, all workers")
    lr: float = _column("learning rate after the epoch", epoch_only=True, wandb="epoch/lr")
    worker_pid: int = _column("process id of rank 0's worker")
    params_total: int = _column("model parameters")
    params_non_embedding: int = _column(
        "parameters outside the token, position and segment embeddings (Kaplan et al. 2020)"
    )
    train_examples: int = _column("examples in the training subset")
    global_batch: int = _column("examples per optimizer step, all workers")
    per_worker_batch: int = _column("examples per optimizer step on one worker")
    accumulation_steps: int = _column("micro-batches per optimizer step")
    restarts: int = _column("times the workers restarted from a checkpoint")
    oom_retries: int = _column(
        "times the trial ran again with half the micro-batch after running out of memory",
        default=0,
    )
    worker_node_ids: str = _column("Ray node of each worker, in rank order", default="")
    checkpoint_path: str | None = _column(
        "where this epoch's checkpoint was persisted (added by Ray Train)", default=None
    )
    # Convergence: every evaluation of the epoch (each train.eval_every_steps optimizer steps,
    # and the epoch's end); the trial's learning curve is these points over all its rows.
    eval_points: tuple[EvalPoint, ...] = _column(
        "the epoch's evaluations, in order, the last at its end (history only: a list of "
        "{epoch, step, examples_seen, train_time_s, eval_loss, eval_<metric>})",
        epoch_only=True,
        codec=_Points,
        default=(),
    )
    # The rest of the convergence figures are filled in the final epoch's row only.
    converged_level: float | None = _column(
        "the primary metric counted as converged: train.convergence_fraction of the final "
        "metric (for a negative final metric: that far below it)",
        summary="convergence",
        default=None,
    )
    steps_to_converge: int | None = _column(
        "optimizer steps at the first evaluation that reached converged_level",
        summary="convergence",
        default=None,
    )
    examples_to_converge: int | None = _column(
        "training examples (all workers) at the first evaluation that reached converged_level",
        summary="convergence",
        default=None,
    )
    time_to_converge_s: float | None = _column(
        "training seconds at the first evaluation that reached converged_level",
        summary="convergence",
        default=None,
    )
    target: float | None = _column(
        "train.target: a value of the primary metric to reach, when the spec gives one",
        summary="convergence",
        default=None,
    )
    target_reached: bool | None = _column(
        "whether any evaluation reached train.target (empty without a target)",
        summary="convergence",
        default=None,
    )
    steps_to_target: int | None = _column(
        "optimizer steps at the first evaluation that reached train.target (empty: never)",
        summary="convergence",
        default=None,
    )
    examples_to_target: int | None = _column(
        "training examples (all workers) at the first evaluation that reached train.target",
        summary="convergence",
        default=None,
    )
    time_to_target_s: float | None = _column(
        "training seconds at the first evaluation that reached train.target (empty: never)",
        summary="convergence",
        default=None,
    )
    # Utilisation, every epoch: over the training so far.
    device: str | None = _column(
        "the device rank 0 trained on: its CUDA name, or 'cpu'", summary="utilisation", default=None
    )
    model_flops_per_s: float | None = _column(
        "model FLOP/s per worker over training so far: (6 x non-embedding params + 12 x layers "
        "x hidden x mean tokens per example) x training tokens / training seconds / workers",
        wandb="epoch/model_flops_per_s",
        summary="utilisation",
        default=None,
    )
    peak_tflops: float | None = _column(
        "the device's dense peak TFLOP/s that MFU divides by (compute.peak_tflops, else the "
        "table in trainables/hardware.py; bf16 for bf16/fp16, tf32 for fp32); empty on CPU",
        summary="utilisation",
        default=None,
    )
    mfu: float | None = _column(
        "model FLOPs utilisation: model_flops_per_s / peak (0..1); empty on CPU or an unknown "
        "GPU without compute.peak_tflops",
        wandb="epoch/mfu",
        summary="utilisation",
        default=None,
    )
    peak_gpu_memory_gib: float | None = _column(
        "peak GPU memory allocated by torch (torch.cuda.max_memory_allocated) in GiB, the "
        "largest over workers; empty on CPU",
        summary="utilisation",
        default=None,
    )
    peak_host_rss_gib: float | None = _column(
        "peak resident memory of a worker process in GiB (getrusage), the largest over workers",
        summary="utilisation",
        default=None,
    )
    # Inference, in the final epoch's row only (inference.enabled): the trained model in eval
    # mode, without gradients, on the trial's own device and dtype.
    inference_examples_per_s: float | None = _column(
        "prediction throughput at the eval batch over the validation split (at most "
        "inference.max_examples): examples of all workers / the slowest worker's seconds",
        summary="inference",
        default=None,
    )
    inference_tokens_per_s: float | None = _column(
        "non-padding tokens per second of the same pass", summary="inference", default=None
    )
    inference_examples: int | None = _column(
        "validation examples in the throughput pass, all workers", summary="inference", default=None
    )
    inference_batch_size: int | None = _column(
        "the batch of the throughput pass (the eval batch, per worker)",
        summary="inference",
        default=None,
    )
    latency: tuple[Latency, ...] = _column(
        "prediction latency on rank 0 at each inference.batch_sizes: columns "
        "latency_p50_ms_b<B>, latency_p95_ms_b<B>, latency_p99_ms_b<B> (milliseconds) and "
        "latency_batches_b<B> (timed batches)",
        summary="inference",
        codec=_Latencies,
        default=(),
    )
    inference_time_s: float | None = _column(
        "seconds the inference measurement took on rank 0 (warm-up, throughput, latency): its "
        "cost to the trial",
        summary="inference",
        default=None,
    )

    def columns(self, *names: str) -> dict[str, Any]:
        """The flat record of the fields ``names`` (all when none), absent values left out (a
        task scored without F1 has no ``eval_f1``); a latency is four columns per batch size."""
        record: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if (names and f.name not in names) or value is None:
                continue
            codec = f.metadata["codec"]
            record |= codec.flatten(f.name, value) if codec else {f.name: value}
        return record

    def to_dict(self) -> dict[str, Any]:
        """The flat record written to history.jsonl and reported to Ray."""
        return self.columns()

    def results(self) -> dict[str, Any]:
        """The trial-level part of the record: what results.csv carries from the last row."""
        return self.columns(*RESULT_FIELDS)

    @classmethod
    def from_dict(cls, record: Mapping[str, Any]) -> EpochRow:
        """The row in a record that may hold more (Tune's own result keys): those are dropped;
        an older record lacking a newer optional field gets its default."""
        values = {}
        for f in fields(cls):
            codec = f.metadata["codec"]
            if codec:
                value = codec.parse(f.name, record)
                if value is not dataclasses.MISSING:
                    values[f.name] = value
            elif f.name in record:
                values[f.name] = record[f.name]
        return cls(**values)

    def score(self, metric: str) -> float | None:
        return getattr(self, score_column(metric))


# The fields that describe a trial so far (the results table carries the last row's values).
RESULT_FIELDS: tuple[str, ...] = tuple(
    f.name for f in fields(EpochRow) if not f.metadata["epoch_only"]
)
# Of those, the ones every version of every trial reports (no default): a table of trials has
# these columns, and code reading older experiment directories may rely on them.
REQUIRED_RESULT_FIELDS: tuple[str, ...] = tuple(
    f.name
    for f in fields(EpochRow)
    if not f.metadata["epoch_only"] and f.default is dataclasses.MISSING
)


_COLUMN_FIELDS = {f.name for f in fields(EpochRow) if not f.metadata["codec"]}


def result_fields(*names: str) -> tuple[str, ...]:
    """``names``, each checked to be a results-table column of ``EpochRow``: code that reads
    particular columns names them through this, so a renamed field fails at import. (A field
    flattened into several columns, such as ``latency``, is read through its own helpers.)"""
    unknown = [name for name in names if name not in RESULT_FIELDS or name not in _COLUMN_FIELDS]
    if unknown:
        raise ValueError(f"not results fields of EpochRow: {unknown}")
    return names
