"""Per-trial overhead: a sweep of small trials, each trial's wall time minus its training loop.

A synthetic search space (bert-tiny from scratch, WordPiece, 400 pairs, 1 epoch, 1 worker) run
by ``orchestrator.sweep.run_sweep``, the path ``scalesweep run`` takes, one trial at a time by
default so the trials do not share the cores. Per trial: ``trial_wall_s`` (the sweep's clock,
trial start to completion) minus ``train_time_s`` (the training loop); evaluation and start-up
are overhead. Per sweep: makespan (the ``run_sweep`` call, ``ray.init`` included) over the sum
of training time, and the CPU-seconds all its processes used per trial (``TreeCPU``: what the
fixed cost is made of, and a figure that the machine's load barely moves). The data cache
starts empty, as on a new machine.
Baseline ~12 s of overhead per trial; target <= 6 s. ``--ray-defaults`` runs the sweep as it
ran before its Ray tuning, for a before/after on the same machine.

    python -m benchmarks.trial_overhead [--trials 4] [--workers 1] [--concurrent 1]
    python -m benchmarks.trial_overhead --ray-defaults
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import textwrap
import time
from pathlib import Path

import pandas as pd

from benchmarks.common import TreeCPU, header, print_table

SPACE = """
name: overhead
storage_path: {storage}
max_concurrent_trials: {concurrent}
data: {{source: synthetic, synthetic_train_size: 400, synthetic_validation_size: 200,
        max_length: 48}}
model: {{name: bert-tiny, from_scratch: true, tokenizer: wordpiece, wordpiece_vocab_size: 500}}
compute: {{num_workers: {workers}, cpus_per_worker: 1, global_batch_size: 16}}
train: {{epochs: 1, lr: 1.0e-3}}
seeds: {seeds}
"""


def use_ray_defaults() -> None:
    """Undo ``orchestrator.sweep``'s Ray tuning: a new trial-driver actor per trial, Ray
    Train's 2 s controller poll, a preemption watcher per trial."""
    import ray.tune

    from orchestrator import sweep

    sweep.LOCAL_ENV = {}
    sweep.WORKER_ENV = {
        k: v for k, v in sweep.WORKER_ENV.items() if k != "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"
    }
    tune_config = ray.tune.TuneConfig
    ray.tune.TuneConfig = lambda **kwargs: tune_config(**kwargs | {"reuse_actors": False})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--workers", type=int, default=1, help="DDP workers per trial")
    parser.add_argument("--concurrent", type=int, default=1, help="max_concurrent_trials")
    parser.add_argument("--ray-defaults", action="store_true", help="before the Ray tuning")
    args = parser.parse_args()
    if args.ray_defaults:
        use_ray_defaults()

    settings = "Ray's defaults" if args.ray_defaults else "the sweep's settings"
    header(f"per-trial overhead: {args.trials} small trials, {args.workers} worker(s), {settings}")
    from orchestrator.spec import load_spec
    from orchestrator.sweep import run_sweep

    with tempfile.TemporaryDirectory(prefix="bench-overhead-") as tmp:
        os.environ["SCALESWEEP_CACHE"] = f"{tmp}/cache"
        space = Path(tmp) / "space.yaml"
        space.write_text(
            textwrap.dedent(SPACE).format(
                storage=tmp,
                concurrent=args.concurrent,
                workers=args.workers,
                seeds=list(range(args.trials)),
            )
        )
        start = time.perf_counter()
        with TreeCPU() as cpu:
            experiment = run_sweep(load_spec(space), Path(tmp) / "experiment")
        makespan = time.perf_counter() - start
        table = pd.read_csv(experiment / "results.csv")
        rows = []
        for _, trial in table.iterrows():
            history = experiment / "trials" / trial["trial_id"] / "history.jsonl"
            eval_s = sum(json.loads(line)["eval_time_s"] for line in history.open())
            rows.append(
                {
                    "trial": trial["label"],
                    "status": trial["status"],
                    "wall_s": trial["trial_wall_s"],
                    "train_s": trial["train_time_s"],
                    "eval_s": eval_s,
                    "overhead_s": trial["trial_wall_s"] - trial["train_time_s"],
                }
            )
    print_table(rows)
    overhead = statistics.median(r["overhead_s"] for r in rows)
    train = sum(r["train_s"] for r in rows)
    print(f"median per-trial overhead: {overhead:.1f}s  (baseline ~12 s; target <= 6 s)")
    print(f"sweep makespan {makespan:.0f}s / sum of training {train:.1f}s = {makespan / train:.1f}")
    print(f"CPU-seconds per trial, all processes, ray.init included: {cpu.seconds / len(rows):.1f}")
    print("   by process (CPU-seconds per trial):")
    for name, seconds in cpu.by_name().items():
        if seconds / len(rows) >= 0.1:
            print(f"   {seconds / len(rows):6.2f}  {name[:70]}")


if __name__ == "__main__":
    main()
