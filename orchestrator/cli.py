"""``scalesweep``: plan, run and inspect scaling sweeps of BERT fine-tuning.

Examples:
  scalesweep plan search_spaces/quickstart.yaml
  scalesweep plan search_spaces/mrpc_bert_ladder.yaml --cluster cluster.yaml --measured exp/q
  scalesweep run search_spaces/quickstart.yaml
  scalesweep run search_spaces/mrpc_bert_ladder.yaml train.lr=3e-5 --address auto
  scalesweep run search_spaces/mrpc_bert_ladder.yaml --address auto --cluster cluster.yaml
  scalesweep run search_spaces/quickstart.yaml 'axes.model.name=[bert-tiny]' -o experiments/try1
  scalesweep run search_spaces/quickstart.yaml wandb.project=my-scaling --wandb online
  scalesweep run search_spaces/quickstart.yaml --progress-every 10
  scalesweep resume experiments/quickstart
  scalesweep resume s3://my-bucket/sweeps/mrpc_bert_ladder
  scalesweep status experiments/quickstart --watch
  scalesweep status s3://my-bucket/sweeps/mrpc_bert_ladder
  scalesweep results experiments/quickstart
  scalesweep analyze experiments/quickstart --target 0.8 --price-per-gpu-hour 2.5
  scalesweep analyze s3://my-bucket/sweeps/mrpc_bert_ladder --price-per-gpu-hour 1.0
  scalesweep analyze experiments/mrpc_bert_ladder --flops-budget 1e17
  scalesweep analyze experiments/quickstart --max-latency-ms 5 --latency-percentile p99
  scalesweep wandb experiments/quickstart --sync
"""

from __future__ import annotations

import argparse
import math
import os
import re
import signal
import sys
import threading
import time
from pathlib import Path
from typing import NoReturn

from contract.tracking import WandbMode
from orchestrator.cluster import ClusterError, load_cluster_file, probe
from orchestrator.errors import Interrupted, UserError
from orchestrator.experiment import ExperimentDir
from orchestrator.monitor import DEFAULT_PROGRESS_EVERY_S, ProgressOptions
from orchestrator.plan import plan_rows, render_plan
from orchestrator.progress import SWEEP_RUNNING
from orchestrator.resource_plan import BENCHMARKED, measured_throughput, render_resources
from orchestrator.spec import DEFAULT_STORAGE_PATH, SpecError, SweepSpec, load_spec
from orchestrator.status import TrialEstimates, read_status, render_status
from orchestrator.storage import is_uri, remote_exists, storage_root
from orchestrator.wandb.views import describe_runs, publish_analysis, sync_runs

EXIT_USER_ERROR = 2


def cmd_plan(
    file: Path,
    overrides: list[str],
    *,
    cluster: Path | None = None,
    address: str | None = None,
    measured: Path | None = None,
) -> int:
    """Validate a search space and print one row per trial, the resources it needs, the
    GPU-hours, and the makespan and utilisation on a cluster; starts no Ray (unless --address)."""
    spec = load_spec(file, overrides)
    rows = plan_rows(spec)
    print(render_plan(spec, rows))
    capacities = [load_cluster_file(cluster)] if cluster else []
    if address:
        capacities.append(probe(address))
    measured = measured or _previous_run(spec)
    throughput = measured_throughput(measured) if measured else BENCHMARKED
    text, errors = render_resources(spec, rows, capacities, throughput)
    print(text)
    if errors:
        raise ClusterError("; ".join(errors))
    return 0


def _local_root(spec: SweepSpec) -> Path:
    """Where ``run`` puts experiment directories: with a cloud storage_path, the local copies."""
    return Path(DEFAULT_STORAGE_PATH if is_uri(spec.storage_path) else spec.storage_path)


def _previous_run(spec: SweepSpec) -> Path | None:
    """The latest experiment directory ``run`` made for this spec's name, if any."""
    pattern = re.compile(rf"{re.escape(spec.name)}(_\d+)?")
    runs = [
        d / "results.csv"
        for d in _local_root(spec).glob(f"{spec.name}*")
        if pattern.fullmatch(d.name) and (d / "results.csv").is_file()
    ]
    return max(runs, key=lambda f: f.stat().st_mtime).parent.resolve() if runs else None


def _free_experiment_dir(base: Path) -> Path:
    """``base`` itself, or ``base_2``, ``base_3``... so a re-run never mixes with an old sweep."""
    candidate, n = base, 1
    while candidate.exists() and not _empty_dir(candidate):
        n += 1
        candidate = base.with_name(f"{base.name}_{n}")
    return candidate


def _empty_dir(path: Path) -> bool:
    return path.is_dir() and not any(path.iterdir())


def _check_experiment_dir(path: Path) -> None:
    """The experiment directory must be new or empty, and makeable: checked before Ray starts,
    without making it (``run`` makes it once Ray is up)."""
    if path.exists() and not path.is_dir():
        raise SpecError(f"--experiment-dir {path} is a file; name a new or empty directory")
    if path.exists() and not _empty_dir(path):
        raise SpecError(f"--experiment-dir {path} exists and is not empty")
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise SpecError(
            f"cannot write the experiment directory {path}: {existing} is not a writable directory"
        )


def cmd_run(
    file: Path,
    overrides: list[str],
    experiment_dir: Path | None,
    address: str | None,
    cluster: Path | None = None,
    wandb: str | None = None,
    progress: ProgressOptions | None = None,
) -> int:
    """Run the sweep on local Ray (default) or a cluster, writing the experiment directory."""
    if wandb:
        overrides = [*overrides, f"wandb.mode={wandb}"]
    spec = load_spec(file, overrides)
    plan_rows(spec)  # fails early on missing data files, before Ray starts
    if experiment_dir is None:
        experiment_dir = _free_experiment_dir(_local_root(spec) / spec.name)
    _check_experiment_dir(experiment_dir)
    remote = storage_root(spec.storage_path, experiment_dir)
    if is_uri(remote) and remote_exists(remote):
        raise SpecError(f"{remote} exists already; pick another -o/--experiment-dir name")
    from orchestrator.sweep import run_sweep  # imports Ray: only when a sweep really runs

    experiment = run_sweep(
        spec, experiment_dir, address=address, cluster_file=cluster, progress=progress
    )
    _print_results(experiment)
    return 0


def cmd_resume(
    experiment_dir: str | Path, address: str | None, progress: ProgressOptions | None = None
) -> int:
    """Continue an interrupted sweep, from its directory or its URI (on any machine): finished
    trials stay, unfinished ones resume."""
    from orchestrator.sweep import resume_sweep  # imports Ray

    experiment = resume_sweep(experiment_dir, address=address, progress=progress)
    _print_results(experiment)
    return 0


def cmd_status(experiment_dir: str, *, watch: float | None = None) -> int:
    """Where a sweep stands, from its experiment directory or its URI: per trial its state,
    epoch, step, latest metric and ETA; the sweep's counts, elapsed time, ETA and GPU-hours."""
    experiment = ExperimentDir.open(experiment_dir)  # a URI: its files, into a working copy
    estimates = TrialEstimates(experiment)
    try:
        while True:
            status = read_status(experiment, estimates=estimates)
            if watch and sys.stdout.isatty():
                print("\033[2J\033[H", end="")  # clear the screen: one screen, redrawn
            print(render_status(status, experiment.location), flush=True)
            if not watch or status.state != SWEEP_RUNNING or status.stale:
                return 0
            time.sleep(watch)
            if is_uri(experiment_dir):
                experiment.pull()  # what the sweep wrote there since
            if not sys.stdout.isatty():
                print()
    except KeyboardInterrupt:  # the way out of --watch
        return 0


def cmd_results(experiment_dir: str | Path) -> int:
    """Print the results table of an experiment directory, or of the one at a URI."""
    return _print_results(ExperimentDir.open(experiment_dir))


def _print_results(experiment: ExperimentDir) -> int:
    table = experiment.read_results()
    primary = experiment.metadata()["primary_metric"]
    columns = ["label", "status", f"best_{primary}"]
    columns += [c for c in table.columns if c.startswith("eval_")]
    columns += ["params_non_embedding", "train_examples", "train_time_s", "trial_wall_s", "error"]
    shown = table[[c for c in columns if c in table.columns]]
    print(shown.to_string(index=False, float_format=lambda v: f"{v:.4g}", na_rep="-"))
    counts = table["status"].value_counts().to_dict()
    print(f"\n{len(table)} trials: " + ", ".join(f"{n} {s}" for s, n in counts.items()))
    where = f"{experiment.home}/results.csv" if experiment.home else experiment.results_csv
    print(f"table: {where}")
    return 0


def cmd_analyze(
    experiment_dir: str | Path,
    *,
    metric: str | None = None,
    target: float | None = None,
    epsilon: float = 0.01,
    price_per_gpu_hour: float | None = None,
    time_budget_s: float | None = None,
    money_budget: float | None = None,
    model: str | None = None,
    flops_budget: float | None = None,
    max_latency_ms: float | None = None,
    latency_percentile: str = "p95",
    latency_batch_size: int | None = None,
    wandb: str | None = None,
) -> int:
    """Fit scaling laws, plot the curves, write the report and print the recommendation (an
    experiment at a URI: analysed in a local copy, its analysis/ written back there)."""
    from orchestrator.analysis import analyze  # pandas/scipy/matplotlib: only for this command

    experiment = ExperimentDir.open(experiment_dir)
    result = analyze(
        experiment.path,
        metric=metric,
        target=target,
        epsilon=epsilon,
        price_per_gpu_hour=price_per_gpu_hour,
        time_budget_s=time_budget_s,
        money_budget=money_budget,
        model=model,
        flops_budget=flops_budget,
        max_latency_ms=max_latency_ms,
        latency_percentile=latency_percentile,
        latency_batch_size=latency_batch_size,
    )
    print(result.render_terminal())
    if experiment.home:
        experiment.sync("analysis")
        print(f"analysis -> {experiment.home}/analysis")
    publish_analysis(experiment.path, result, mode=wandb)  # when the sweep uses W&B
    return 0


def cmd_wandb(experiment_dir: Path, *, sync: bool = False) -> int:
    """List the sweep's W&B runs (ids, state, offline directories); --sync uploads offline ones."""
    print(describe_runs(experiment_dir))
    return sync_runs(experiment_dir) if sync else 0


class _Parser(argparse.ArgumentParser):
    """argparse, with its usage errors in the one line every user error gets (exit 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USER_ERROR, f"error: {message}; see {self.prog} --help\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="scalesweep",
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    overrides_help = "dotted overrides, e.g. train.lr=3e-5 compute.num_workers=2 'seeds=[0,1]'"

    cluster_help = (
        "cluster-launcher YAML (cluster.yaml) or KubeRay manifest: trials start as their gangs "
        "fit its maximum, with every node type at max_workers"
    )

    plan = commands.add_parser("plan", help=cmd_plan.__doc__)
    plan.add_argument("file", type=Path, help="search-space YAML file")
    plan.add_argument("overrides", nargs="*", help=overrides_help)
    plan.add_argument("--cluster", type=Path, help=cluster_help)
    plan.add_argument("--address", help="also plan on this running cluster's current nodes")
    plan.add_argument(
        "--measured",
        type=Path,
        help="experiment directory of a previous sweep whose measured throughput times the "
        "trials (default: the latest run of this spec, else the figures in BENCHMARKS.md)",
    )

    run = commands.add_parser("run", help=cmd_run.__doc__)
    run.add_argument("file", type=Path, help="search-space YAML file")
    run.add_argument("overrides", nargs="*", help=overrides_help)
    run.add_argument(
        "-o",
        "--experiment-dir",
        type=Path,
        help="where results go (default: <storage_path>/<name>, suffixed _2, _3... if taken)",
    )
    run.add_argument(
        "--address",
        help="Ray cluster to join ('auto', ray://host:10001, ...); default: $RAY_ADDRESS, "
        "else a new local Ray instance",
    )
    run.add_argument(
        "--cluster",
        type=Path,
        help=cluster_help + " (default on a `ray up` head: its autoscaler config; else the "
        "cluster's nodes now)",
    )
    _add_progress_options(run)
    wandb_modes = [mode.value for mode in WandbMode]
    run.add_argument(
        "--wandb",
        choices=wandb_modes,
        help="W&B mode, overriding the spec's wandb.mode and $WANDB_MODE (online without an API "
        "key logs offline)",
    )

    resume = commands.add_parser("resume", help=cmd_resume.__doc__)
    location_help = "experiment directory, or its URI (s3://BUCKET/sweeps/NAME)"
    resume.add_argument("experiment_dir", help=location_help)
    resume.add_argument("--address", help="Ray cluster to join (default: as for run)")
    _add_progress_options(resume)

    status = commands.add_parser("status", help=cmd_status.__doc__.split(":")[0])
    status.add_argument("experiment_dir", help=location_help)
    status.add_argument(
        "--watch",
        nargs="?",
        const=5.0,
        type=_seconds,
        metavar="SECONDS",
        help="redraw every SECONDS (default 5) until the sweep is no longer running",
    )

    results = commands.add_parser("results", help=cmd_results.__doc__)
    results.add_argument("experiment_dir", help=location_help)

    analyze = commands.add_parser("analyze", help=cmd_analyze.__doc__)
    analyze.add_argument("experiment_dir", help=location_help)
    analyze.add_argument(
        "--metric", help="metric to analyse (default: the task's primary; 'loss' for eval loss)"
    )
    analyze.add_argument(
        "--target",
        type=float,
        help="metric a recommended model must reach; also the level the convergence figure "
        "times (default: the spec's train.target, else 95 %% of each trial's final metric)",
    )
    analyze.add_argument(
        "--epsilon", type=float, default=0.01, help="tolerance to the best metric (default 0.01)"
    )
    analyze.add_argument("--price-per-gpu-hour", type=float, help="turns GPU-hours into money")
    analyze.add_argument("--time-budget-s", type=float, help="wall-time budget per trial")
    analyze.add_argument("--money-budget", type=float, help="money budget per trial")
    analyze.add_argument(
        "--model",
        help="model for the data-fraction recommendation (its short name, e.g. model-L3, or "
        "model.name as in the spec)",
    )
    analyze.add_argument(
        "--flops-budget",
        type=float,
        help="training FLOPs (6 × non-embedding params × tokens × epochs) to allocate: the joint "
        "law's compute-optimal model size N* and examples D*, with 95 %% intervals",
    )
    analyze.add_argument(
        "--max-latency-ms",
        type=float,
        help="latency budget: the best model whose measured prediction latency (at "
        "--latency-percentile and --latency-batch-size) is within it",
    )
    analyze.add_argument(
        "--latency-percentile",
        choices=["p50", "p95", "p99"],
        default="p95",
        help="percentile the latency budget applies to (default p95)",
    )
    analyze.add_argument(
        "--latency-batch-size",
        type=int,
        help="batch size the latency budget applies to (one of inference.batch_sizes; default: "
        "the smallest measured)",
    )
    analyze.add_argument(
        "--wandb",
        choices=wandb_modes,
        help="W&B mode for uploading the analysis (default: the sweep's, or $WANDB_MODE)",
    )

    wandb = commands.add_parser("wandb", help=cmd_wandb.__doc__)
    wandb.add_argument("experiment_dir", type=Path)
    wandb.add_argument("--sync", action="store_true", help="upload offline runs (`wandb sync`)")
    return parser


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of seconds")
    return value


def _add_progress_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--progress-every",
        type=_seconds,
        default=DEFAULT_PROGRESS_EVERY_S,
        metavar="SECONDS",
        help="how often each running trial reports its step, speed, loss and ETAs, on the "
        f"console and in trials/<id>/progress.json (default {DEFAULT_PROGRESS_EVERY_S:g})",
    )
    parser.add_argument(
        "--quiet",
        action="store_true",
        help="no progress lines within trials (and no live display): only trial starts, "
        "epochs, ends and the sweep's status line; progress records are still written",
    )


def _progress(args: argparse.Namespace) -> ProgressOptions:
    return ProgressOptions(every_s=args.progress_every, quiet=args.quiet)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # SIGTERM (`ray job stop`, `kill`) stops a command as Ctrl-C does; a sweep refines both
    # (orchestrator.sweep._Sweep) once Ray is up.
    on_main_thread = threading.current_thread() is threading.main_thread()
    terminate = signal.signal(signal.SIGTERM, _raise_interrupted) if on_main_thread else None
    try:
        return _dispatch(args)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR
    except OSError as err:  # a path the user gave that is missing, unreadable or unwritable
        where = f"{err.filename}: " if err.filename else ""
        print(f"error: {where}{err.strerror or err}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt as err:
        # A sweep has flushed its rows, saved Tune's state and said how to resume.
        print("interrupted", file=sys.stderr)
        return err.exit_code if isinstance(err, Interrupted) else 128 + signal.SIGINT
    finally:
        if on_main_thread:
            signal.signal(signal.SIGTERM, terminate)


def _raise_interrupted(signum: int, frame) -> None:
    raise Interrupted(signum)


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "plan":
        return cmd_plan(
            args.file,
            args.overrides,
            cluster=args.cluster,
            address=args.address,
            measured=args.measured,
        )
    if args.command == "run":
        address = args.address or os.environ.get("RAY_ADDRESS")
        return cmd_run(
            args.file,
            args.overrides,
            args.experiment_dir,
            address,
            args.cluster,
            wandb=args.wandb,
            progress=_progress(args),
        )
    if args.command == "resume":
        address = args.address or os.environ.get("RAY_ADDRESS")
        return cmd_resume(args.experiment_dir, address, _progress(args))
    if args.command == "status":
        return cmd_status(args.experiment_dir, watch=args.watch)
    if args.command == "analyze":
        options = {k: v for k, v in vars(args).items() if k not in ("command", "experiment_dir")}
        return cmd_analyze(args.experiment_dir, **options)
    if args.command == "wandb":
        return cmd_wandb(args.experiment_dir, sync=args.sync)
    return cmd_results(args.experiment_dir)


if __name__ == "__main__":
    sys.exit(main())
