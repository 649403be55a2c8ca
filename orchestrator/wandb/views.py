"""The sweep in Weights & Biases, seen from the driver process (no Ray, no torch).

``SweepTracking`` decides the mode once per sweep (online without an API key: offline, said in
one line), opens the sweep's summary run first (a dead server costs one timeout, not one per
trial) and gives each trial its ``TrialTracking``; when the sweep ends it logs the results table
and the scaling charts there. ``publish_analysis`` uploads what ``scalesweep analyze`` wrote;
``describe_runs`` and ``sync_runs`` are ``scalesweep wandb``. The experiment directory stays the
source of truth: everything here reads it, and a W&B failure is a warning.

``<experiment>/wandb/sweep.json`` keeps the sweep's W&B name, the prefix of every run id, so a
resumed sweep and a later analysis reach the same runs and group.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
from pydantic import ValidationError

from orchestrator.errors import UserError
from orchestrator.experiment import ExperimentDir
from orchestrator.spec import SpecError, read_spec_mapping
from contract.tracking import TrialTracking, WandbMode, open_run, run_id, warn
from orchestrator.wandb.settings import WandbConfig, has_credentials, wandb_environment
from orchestrator.wandb.offline import RunFile, RunLog, find_run_files, read_run

if TYPE_CHECKING:
    from orchestrator.analysis import AnalysisResult
    from orchestrator.spec import SweepSpec

__all__ = ["SweepTracking", "describe_runs", "publish_analysis", "sync_runs"]

SWEEP_FILE = "sweep.json"
SUMMARY, ANALYSIS = "summary", "analysis"  # run ids of the sweep's own runs, after the prefix


def _notice(message: str) -> None:
    print(f"W&B: {message}", file=sys.stderr, flush=True)


def _usable(config: WandbConfig, experiment: Path) -> WandbConfig:
    """Online needs a key; without one, say so once and log offline instead."""
    if config.mode is WandbMode.online and not has_credentials():
        _notice(
            "mode online but no API key (set WANDB_API_KEY or run `wandb login`); logging "
            f"offline instead: upload later with `scalesweep wandb {experiment} --sync`"
        )
        return config.model_copy(update={"mode": WandbMode.offline})
    return config


def _identity(experiment: Path, config: WandbConfig) -> dict[str, str]:
    """The sweep's W&B name and group, made once and kept in <experiment>/wandb/sweep.json.

    The name is the directory's name plus a random token: two sweeps of the same search space
    (on two machines, say) never share run ids, or a group unless the spec names one.
    """
    path = experiment / "wandb" / SWEEP_FILE
    if path.is_file():
        identity = json.loads(path.read_text())
    else:
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", experiment.name)[:40]
        identity = {"sweep": f"{slug}-{secrets.token_hex(3)}"}
    identity |= {
        "project": config.project,
        "entity": config.entity,
        "group": config.group or identity["sweep"],
    }
    # Through the experiment directory: with a URI storage_path, it reaches the home too.
    ExperimentDir(experiment).write_file(f"wandb/{SWEEP_FILE}", json.dumps(identity, indent=2))
    return identity


def _open_sweep_run(
    config: WandbConfig,
    identity: dict[str, str],
    experiment: Path,
    kind: str,
    job_type: str,
    name: str,
    run_config: dict[str, Any],
) -> tuple[Any, WandbMode] | None:
    """One of the sweep's own runs (``kind``: SUMMARY or ANALYSIS) in its W&B group."""
    return open_run(
        config.mode,
        project=config.project,
        entity=config.entity,
        group=identity["group"],
        job_type=job_type,
        id=run_id(identity["sweep"], kind),
        name=name,
        tags=[*config.tags, job_type],
        config=run_config | {"sweep": identity["sweep"]},
        dir=str(experiment),
    )


@dataclass
class SweepTracking:
    """W&B for one sweep: ``trials`` goes to every trial (None: W&B is off); ``run`` is the
    summary run, open from start to ``finish``."""

    experiment: Path
    trials: TrialTracking | None = None
    run: Any = None

    @classmethod
    def start(cls, spec: SweepSpec, experiment: Path) -> SweepTracking:
        """Open the summary run of ``spec``'s sweep in ``experiment``; off when W&B is."""
        if not spec.wandb.enabled:
            return cls(experiment)
        config = _usable(spec.wandb, experiment)
        identity = _identity(experiment, config)
        opened = _open_sweep_run(
            config,
            identity,
            experiment,
            SUMMARY,
            "sweep-summary",
            f"{spec.name} summary",
            {"spec": spec.to_dict()},
        )
        if opened is None:
            warn("this sweep runs without W&B; its results are in the experiment directory")
            return cls(experiment)
        run, mode = opened
        trials = TrialTracking(
            mode=mode,
            project=config.project,
            entity=config.entity,
            group=identity["group"],
            tags=config.tags,
            log_every_steps=config.log_every_steps,
            dir=str(experiment),
            sweep=identity["sweep"],
            axes=spec.axis_names(),
        )
        _notice(f"{mode.value}, project {config.project!r}, group {identity['group']!r}")
        return cls(experiment, trials, run)

    def finish(self) -> None:
        """Log the results table and scaling charts, close the summary run, and say where the
        runs are and which trials have none. Never raises."""
        if self.run is None:
            return
        run, self.run = self.run, None
        try:
            if ExperimentDir(self.experiment).results_csv.is_file():  # else no trial started
                _log_results(run, self.experiment, self.trials.sweep)
        except Exception as err:  # the results are safe on disk whatever W&B does
            warn(f"could not log the results table and charts: {err}")
        _close(run)
        self._check_trial_runs()
        _where(self.experiment, self.trials.mode, run)

    def _check_trial_runs(self) -> None:
        try:
            table = ExperimentDir(self.experiment).read_results()
        except FileNotFoundError:
            return
        have = {f.run_id for f in find_run_files(self.experiment / "wandb")}
        missing = [
            label
            for trial_id, label in zip(table["trial_id"], table["label"], strict=True)
            if run_id(self.trials.sweep, trial_id) not in have
        ]
        if missing:
            warn(
                f"no run files here for {len(missing)} trial(s) ({', '.join(missing[:3])}"
                f"{', ...' if len(missing) > 3 else ''}): W&B failed in the worker (see Ray's "
                "worker logs), or the trial ran on another node of a cluster"
            )


def _close(run: Any) -> None:
    try:
        run.finish()
    except Exception as err:
        warn(f"could not close run {run.id}: {err}")


def _where(experiment: Path, mode: WandbMode, run: Any) -> None:
    """Tell the user where to look: the project page online, or how to upload offline runs."""
    pending = _pending(experiment)
    if mode is WandbMode.online:
        _notice(f"runs at {run.project_url}")
    if pending:
        runs = len({f.run_id for f in pending})
        _notice(
            f"{runs} run(s) offline in {experiment / 'wandb'}; upload with "
            f"`scalesweep wandb {experiment} --sync` (or `wandb sync {experiment / 'wandb'}`)"
        )


def _log_results(run: Any, experiment: Path, sweep: str) -> None:
    import wandb

    results = ExperimentDir(experiment).read_results()
    results.insert(1, "wandb_run_id", [run_id(sweep, t) for t in results["trial_id"]])
    primary = ExperimentDir(experiment).metadata()["primary_metric"]
    best = f"best_{primary}"
    summary: dict[str, Any] = {
        "trials": len(results),
        "finished": int((results["status"] == "TERMINATED").sum()),
        "failed": int((results["status"] == "ERROR").sum()),
    }
    if best in results and results[best].notna().any():
        top = results.loc[results[best].idxmax()]
        summary |= {best: float(top[best]), "best_trial": top["label"]}
    # NaN (a failed trial's metrics) becomes an empty cell, not a float among strings.
    cells = results.astype(object).where(results.notna(), None)
    table = wandb.Table(dataframe=cells, allow_mixed_types=True)
    run.log({"results": table, **_scaling_charts(experiment)})
    run.summary.update(summary)


def _scaling_charts(experiment: Path) -> dict[str, Any]:
    """The analysis' scaling views as W&B line charts; none before a trial has finished."""
    import wandb

    from orchestrator.analysis import scaling_series  # pandas/scipy: only when W&B is on

    return {
        f"scaling/{s.name}": wandb.plot.line_series(
            xs=s.xs, ys=s.ys, keys=s.keys, title=s.title, xname=s.x_name
        )
        for s in scaling_series(experiment)
    }


def _analysis_config(experiment: Path, mode: str | None) -> WandbConfig:
    """The sweep's ``wandb`` settings from its spec.yaml; the mode from ``mode``, else
    WANDB_MODE, else the spec (a sweep without a ``wandb`` section: disabled)."""
    spec_file = experiment / "spec.yaml"
    try:
        raw = read_spec_mapping(spec_file) if spec_file.is_file() else {}
    except SpecError as err:  # a damaged directory: the analysis stands, its upload cannot
        raise UserError(f"{err}; the analysis is written, its W&B upload skipped") from None
    section = dict(raw.get("wandb") or {"mode": WandbMode.disabled.value})
    try:
        env_mode = wandb_environment(os.environ).get("mode")
    except ValueError as err:
        raise UserError(str(err)) from None
    section["mode"] = mode or env_mode or section.get("mode")
    try:
        return WandbConfig.model_validate(section)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise UserError(f"{spec_file}: wandb.{where}: {first['msg']}") from None


def publish_analysis(experiment: Path, result: AnalysisResult, *, mode: str | None = None) -> None:
    """Upload an analysis (plots, report, summary) to the sweep's ``analysis`` run, when the
    sweep uses W&B (or ``mode`` asks for it). Never raises for a W&B failure."""
    experiment = Path(experiment).resolve()
    config = _analysis_config(experiment, mode)
    if not config.enabled:
        return
    config = _usable(config, experiment)
    identity = _identity(experiment, config)
    name = f"{result.summary['experiment']['name']} analysis"
    opened = _open_sweep_run(
        config,
        identity,
        experiment,
        ANALYSIS,
        "analysis",
        name,
        {"options": result.summary["options"]},
    )
    if opened is None:
        return
    run, mode_used = opened
    try:
        import wandb

        media = {
            f"analysis/{path.stem}": wandb.Image(str(path))
            for path in result.paths.values()
            if path.suffix == ".png"
        }
        report = result.paths["report.html"]
        media["analysis/report"] = wandb.Html(report.read_text())  # plots are inlined in it
        run.log(media)
        run.summary.update(
            {k: result.summary[k] for k in ("recommendation", "trials", "reference_workers")}
        )
        artifact = wandb.Artifact(f"{identity['sweep']}-analysis", type="analysis")
        artifact.add_dir(str(report.parent))
        run.log_artifact(artifact)
    except Exception as err:  # the analysis is safe on disk whatever W&B does
        warn(f"could not upload the analysis: {err}")
    _close(run)
    _where(experiment, mode_used, run)


def _kind(run_log_id: str, sweep: str | None) -> str:
    if sweep and run_log_id in (run_id(sweep, SUMMARY), run_id(sweep, ANALYSIS)):
        return run_log_id.rsplit("-", 1)[-1]
    return "trial"


def describe_runs(experiment: Path) -> str:
    """A table of the sweep's W&B runs: id, kind, name, state, mode, synced, directory."""
    experiment = Path(experiment).resolve()
    identity_file = experiment / "wandb" / SWEEP_FILE
    if not identity_file.is_file():
        raise UserError(f"{experiment}: no W&B runs (no wandb/{SWEEP_FILE}; W&B was off)")
    identity = json.loads(identity_file.read_text())
    files = find_run_files(experiment / "wandb")
    rows = []
    for file in files:
        try:
            log = read_run(file.path)
            state = {None: "running/killed", 0: "finished"}.get(log.exit_code, "failed")
        except Exception:  # a foreign or damaged file must not hide the others
            log, state = RunLog(), "unreadable"
        rows.append(
            {
                "run id": file.run_id,
                "kind": _kind(file.run_id, identity["sweep"]),
                "name": log.name,
                "state": state,
                "mode": "offline" if file.offline else "online",
                "synced": "yes" if file.synced or not file.offline else "no",
                "directory": str(file.directory),
            }
        )
    header = (
        f"W&B project {identity['project']!r}"
        + (f" (entity {identity['entity']!r})" if identity.get("entity") else "")
        + f", group {identity['group']!r}: {len({f.run_id for f in files})} run(s)"
    )
    if not rows:
        return header
    table = pd.DataFrame(rows).to_string(index=False)
    pending = sum(row["synced"] == "no" for row in rows)
    footer = f"\n{pending} offline file(s) not uploaded yet" if pending else ""
    return f"{header}\n{table}{footer}"


def _pending(experiment: Path) -> list[RunFile]:
    return [f for f in find_run_files(experiment / "wandb") if f.offline and not f.synced]


def sync_runs(experiment: Path) -> int:
    """Upload the sweep's offline runs with ``wandb sync``; its exit status."""
    experiment = Path(experiment).resolve()
    pending = _pending(experiment)
    if not pending:
        print("W&B: nothing to upload")
        return 0
    if not has_credentials():
        raise UserError("W&B: no API key: set WANDB_API_KEY or run `wandb login`, then retry")
    # Oldest first: the pieces of a resumed run are replayed in order.
    directories = [str(f.directory) for f in pending]
    return subprocess.run([sys.executable, "-m", "wandb", "sync", *directories]).returncode
