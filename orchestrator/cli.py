"""``scalesweep``: plan, run and inspect scaling sweeps of BERT fine-tuning.

Examples:
  scalesweep plan search_spaces/quickstart.yaml
  scalesweep run search_spaces/quickstart.yaml
  scalesweep run search_spaces/mrpc_bert_ladder.yaml train.lr=3e-5 --address auto
  scalesweep run search_spaces/quickstart.yaml 'axes.model.name=[bert-tiny]' -o experiments/try1
  scalesweep results experiments/quickstart
  scalesweep analyze experiments/quickstart --target 0.8 --price-per-gpu-hour 2.5
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from orchestrator.errors import UserError
from orchestrator.experiment import ExperimentDir
from orchestrator.plan import plan_rows, render_plan
from orchestrator.spec import SpecError, load_spec

EXIT_USER_ERROR = 2


def cmd_plan(file: Path, overrides: list[str]) -> int:
    """Validate a search space and print one row per trial, with totals; starts no Ray."""
    spec = load_spec(file, overrides)
    print(render_plan(spec, plan_rows(spec)))
    return 0


def _free_experiment_dir(base: Path) -> Path:
    """``base`` itself, or ``base_2``, ``base_3``... so a re-run never mixes with an old sweep."""
    candidate, n = base, 1
    while candidate.exists() and any(candidate.iterdir()):
        n += 1
        candidate = base.with_name(f"{base.name}_{n}")
    return candidate


def cmd_run(
    file: Path, overrides: list[str], experiment_dir: Path | None, address: str | None
) -> int:
    """Run the sweep on local Ray (default) or a cluster, writing the experiment directory."""
    spec = load_spec(file, overrides)
    plan_rows(spec)  # fails early on missing data files, before Ray starts
    if experiment_dir is None:
        experiment_dir = _free_experiment_dir(Path(spec.storage_path) / spec.name)
    elif experiment_dir.exists() and any(experiment_dir.iterdir()):
        raise SpecError(f"--experiment-dir {experiment_dir} exists and is not empty")
    from orchestrator.sweep import run_sweep  # imports Ray: only when a sweep really runs

    path = run_sweep(spec, experiment_dir, address=address)
    cmd_results(path)
    return 0


def cmd_results(experiment_dir: Path) -> int:
    """Print the results table of an experiment directory."""
    experiment = ExperimentDir(experiment_dir)
    table = experiment.read_results()
    primary = experiment.metadata()["primary_metric"]
    columns = ["label", "status", f"best_{primary}"]
    columns += [c for c in table.columns if c.startswith("eval_")]
    columns += ["params_non_embedding", "train_examples", "train_time_s", "trial_wall_s", "error"]
    shown = table[[c for c in columns if c in table.columns]]
    print(shown.to_string(index=False, float_format=lambda v: f"{v:.4g}", na_rep="-"))
    counts = table["status"].value_counts().to_dict()
    print(f"\n{len(table)} trials: " + ", ".join(f"{n} {s}" for s, n in counts.items()))
    print(f"table: {experiment.results_csv}")
    return 0


def cmd_analyze(
    experiment_dir: Path,
    *,
    metric: str | None = None,
    target: float | None = None,
    epsilon: float = 0.01,
    price_per_gpu_hour: float | None = None,
    time_budget_s: float | None = None,
    money_budget: float | None = None,
    model: str | None = None,
) -> int:
    """Fit scaling laws, plot the curves, write the report and print the recommendation."""
    from orchestrator.analysis import analyze  # pandas/scipy/matplotlib: only for this command

    result = analyze(
        experiment_dir,
        metric=metric,
        target=target,
        epsilon=epsilon,
        price_per_gpu_hour=price_per_gpu_hour,
        time_budget_s=time_budget_s,
        money_budget=money_budget,
        model=model,
    )
    print(result.render_terminal())
    print(f"\nreport: {result.paths['report.html']}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scalesweep",
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    overrides_help = "dotted overrides, e.g. train.lr=3e-5 compute.num_workers=2 'seeds=[0,1]'"

    plan = commands.add_parser("plan", help=cmd_plan.__doc__)
    plan.add_argument("file", type=Path, help="search-space YAML file")
    plan.add_argument("overrides", nargs="*", help=overrides_help)

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

    results = commands.add_parser("results", help=cmd_results.__doc__)
    results.add_argument("experiment_dir", type=Path)

    analyze = commands.add_parser("analyze", help=cmd_analyze.__doc__)
    analyze.add_argument("experiment_dir", type=Path)
    analyze.add_argument(
        "--metric", help="metric to analyse (default: the task's primary; 'loss' for eval loss)"
    )
    analyze.add_argument("--target", type=float, help="metric a recommended model must reach")
    analyze.add_argument(
        "--epsilon", type=float, default=0.01, help="tolerance to the best metric (default 0.01)"
    )
    analyze.add_argument("--price-per-gpu-hour", type=float, help="turns GPU-hours into money")
    analyze.add_argument("--time-budget-s", type=float, help="wall-time budget per trial")
    analyze.add_argument("--money-budget", type=float, help="money budget per trial")
    analyze.add_argument("--model", help="model for the data-fraction recommendation")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "plan":
            return cmd_plan(args.file, args.overrides)
        if args.command == "run":
            address = args.address or os.environ.get("RAY_ADDRESS")
            return cmd_run(args.file, args.overrides, args.experiment_dir, address)
        if args.command == "analyze":
            options = {
                k: v for k, v in vars(args).items() if k not in ("command", "experiment_dir")
            }
            return cmd_analyze(args.experiment_dir, **options)
        return cmd_results(args.experiment_dir)
    except (UserError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR


if __name__ == "__main__":
    sys.exit(main())
