"""Typed configuration of one trial: model, data, compute and training, composed into TrialConfig.

Pure Python (pydantic only): the orchestrator validates search-space files into these objects,
and the trainables rebuild them from the plain dict a Tune trial receives. Derived numbers
(per-worker batch, accumulation steps) are methods, never stored, so what is logged is what ran.
GLUE_FILES is the one table of what each GLUE task is: its files, label count and metrics.
"""

from __future__ import annotations

import math
import os
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "BERT_LADDER",
    "GLUE_FILES",
    "GLUE_TASKS",
    "METRIC_RANGES",
    "BatchScaling",
    "ComputeConfig",
    "DataConfig",
    "GlueFiles",
    "InferenceConfig",
    "LadderEntry",
    "ModelConfig",
    "Precision",
    "TrainConfig",
    "TrialConfig",
    "describe_resources",
]


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LadderEntry(_Frozen):
    """One rung of the BERT size ladder (Turc et al. 2019 "Well-Read Students" checkpoints)."""

    hub_id: str
    num_layers: int
    hidden_size: int
    num_heads: int


BERT_LADDER: dict[str, LadderEntry] = {
    name: LadderEntry(hub_id=hub_id, num_layers=layers, hidden_size=hidden, num_heads=heads)
    for name, hub_id, layers, hidden, heads in [
        ("bert-tiny", "google/bert_uncased_L-2_H-128_A-2", 2, 128, 2),
        ("bert-mini", "google/bert_uncased_L-4_H-256_A-4", 4, 256, 4),
        ("bert-small", "google/bert_uncased_L-4_H-512_A-8", 4, 512, 8),
        ("bert-medium", "google/bert_uncased_L-8_H-512_A-8", 8, 512, 8),
        ("bert-base", "google/bert_uncased_L-12_H-768_A-12", 12, 768, 12),
        ("bert-large", "google-bert/bert-large-uncased", 24, 1024, 16),
    ]
}


class GlueFiles(_Frozen):
    """A GLUE task: where it lives in the standard ``glue_data`` layout, its label count, and the
    metrics it is scored with (the first one ranks trials: the task's customary headline)."""

    directory: str
    validation_file: str
    has_header: bool
    num_labels: int
    train_size: int  # official row count, for planning when the data comes from the hub
    metrics: tuple[str, ...]


_PAIR_METRICS = ("f1", "accuracy")  # MRPC and QQP: F1 ranks, as in the GLUE leaderboard
GLUE_FILES: dict[str, GlueFiles] = {
    task: GlueFiles(
        directory=directory,
        validation_file=validation_file,
        has_header=task != "cola",
        num_labels=num_labels,
        train_size=train_size,
        metrics=metrics,
    )
    for task, directory, validation_file, num_labels, train_size, metrics in [
        ("cola", "CoLA", "dev.tsv", 2, 8551, ("matthews_correlation", "accuracy")),
        ("sst2", "SST-2", "dev.tsv", 2, 67349, ("accuracy",)),
        ("mrpc", "MRPC", "dev.tsv", 2, 3668, _PAIR_METRICS),
        ("stsb", "STS-B", "dev.tsv", 1, 5749, ("pearson", "spearmanr")),
        ("qqp", "QQP", "dev.tsv", 2, 363846, _PAIR_METRICS),
        ("mnli", "MNLI", "dev_matched.tsv", 3, 392702, ("accuracy",)),
        ("qnli", "QNLI", "dev.tsv", 2, 104743, ("accuracy",)),
        ("rte", "RTE", "dev.tsv", 2, 2490, ("accuracy",)),
        ("wnli", "WNLI", "dev.tsv", 2, 635, ("accuracy",)),
    ]
}
GLUE_TASKS = tuple(GLUE_FILES)


class ModelConfig(_Frozen):
    """Which encoder to fine-tune.

    ``name`` is a ladder name (``bert-tiny`` .. ``bert-large``), a hub id, or a local directory.
    ``tokenizer``: ``auto`` uses the model's own tokenizer (for a ``from_scratch`` model that
    cannot load one, a WordPiece tokenizer is trained on the task's training text);
    ``wordpiece`` always trains one; anything else is a hub id or directory to load.
    ``num_layers``: a pretrained checkpoint's first k layers, or a from-scratch model's depth.
    """

    name: str = "bert-tiny"
    from_scratch: bool = False
    num_layers: Annotated[int, Field(ge=1)] | None = None
    tokenizer: str = "auto"
    wordpiece_vocab_size: Annotated[int, Field(ge=100)] = 8192

    @property
    def ladder(self) -> LadderEntry | None:
        return BERT_LADDER.get(self.name)

    @property
    def source(self) -> str:
        """The hub id or local path that weights, config and tokenizer are loaded from."""
        return self.ladder.hub_id if self.ladder else self.name

    @model_validator(mode="after")
    def _check(self) -> ModelConfig:
        # A pretrained checkpoint can only be cut down; a model built from scratch takes the
        # rung's width and heads, at any depth.
        too_deep = self.ladder and self.num_layers and self.num_layers > self.ladder.num_layers
        if too_deep and not self.from_scratch:
            raise ValueError(
                f"num_layers={self.num_layers} exceeds the {self.ladder.num_layers} layers "
                f"of {self.name} (deeper works with from_scratch: true)"
            )
        return self


class DataConfig(_Frozen):
    """Where examples come from, and which nested fraction of the training split a trial uses.

    source ``glue``: ``task`` from GLUE_TASKS, read from ``glue_dir`` (standard ``glue_data``
    layout; defaults to $GLUE_DIR) or, when neither is set, from the hub.
    source ``files``: ``train_file`` / ``validation_file`` (csv, tsv, jsonl, parquet) with
    ``text_columns`` (one or two) and ``label_column``; ``problem_type`` says whether labels
    are classes (strings or ints, mapped to ids) or real numbers.
    source ``synthetic``: a built-in sentence-pair task generated offline from ``synthetic_seed``.
    """

    source: Literal["glue", "files", "synthetic"] = "synthetic"
    task: str | None = None
    glue_dir: str | None = Field(default_factory=lambda: os.environ.get("GLUE_DIR") or None)
    train_file: str | None = None
    validation_file: str | None = None
    text_columns: list[str] = Field(default_factory=list)
    label_column: str = "label"
    problem_type: Literal["classification", "regression"] = "classification"
    synthetic_train_size: Annotated[int, Field(ge=10)] = 4000
    synthetic_validation_size: Annotated[int, Field(ge=10)] = 1000
    synthetic_seed: int = 0
    train_fraction: Annotated[float, Field(gt=0, le=1)] = 1.0
    max_length: Annotated[int, Field(ge=8, le=8192)] = 128

    @model_validator(mode="after")
    def _check(self) -> DataConfig:
        if self.source == "glue":
            if self.task not in GLUE_TASKS:
                raise ValueError(
                    f"task {self.task!r} is not a GLUE task; valid: {', '.join(GLUE_TASKS)}"
                )
        elif self.source == "files":
            if not (self.train_file and self.validation_file):
                raise ValueError("source 'files' needs train_file and validation_file")
            if len(self.text_columns) not in (1, 2):
                raise ValueError("source 'files' needs text_columns: one or two column names")
        return self

    def source_key(self) -> str:
        """What identifies the examples themselves: every setting but the subset fraction and
        the tokenised length, so trials that read the same data share one load."""
        return self.model_dump_json(exclude={"train_fraction", "max_length"})

    def subset_size(self, full_size: int) -> int:
        """Training examples a trial uses: the first ``train_fraction`` of a seeded permutation."""
        return max(1, round(self.train_fraction * full_size))


class BatchScaling(StrEnum):
    """How the batch follows the worker count.

    strong: the global batch is fixed; each worker gets global / workers (same optimisation,
    less time per epoch). weak: the per-worker batch is fixed; the global batch grows.
    """

    strong = "strong"
    weak = "weak"


class ComputeConfig(_Frozen):
    """How many Ray Train workers a trial uses, what each reserves, and the batch arithmetic."""

    num_workers: Annotated[int, Field(ge=1)] = 1
    use_gpu: bool = False
    cpus_per_worker: Annotated[float, Field(gt=0)] = 1
    gpus_per_worker: Annotated[float, Field(ge=0)] = 1
    resources_per_worker: dict[str, float] = Field(default_factory=dict)
    batch_scaling: BatchScaling = BatchScaling.strong
    global_batch_size: Annotated[int, Field(ge=1)] | None = 32
    per_worker_batch_size: Annotated[int, Field(ge=1)] | None = None
    max_micro_batch_size: Annotated[int, Field(ge=1)] | None = None
    # How long a trial's workers may wait to be placed (an autoscaler adding nodes counts)
    # before the trial fails, saying what it asked for and what the cluster had free.
    placement_timeout_s: Annotated[float, Field(gt=0)] = 900
    # The GPU's dense peak TFLOP/s that MFU divides by, for a GPU the table in
    # trainables/hardware.py lacks or gets wrong (e.g. a power-capped card). GPU trials only.
    peak_tflops: Annotated[float, Field(gt=0)] | None = None

    @model_validator(mode="after")
    def _check(self) -> ComputeConfig:
        if self.batch_scaling is BatchScaling.strong:
            if self.global_batch_size is None:
                raise ValueError("batch_scaling 'strong' needs global_batch_size")
            if self.global_batch_size % self.num_workers:
                raise ValueError(
                    f"batch_scaling 'strong': global_batch_size {self.global_batch_size} does "
                    f"not divide by num_workers {self.num_workers}; use a multiple of "
                    f"{self.num_workers} or batch_scaling 'weak'"
                )
        elif self.per_worker_batch_size is None:
            raise ValueError("batch_scaling 'weak' needs per_worker_batch_size")
        if self.use_gpu and self.num_workers > 1 and self.gpus_per_worker < 1:
            # NCCL refuses two ranks on one device ("Duplicate GPU detected").
            raise ValueError(
                f"gpus_per_worker {self.gpus_per_worker:g} with {self.num_workers} workers would "
                "put two DDP ranks on one GPU, which NCCL refuses; use gpus_per_worker >= 1, "
                "or one worker"
            )
        micro = self.max_micro_batch_size
        if micro is not None and self.per_worker_batch() % micro:
            raise ValueError(
                f"per-worker batch {self.per_worker_batch()} does not divide by "
                f"max_micro_batch_size {micro}"
            )
        return self

    def per_worker_batch(self) -> int:
        if self.batch_scaling is BatchScaling.strong:
            return self.global_batch_size // self.num_workers
        return self.per_worker_batch_size

    def global_batch(self) -> int:
        return self.per_worker_batch() * self.num_workers

    def micro_batch(self) -> int:
        """Examples per forward pass on one worker (smaller than the batch when accumulating)."""
        return min(self.per_worker_batch(), self.max_micro_batch_size or self.per_worker_batch())

    def accumulation_steps(self) -> int:
        return self.per_worker_batch() // self.micro_batch()

    def with_half_micro_batch(self) -> ComputeConfig | None:
        """The same batches in micro-batches half as large (the largest that divides the
        per-worker batch), or None when they are single examples already."""
        smaller = next(
            (m for m in range(self.micro_batch() // 2, 0, -1) if self.per_worker_batch() % m == 0),
            None,
        )
        return self.model_copy(update={"max_micro_batch_size": smaller}) if smaller else None

    def worker_resources(self) -> dict[str, float]:
        """What one Ray Train worker reserves, in Ray's resource names."""
        resources = {"CPU": self.cpus_per_worker, **self.resources_per_worker}
        if self.use_gpu:
            resources["GPU"] = self.gpus_per_worker
        return resources

    def trial_resources(self) -> dict[str, float]:
        """The whole gang a trial needs at once: every worker's resources."""
        return {k: v * self.num_workers for k, v in self.worker_resources().items()}


class Precision(StrEnum):
    fp32 = "fp32"
    bf16 = "bf16"
    fp16 = "fp16"


class TrainConfig(_Frozen):
    """Optimisation: AdamW with linear warm-up then linear decay to zero."""

    epochs: Annotated[int, Field(ge=1)] = 3
    lr: Annotated[float, Field(gt=0)] = 5e-5
    warmup_ratio: Annotated[float, Field(ge=0, lt=1)] = 0.1
    weight_decay: Annotated[float, Field(ge=0)] = 0.01
    max_grad_norm: Annotated[float, Field(gt=0)] | None = 1.0
    precision: Precision = Precision.fp32
    seed: int = 0
    # Micro-batches of similar lengths (trainables.sampling): the same examples every epoch,
    # in a random order, with far less padding. False: plain shuffled batches.
    group_by_length: bool = True
    # Fault tolerance: a checkpoint every N epochs (0: none), the last K kept, and how often
    # Ray Train may restart a trial's workers from the latest one.
    checkpoint_every_epochs: Annotated[int, Field(ge=0)] = 1
    keep_checkpoints: Annotated[int, Field(ge=1)] = 2
    max_failures: Annotated[int, Field(ge=0)] = 0
    # A trial whose workers make no progress (optimizer step, evaluation batch, epoch) for this
    # long fails, saying so; it also bounds every torch.distributed collective. None: no limit.
    progress_timeout_s: Annotated[float, Field(gt=0)] | None = 1800
    # After an out-of-memory error, run again up to N times from the latest checkpoint, each
    # time with half the micro-batch and twice the gradient accumulation (same global batch).
    oom_retries: Annotated[int, Field(ge=0)] = 0
    # Convergence. Evaluate the whole validation split every N optimizer steps as well as at
    # each epoch's end (None: at epoch ends only); the trial reports when its evaluations first
    # reached this fraction of its final metric, and ``target`` (a value of the primary
    # metric) when given. Evaluating leaves training exactly as it would have been.
    eval_every_steps: Annotated[int, Field(ge=1)] | None = None
    convergence_fraction: Annotated[float, Field(gt=0, le=1)] = 0.95
    target: float | None = None


class InferenceConfig(_Frozen):
    """Prediction timing after the final epoch, on the trial's own device and dtype.

    Throughput: every worker predicts its shard of the validation split at the eval batch.
    Latency: rank 0 predicts batches of each of ``batch_sizes`` and reports p50, p95 and p99.
    ``max_examples`` bounds every measurement (the throughput pass over all workers, and each
    batch size's latency run; None: the whole split); each is preceded by ``warmup_steps``
    untimed batches.
    """

    enabled: bool = True
    batch_sizes: tuple[Annotated[int, Field(ge=1)], ...] = (1, 32)
    max_examples: Annotated[int, Field(ge=1)] | None = 512
    warmup_steps: Annotated[int, Field(ge=0)] = 5

    @model_validator(mode="after")
    def _check(self) -> InferenceConfig:
        if self.enabled and not self.batch_sizes:
            raise ValueError("batch_sizes needs at least one batch size (or enabled: false)")
        if len(set(self.batch_sizes)) != len(self.batch_sizes):
            raise ValueError(f"batch_sizes repeats a value: {list(self.batch_sizes)}")
        return self

    def latency_batches(self, batch_size: int, available: int) -> int:
        """Timed batches at ``batch_size``: enough to cover ``max_examples`` (or the
        ``available`` examples), at least one."""
        examples = self.max_examples or available
        return max(1, math.ceil(examples / batch_size))


# The values each metric can take, for checking a train.target.
METRIC_RANGES = {
    "accuracy": (0.0, 1.0),
    "f1": (0.0, 1.0),
    "matthews_correlation": (-1.0, 1.0),
    "pearson": (-1.0, 1.0),
    "spearmanr": (-1.0, 1.0),
}


class TrialConfig(_Frozen):
    """Everything one trial needs: the plain dict a Tune trial receives validates into this."""

    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    compute: ComputeConfig = Field(default_factory=ComputeConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    inference: InferenceConfig = Field(default_factory=InferenceConfig)

    @model_validator(mode="after")
    def _check(self) -> TrialConfig:
        if self.train.precision is not Precision.fp32 and not self.compute.use_gpu:
            raise ValueError(
                f"train.precision {self.train.precision.value} needs compute.use_gpu: true; "
                "on CPU use fp32"
            )
        target, metric = self.train.target, self.primary_metric()
        low, high = METRIC_RANGES[metric]
        if target is not None and not (math.isfinite(target) and low <= target <= high):
            raise ValueError(
                f"train.target {target} is outside the range of {metric} ({low:g} to {high:g})"
                + ("; give it as a fraction, e.g. 0.8 for 80 %" if 1 < target <= 100 else "")
            )
        return self

    def label(self) -> str:
        """A short readable name, e.g. ``bert-tiny·f0.25·w2·s0``."""
        model = self.model.name.rstrip("/").rsplit("/", 1)[-1]
        if self.model.num_layers:
            model += f"-L{self.model.num_layers}"
        return (
            f"{model}·f{self.data.train_fraction:g}·w{self.compute.num_workers}·s{self.train.seed}"
        )

    def primary_metric(self) -> str:
        """The metric that ranks trials: the task's customary headline number."""
        if self.data.source == "glue":
            return GLUE_FILES[self.data.task].metrics[0]
        return "pearson" if self.data.problem_type == "regression" else "accuracy"


def describe_resources(resources: dict[str, float]) -> str:
    """Ray resources as people read them: ``4 CPU, 1 GPU``."""
    return ", ".join(f"{amount:g} {name}" for name, amount in resources.items())
