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
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

__all__ = [
    "METRIC_NAMES",
    "REQUIRED_RESULT_FIELDS",
    "RESULT_FIELDS",
    "EpochRow",
    "chance_column",
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


def _column(
    doc: str,
    *,
    epoch_only: bool = False,
    wandb: str | None = None,
    default: Any = dataclasses.MISSING,
) -> Any:
    """A field with what it means, whether it stays out of the results table (a figure of one
    epoch), and its W&B history key."""
    metadata = {"doc": doc, "epoch_only": epoch_only, "wandb": wandb}
    return field(default=default, metadata=metadata)


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

    def to_dict(self) -> dict[str, Any]:
        """The flat record written to history.jsonl and reported to Ray: absent values left out
        (a task scored without F1 has no ``eval_f1``)."""
        return {f.name: v for f in fields(self) if (v := getattr(self, f.name)) is not None}

    @classmethod
    def from_dict(cls, record: Mapping[str, Any]) -> EpochRow:
        """The row in a record that may hold more (Tune's own result keys): those are dropped;
        an older record lacking a newer optional field gets its default."""
        return cls(**{f.name: record[f.name] for f in fields(cls) if f.name in record})

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


def result_fields(*names: str) -> tuple[str, ...]:
    """``names``, each checked to be a results-table field of ``EpochRow``: code that reads
    particular columns names them through this, so a renamed field fails at import."""
    unknown = [name for name in names if name not in RESULT_FIELDS]
    if unknown:
        raise ValueError(f"not results fields of EpochRow: {unknown}")
    return names
