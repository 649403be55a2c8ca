"""Inference timing's cost: seconds it adds to each trial of the quickstart / the trial's wall time.

Every trial times prediction after its final epoch (``inference`` settings) and reports how long
that took on rank 0, the worker that also times latency while the others wait
(``inference_time_s``), next to the trial's wall time (``trial_wall_s``, start-up included):
both come from the same trial, so the ratio is measured side by side, whatever the machine's
load. This runs the quickstart sweep (or reads a finished one) and prints the ratio per trial.
Target: at most 5 % of a trial's wall time, for every trial.

It also prints what the mid-epoch evaluations (``train.eval_every_steps``) cost: the extra
evaluations per trial times the trial's own mean evaluation time (``eval_time_s`` of its epochs).

    python -m benchmarks.inference_overhead                       # runs the quickstart (~5 min)
    python -m benchmarks.inference_overhead --out /tmp/qs         # ... and keeps it there
    python -m benchmarks.inference_overhead --experiment experiments/quickstart
    python -m benchmarks.inference_overhead axes.model.name=[bert-tiny]   # overrides for `run`
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd

from benchmarks.common import REPO, header, print_table

QUICKSTART = REPO / "search_spaces" / "quickstart.yaml"
TARGET = 0.05


def run_quickstart(directory: Path, overrides: list[str]) -> None:
    """The quickstart through the CLI, as a user runs it, into ``directory``."""
    command = [sys.executable, "-m", "orchestrator.cli", "run", str(QUICKSTART), *overrides]
    command += ["-o", str(directory)]
    print(f"   running: {' '.join(command[2:])}", flush=True)
    subprocess.run(command, check=True, cwd=REPO, stdout=subprocess.DEVNULL)


def mid_epoch_evaluations(directory: Path, trial_id: str) -> tuple[int, float]:
    """(evaluations between epoch ends, mean seconds per evaluation) of one trial."""
    rows = [
        json.loads(line)
        for line in (directory / "trials" / trial_id / "history.jsonl").read_text().splitlines()
    ]
    extra = sum(len(r.get("eval_points", [])) - 1 for r in rows)
    return extra, statistics.mean(r["eval_time_s"] for r in rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--experiment", type=Path, help="read this finished sweep instead")
    parser.add_argument("--out", type=Path, help="run the quickstart into this directory")
    parser.add_argument("overrides", nargs="*", help="overrides for the quickstart run")
    args = parser.parse_args()

    header("inference overhead: inference_time_s / trial_wall_s per quickstart trial")
    with tempfile.TemporaryDirectory(prefix="bench-inference-") as tmp:
        directory = args.experiment
        if directory is None:
            directory = args.out or Path(tmp) / "quickstart"
            run_quickstart(directory, args.overrides)
        table = pd.read_csv(directory / "results.csv")
        done = table[table["status"] == "TERMINATED"]
        if "inference_time_s" not in done.columns or done["inference_time_s"].isna().all():
            raise SystemExit(f"{directory}: no inference_time_s column (inference timing off?)")
        rows = []
        for _, trial in done.iterrows():
            extra, per_eval = mid_epoch_evaluations(directory, trial["trial_id"])
            rows.append(
                {
                    "trial": trial["label"],
                    "wall_s": trial["trial_wall_s"],
                    "train_s": trial["train_time_s"],
                    "inference_s": trial["inference_time_s"],
                    "ratio": trial["inference_time_s"] / trial["trial_wall_s"],
                    "b1_p50_ms": trial.get("latency_p50_ms_b1", float("nan")),
                    "mid_evals": extra,
                    "mid_eval_s": extra * per_eval,
                    "eval_ratio": extra * per_eval / trial["trial_wall_s"],
                }
            )
    print_table(rows)
    ratios = [r["ratio"] for r in rows]
    evaluation = sum(r["mid_eval_s"] for r in rows) / sum(r["wall_s"] for r in rows)
    print(
        f"inference overhead: median {statistics.median(ratios):.2%}, max {max(ratios):.2%} of "
        f"a trial's wall time over {len(rows)} trials (target <= {TARGET:.0%}: "
        f"{'met' if max(ratios) <= TARGET else 'NOT met'})"
    )
    print(f"mid-epoch evaluations: {evaluation:.1%} of the trials' wall time in all")


if __name__ == "__main__":
    main()
