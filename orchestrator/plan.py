"""``plan``: what a sweep will run, before anything runs (no Ray, no torch).

Reads and checks the data files (as the trial will read them), counts training examples,
estimates parameter counts from the architecture, and shows the batch arithmetic and resources
of every trial.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from contract.config import (
    GLUE_FILES,
    DataConfig,
    ModelConfig,
    TrialConfig,
    describe_resources,
)
from contract.datafiles import DataError, read_task_files
from orchestrator.spec import SpecError, SweepSpec

__all__ = ["PlanRow", "bert_parameter_counts", "plan_rows", "render_plan", "train_split_size"]

BERT_VOCAB = 30522
MAX_POSITIONS = 512


def bert_parameter_counts(
    *, layers: int, hidden: int, vocab: int, num_labels: int, intermediate: int | None = None
) -> tuple[int, int]:
    """(total, non-embedding) parameters of BertForSequenceClassification, counted exactly."""
    inter = intermediate or 4 * hidden
    per_layer = 4 * (hidden * hidden + hidden) + 2 * hidden  # Q, K, V, output; LayerNorm
    per_layer += hidden * inter + inter + inter * hidden + hidden + 2 * hidden  # FFN; LayerNorm
    non_embedding = (
        layers * per_layer
        + 2 * hidden  # embedding LayerNorm
        + hidden * hidden
        + hidden  # pooler
        + hidden * num_labels
        + num_labels  # classifier
    )
    embedding = (vocab + MAX_POSITIONS + 2) * hidden
    return non_embedding + embedding, non_embedding


def _architecture(model: ModelConfig) -> tuple[int, int, int | None] | None:
    """(layers, hidden, intermediate) from the ladder or a local config.json; None if unknown."""
    if model.ladder:
        layers, hidden, inter = model.ladder.num_layers, model.ladder.hidden_size, None
    else:
        config_file = Path(model.source).expanduser() / "config.json"
        if not config_file.is_file():
            return None
        config = json.loads(config_file.read_text())  # load_spec has checked it parses
        layers, hidden = config.get("num_hidden_layers"), config.get("hidden_size")
        inter = config.get("intermediate_size")
        if not all(isinstance(n, int) for n in (layers, hidden, inter or 0)):
            return None  # not a BERT-style config: the trial counts its parameters
    return model.num_layers or layers, hidden, inter


def _vocab(model: ModelConfig) -> int:
    if model.tokenizer == "wordpiece":
        return model.wordpiece_vocab_size
    config_file = Path(model.source).expanduser() / "config.json"
    vocab = json.loads(config_file.read_text()).get("vocab_size") if config_file.is_file() else None
    return vocab if isinstance(vocab, int) else BERT_VOCAB


def train_split_size(data: DataConfig) -> int:
    """Rows in the full training split. Data files are read and checked as the trial reads
    them (contract.datafiles): DataError, in one line, when one cannot be trained on."""
    if data.source == "synthetic":
        return data.synthetic_train_size
    files = read_task_files(data)
    return GLUE_FILES[data.task].train_size if files is None else len(files.train)


@dataclass(frozen=True)
class PlanRow:
    trial: TrialConfig
    params_total: int | None
    params_non_embedding: int | None
    train_examples: int

    def resources(self) -> str:
        return describe_resources(self.trial.compute.worker_resources())


def _num_labels(data: DataConfig) -> int:
    if data.source == "glue":
        return GLUE_FILES[data.task].num_labels
    return 1 if data.problem_type == "regression" else 2


def plan_rows(spec: SweepSpec) -> list[PlanRow]:
    sizes: dict[str, int] = {}
    rows = []
    for trial in spec.trials:
        key = trial.data.source_key()
        if key not in sizes:
            try:
                sizes[key] = train_split_size(trial.data)
            except DataError as err:
                raise SpecError(f"{spec.path}: data: {err}") from None
        arch = _architecture(trial.model)
        counts = (
            bert_parameter_counts(
                layers=arch[0],
                hidden=arch[1],
                intermediate=arch[2],
                vocab=_vocab(trial.model),
                num_labels=_num_labels(trial.data),
            )
            if arch
            else (None, None)
        )
        rows.append(PlanRow(trial, *counts, trial.data.subset_size(sizes[key])))
    return rows


def _millions(n: int | None) -> str:
    return "?" if n is None else f"{n / 1e6:.2f}M"


def render_plan(spec: SweepSpec, rows: list[PlanRow]) -> str:
    """The plan as a fixed-width table plus totals."""
    header = (
        "#",
        "trial",
        "params",
        "non-emb",
        "train ex",
        "workers",
        "batch",
        "per-worker",
        "accum",
        "resources/worker",
    )
    table = [header]
    for i, row in enumerate(rows, 1):
        c = row.trial.compute
        table.append(
            (
                str(i),
                row.trial.label(),
                _millions(row.params_total),
                _millions(row.params_non_embedding),
                str(row.train_examples),
                str(c.num_workers),
                str(c.global_batch()),
                str(c.per_worker_batch()),
                str(c.accumulation_steps()),
                row.resources(),
            )
        )
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)) for r in table]
    largest = max(rows, key=lambda r: sum(r.trial.compute.trial_resources().values()))
    gang = describe_resources(largest.trial.compute.trial_resources())
    example_epochs = sum(r.train_examples * r.trial.train.epochs for r in rows)
    scaling = {r.trial.compute.batch_scaling.value for r in rows}
    shape = " + ".join(
        f"{' x '.join(str(len(v)) for v in grid.axes.values()) or '1'} cells x "
        f"{len(grid.seeds or spec.seeds)} seeds"
        for grid in spec.grids
    )
    if (shared := sum(grid.size(spec.seeds) for grid in spec.grids) - len(spec.trials)) > 0:
        shape += f", {shared} in more than one grid, run once"
    lines += [
        "",
        f"sweep {spec.name}: {len(rows)} trials ({shape}), "
        f"batch scaling: {', '.join(sorted(scaling))}",
        f"largest gang: {gang} ({largest.trial.label()})",
        f"training examples processed in total: {example_epochs:,} (examples x epochs)",
    ]
    return "\n".join(lines)
