"""The resource half of ``plan``: what every trial asks of a cluster, which trials can never be
placed, how many GPU-hours the sweep costs, and its expected makespan and utilisation when each
trial starts as soon as its gang fits (no Ray, no torch).

Time per trial = start-up and evaluation overhead + training FLOPs / achieved FLOP/s, with
training FLOPs = 6 x non-embedding parameters x tokens x epochs (forward + backward). The
achieved FLOP/s per GPU (or per CPU) come from a previous sweep's results when one is given
(the measured trial nearest in size, worker count and device), else from the figures of
BENCHMARKS.md (CPU) and a stated rough model (GPU).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from contract.config import describe_resources
from orchestrator.cluster import DRIVER_RESOURCES, Capacity, simulate, trial_gang, unplaceable
from orchestrator.experiment import ExperimentDir
from orchestrator.plan import PlanRow
from orchestrator.spec import SweepSpec

__all__ = ["BENCHMARKED", "Throughput", "TrialTime", "measured_throughput", "render_resources"]


@dataclass(frozen=True)
class TrialTime:
    """What one trial achieved (or is assumed to achieve) per GPU, or per CPU on CPU trials."""

    use_gpu: bool
    params: int | None  # non-embedding parameters; None: any size (a rough model)
    workers: int | None
    flops_per_unit: float  # achieved training FLOP/s per GPU (CPU trials: per CPU)
    tokens_per_example: float | None  # None: half of max_length (dynamic padding)
    overhead_s: float  # start-up, evaluation and reporting: wall time minus training time


@dataclass(frozen=True)
class Throughput:
    source: str
    measurements: tuple[TrialTime, ...]

    def nearest(self, row: PlanRow) -> TrialTime:
        """The measurement on the same device nearest in size and worker count."""
        compute = row.trial.compute
        same = [m for m in self.measurements if m.use_gpu == compute.use_gpu]
        candidates = same or [m for m in BENCHMARKED.measurements if m.use_gpu == compute.use_gpu]

        def distance(m: TrialTime) -> float:
            size = abs(math.log((m.params or 1) / (row.params_non_embedding or 1)))
            return size + abs(math.log((m.workers or 1) / compute.num_workers))

        return min(candidates, key=distance)

    def seconds(self, row: PlanRow) -> float | None:
        """Estimated wall time of one trial; None without a parameter count."""
        if row.params_non_embedding is None:
            return None
        m = self.nearest(row)
        compute, trial = row.trial.compute, row.trial
        tokens = m.tokens_per_example or trial.data.max_length / 2
        flops = 6 * row.params_non_embedding * tokens * row.train_examples * trial.train.epochs
        units = compute.gpus_per_worker if compute.use_gpu else compute.cpus_per_worker
        return m.overhead_s + flops / (compute.num_workers * units * m.flops_per_unit)


# Until a sweep of this spec has run: CPU figures measured by `python -m
# benchmarks.loop_efficiency` (BENCHMARKS.md, 1: MiniLM fine-tuned on MRPC through Ray Train, one
# worker of 2 CPUs, fp32); GPU figures are a rough model, as no GPU has been measured yet
# (BENCHMARKS.md, 5): batch-32 BERT fine-tuning on short sequences keeps a GPU mostly idle, and
# ~10 TFLOP/s achieved is ~10 % of an A10G/L4 bf16 peak.
BENCHMARKED = Throughput(
    source=(
        "BENCHMARKS.md: CPU measured (53.7 GFLOP/s per CPU, 13.9 s overhead per trial); "
        "GPU rough (10 TFLOP/s per GPU, 30 s overhead per trial)"
    ),
    measurements=(
        TrialTime(True, None, None, 10e12, None, 30.0),
        TrialTime(False, 10_796_162, 1, 53.7e9, 53.3, 13.9),
    ),
)


def measured_throughput(experiment_dir: Path) -> Throughput:
    """Throughput of every finished trial of a previous sweep, from its results table."""
    table = ExperimentDir(experiment_dir).read_results()
    needed = ["tokens_per_s", "examples_per_s", "params_non_embedding", "train_time_s"]
    done = table[(table["status"] == "TERMINATED")].dropna(subset=needed)
    measurements = []
    for _, r in done.iterrows():
        use_gpu = bool(r["use_gpu"])
        workers = int(r["compute.num_workers"])
        units = workers * (r["gpus_per_worker"] if use_gpu else r["cpus_per_worker"])
        measurements.append(
            TrialTime(
                use_gpu=use_gpu,
                params=int(r["params_non_embedding"]),
                workers=workers,
                flops_per_unit=6 * r["params_non_embedding"] * r["tokens_per_s"] / units,
                tokens_per_example=r["tokens_per_s"] / r["examples_per_s"],
                overhead_s=max(0.0, r["trial_wall_s"] - r["train_time_s"]),
            )
        )
    if not measurements:
        return BENCHMARKED
    return Throughput(
        source=f"measured in {experiment_dir} ({len(measurements)} finished trials)",
        measurements=tuple(measurements),
    )


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def render_resources(
    spec: SweepSpec,
    rows: list[PlanRow],
    capacities: list[Capacity],
    throughput: Throughput = BENCHMARKED,
) -> tuple[str, list[str]]:
    """The resource plan as text, and one error line per cluster that cannot place a trial."""
    driver = {k: v for k, v in DRIVER_RESOURCES.items() if v}
    lines = ["", f"resources (every trial's driver: {describe_resources(driver)}, on the head):"]
    shapes: dict[tuple[int, str], list[PlanRow]] = {}
    for row in rows:
        compute = row.trial.compute
        shapes.setdefault(
            (compute.num_workers, describe_resources(compute.worker_resources())), []
        ).append(row)
    for (workers, per_worker), group in sorted(shapes.items()):
        gang = describe_resources(group[0].trial.compute.trial_resources())
        lines.append(f"  {len(group)} trials x {workers} workers x ({per_worker}) = gang of {gang}")

    errors, placeable = [], []
    for capacity in capacities:
        problems = unplaceable(spec.trials, capacity)
        if problems:
            lines.append(f"  {capacity.describe()}: {len(problems)} trial(s) can never be placed")
            by_reason: dict[str, list[str]] = {}
            for label, reason in problems.items():
                by_reason.setdefault(reason, []).append(label)
            for reason, labels in by_reason.items():
                more = f" and {len(labels) - 3} more" if len(labels) > 3 else ""
                lines.append(f"    {', '.join(labels[:3])}{more}: {reason}")
            errors.append(f"{len(problems)} trial(s) can never be placed on {capacity.describe()}")
        else:
            placeable.append(capacity)
            at_most = spec.max_concurrent_trials
            cap = f", at most {at_most} at once" if at_most else ""
            lines.append(f"  {capacity.describe()}: each trial starts when its gang fits{cap}")

    lines.append(f"estimate ({throughput.source}):")
    known = [(row, s) for row in rows if (s := throughput.seconds(row)) is not None]
    if not known:
        lines.append("  no trial has a parameter count to estimate from")
        return "\n".join(lines), errors
    (fast_row, fast), (slow_row, slow) = min(known, key=_second), max(known, key=_second)
    lines.append(
        f"  per trial: {_duration(fast)} ({fast_row.trial.label()}) .. "
        f"{_duration(slow)} ({slow_row.trial.label()})"
    )
    hours = {
        kind: sum(s * row.trial.compute.trial_resources().get(kind, 0) for row, s in known) / 3600
        for kind in ("GPU", "CPU")
    }
    left_out = len(rows) - len(known)
    unknown = f" ({left_out} trials of unknown size left out)" if left_out else ""
    lines.append(
        f"  {len(known)} trials: {hours['GPU']:.2f} GPU-hours, {hours['CPU']:.2f} CPU-hours "
        f"reserved by workers{unknown}"
    )
    # Utilisation of the scarce resource: GPUs when any trial uses them, else CPUs.
    kind = "GPU" if hours["GPU"] else "CPU"
    timed = [(trial_gang(row.trial), s) for row, s in known]
    for capacity in placeable:
        schedule = simulate(capacity, timed, max_running=spec.max_concurrent_trials, kind=kind)
        lines.append(
            f"  {capacity.source}: makespan about {_duration(schedule.makespan_s)}, "
            f"{kind} utilisation {schedule.utilisation:.0%} (longest trials first)"
        )
    return "\n".join(lines), errors


def _second(pair: tuple[PlanRow, float]) -> float:
    return pair[1]
