"""Against the common recipe: the project's loop vs a Hugging Face ``Trainer`` fine-tune.

The usual copy-paste recipe pads every MRPC pair to the tokenizer's max length
(``padding="max_length"``: 512 tokens for BERT) and runs ``Trainer``. Same model (pretrained
MiniLM), same task, batch 8, 2 CPU threads, AdamW at 5e-5. Rows: that recipe (a bounded
number of steps); the same Trainer with dynamic padding, and with its ``group_by_length``
sampler too (50 steps: one whole mega-batch of its sampler, which puts the longest batches
first); the project's loop (``trainables.loop.fit``, in process: Ray's share is
benchmarks.loop_efficiency) on 400 examples with plain shuffled batches
(``train.group_by_length: false``, the loop before length grouping) and with length-grouped
ones (the default). ``tokens_per_ex``: what the batches hold per example, padding included:
the work, whatever the load. Throughput runs from the end of the first step to the end of the
last, in wall-clock time (the target) and in this process's CPU time (all threads: steadier on
a shared machine, though waiting OpenMP threads spin). Target: project >= 20x the recipe.

    python -m benchmarks.hf_recipe [--padded-steps 6] [--steps 50]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.common import GLUE_DIR, header, minilm_dir, mrpc_trial, print_table

BATCH = 8
PADDED_LENGTH = 512
MRPC_TRAIN = 3668


class StepClock:
    """Wall and CPU time at the end of each step: steady-state throughput between the first
    and the last, without set-up or the first step's one-off costs."""

    def __init__(self) -> None:
        self.marks: list[tuple[float, float, int]] = []

    def mark(self, examples: int) -> None:
        self.marks.append((time.perf_counter(), time.process_time(), examples))

    def rates(self) -> tuple[float, float]:
        """(examples per wall second, examples per CPU second)."""
        (wall0, cpu0, seen0), (wall1, cpu1, seen1) = self.marks[0], self.marks[-1]
        return (seen1 - seen0) / (wall1 - wall0), (seen1 - seen0) / (cpu1 - cpu0)


def trainer_rates(
    *, steps: int, padded: bool, strategy: str, output_dir: str
) -> tuple[StepClock, float]:
    """Fine-tune with transformers' Trainer for ``steps`` steps, clocking every step; also
    the tokens per example its batches hold, padding included (from a separate draw)."""
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainerCallback,
        TrainingArguments,
    )

    from contract.config import DataConfig
    from trainables.data import load_task_data

    clock = StepClock()

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            clock.mark(state.global_step * BATCH)

    tokenizer = AutoTokenizer.from_pretrained(minilm_dir())
    raw = load_task_data(DataConfig(source="glue", task="mrpc", glue_dir=str(GLUE_DIR))).train

    def encode(batch):
        padding = {"padding": "max_length", "max_length": PADDED_LENGTH} if padded else {}
        return tokenizer(batch["text_a"], batch["text_b"], truncation=True, **padding)

    train = raw.map(encode, batched=True, remove_columns=["text_a", "text_b"])
    args = TrainingArguments(
        output_dir=output_dir,
        per_device_train_batch_size=BATCH,
        max_steps=steps,
        learning_rate=5e-5,
        train_sampling_strategy=strategy,
        use_cpu=True,
        report_to="none",
        save_strategy="no",
        logging_strategy="no",
        disable_tqdm=True,
        seed=0,
    )
    trainer = Trainer(
        model=AutoModelForSequenceClassification.from_pretrained(minilm_dir(), num_labels=2),
        args=args,
        train_dataset=train,
        data_collator=None if padded else DataCollatorWithPadding(tokenizer),
        callbacks=[Clock()],
    )
    batches = zip(trainer.get_train_dataloader(), range(steps), strict=False)
    padded_tokens = sum(batch["input_ids"].numel() for batch, _ in batches) / (steps * BATCH)
    trainer.train()
    return clock, padded_tokens


def project_padded_tokens(trial, cache_dir: Path) -> float:
    """Tokens per example, padding included, in the batches of ``fit``'s first epoch."""
    from trainables.data import load_task_data
    from trainables.loop import build_dataloaders
    from trainables.models import build_tokenizer

    task = load_task_data(trial.data)
    tokenizer = build_tokenizer(trial.model, task, cache_dir)
    loader, _ = build_dataloaders(trial, task, tokenizer, cache_dir, torch.device("cpu"))
    loader.sampler.set_epoch(1)
    return sum(batch["input_ids"].numel() for batch in loader) / len(loader.dataset)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--padded-steps", type=int, default=6, help="steps of the 512 recipe")
    parser.add_argument("--steps", type=int, default=50, help="steps of every other run")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    header(f"against the common recipe: MiniLM on MRPC, batch {BATCH}, {args.threads} threads")
    from contract.config import TrialConfig
    from trainables.loop import fit

    torch.set_num_threads(args.threads)
    config = mrpc_trial(
        train_fraction=args.steps * BATCH / MRPC_TRAIN, batch_size=BATCH, cpus=args.threads
    )
    rows = []

    def record(name: str, clock: StepClock, padded_tokens: float) -> None:
        wall, cpu = clock.rates()
        rows.append(
            {"run": name, "tokens_per_ex": padded_tokens, "ex_per_s": wall, "ex_per_cpu_s": cpu}
        )
        print(f"   {name}: {wall:.3g} examples/s, {cpu:.3g} per CPU-second", flush=True)

    with tempfile.TemporaryDirectory(prefix="bench-hf-") as tmp:
        cache = Path(tmp) / "cache"
        for name, steps, padded, strategy in [
            ("Trainer, pad to 512", args.padded_steps, True, "random"),
            ("Trainer, dynamic padding", args.steps, False, "random"),
            ("Trainer, dynamic + group_by_length", args.steps, False, "group_by_length"),
        ]:
            record(
                name, *trainer_rates(steps=steps, padded=padded, strategy=strategy, output_dir=tmp)
            )
        for grouped in (False, True):
            clock = StepClock()
            trial = TrialConfig.model_validate(
                {**config, "train": {**config["train"], "group_by_length": grouped}}
            )
            fit(trial, cache_dir=cache, on_step=lambda s, c=clock: c.mark(s["examples"]))
            name = f"project fit, {'length-grouped' if grouped else 'shuffled'} batches"
            record(name, clock, project_padded_tokens(trial, cache))
    for r in rows:
        r["x_recipe"] = r["ex_per_s"] / rows[0]["ex_per_s"]
        r["x_recipe_cpu"] = r["ex_per_cpu_s"] / rows[0]["ex_per_cpu_s"]
    print_table(rows)
    print(
        f"project loop vs the pad-to-512 recipe: {rows[-1]['x_recipe']:.1f}x wall-clock, "
        f"{rows[-1]['x_recipe_cpu']:.1f}x per CPU-second  (target >= 20x)"
    )


if __name__ == "__main__":
    main()
