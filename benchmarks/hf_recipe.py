"""Against the common recipe: the project's loop vs a Hugging Face ``Trainer`` fine-tune.

The usual copy-paste recipe pads every MRPC pair to the tokenizer's max length
(``padding="max_length"``: 512 tokens for BERT) and runs ``Trainer``. Same model (pretrained
MiniLM), same task, batch 8, 2 CPU threads, AdamW at 5e-5. Rows: that recipe; the same Trainer
with dynamic padding, and with its ``group_by_length`` sampler too; the project's loop
(``trainables.loop.fit``, in process: Ray's share is benchmarks.loop_efficiency) with plain
shuffled batches (``train.group_by_length: false``, the loop before length grouping) and with
length-grouped ones (the default). Training-loop examples/s only; the padded recipe runs a
bounded number of steps. Target: project >= 20x.

    python -m benchmarks.hf_recipe [--padded-steps 10] [--train-fraction 0.1]
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.common import GLUE_DIR, header, minilm_dir, mrpc_trial, print_table

BATCH = 8
PADDED_LENGTH = 512


def trainer_examples_per_s(
    *, steps: int, padded: bool, strategy: str, threads: int, output_dir: str
) -> float:
    """Fine-tune with transformers' Trainer for ``steps`` steps; examples/s between the first
    step's start and the last step's end (Trainer's own set-up is not counted)."""
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainerCallback,
        TrainingArguments,
    )

    from orchestrator.config import DataConfig
    from trainables.data import load_task_data

    class StepClock(TrainerCallback):
        start: float | None = None
        end = 0.0

        def on_step_begin(self, args, state, control, **kwargs):
            self.start = self.start or time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            self.end = time.perf_counter()

    torch.set_num_threads(threads)
    tokenizer = AutoTokenizer.from_pretrained(minilm_dir())
    raw = load_task_data(DataConfig(source="glue", task="mrpc", glue_dir=str(GLUE_DIR))).train

    def encode(batch):
        padding = {"padding": "max_length", "max_length": PADDED_LENGTH} if padded else {}
        return tokenizer(batch["text_a"], batch["text_b"], truncation=True, **padding)

    train = raw.map(encode, batched=True, remove_columns=["text_a", "text_b"])
    model = AutoModelForSequenceClassification.from_pretrained(minilm_dir(), num_labels=2)
    clock = StepClock()
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
    collator = None if padded else DataCollatorWithPadding(tokenizer)
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=train,
        data_collator=collator,
        callbacks=[clock],
    )
    trainer.train()
    return steps * BATCH / (clock.end - clock.start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--padded-steps", type=int, default=10, help="steps of the 512 recipe")
    parser.add_argument("--train-fraction", type=float, default=0.1, help="project's MRPC share")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    header(f"against the common recipe: MiniLM on MRPC, batch {BATCH}, {args.threads} threads")
    from orchestrator.config import TrialConfig
    from trainables.loop import fit

    config = mrpc_trial(train_fraction=args.train_fraction, batch_size=BATCH, cpus=args.threads)
    trial = TrialConfig.model_validate(config)
    # The dynamic-padding Trainer runs as many steps as the project's epoch has batches.
    dynamic_steps = math.ceil(trial.data.subset_size(3668) / BATCH)
    with tempfile.TemporaryDirectory(prefix="bench-hf-") as tmp:
        cache = Path(tmp) / "cache"
        runs = [
            ("Trainer, pad to 512", args.padded_steps, True, "random"),
            ("Trainer, dynamic padding", dynamic_steps, False, "random"),
            ("Trainer, dynamic + group_by_length", dynamic_steps, False, "group_by_length"),
        ]
        rows = []
        for name, steps, padded, strategy in runs:
            rate = trainer_examples_per_s(
                steps=steps,
                padded=padded,
                strategy=strategy,
                threads=args.threads,
                output_dir=tmp,
            )
            rows.append({"run": name, "steps": steps, "ex_per_s": rate})
            print(f"   {name}: {rate:.3g} examples/s", flush=True)
        for grouped in (False, True):
            train = {**config["train"], "group_by_length": grouped}
            row = fit(TrialConfig.model_validate({**config, "train": train}), cache_dir=cache)
            name = f"project loop (fit), {'length-grouped' if grouped else 'shuffled'} batches"
            rows.append({"run": name, "steps": dynamic_steps, "ex_per_s": row["examples_per_s"]})
            print(f"   {name}: {row['examples_per_s']:.3g} examples/s", flush=True)
    baseline = rows[0]["ex_per_s"]
    for r in rows:
        r["x_recipe"] = r["ex_per_s"] / baseline
    print_table(rows)
    print(f"project loop vs the pad-to-512 recipe: {rows[-1]['x_recipe']:.1f}x  (target >= 20x)")


if __name__ == "__main__":
    main()
