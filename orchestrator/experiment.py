"""The experiment directory: the sweep's source of truth on disk (no Ray needed to read it).

<dir>/spec.yaml                     the resolved search space, overrides applied
<dir>/experiment.json               name, primary metric, axes, seeds, trial count
<dir>/results.csv                   one row per trial (rewritten as trials finish)
<dir>/trials/<trial_id>/config.json the trial's full config
<dir>/trials/<trial_id>/history.jsonl  one row per epoch, as reported
<dir>/trials/<trial_id>/error.txt   the traceback of a failed trial
<dir>/tune/, <dir>/train/           Ray Tune and Ray Train state (restore, checkpoints)
<dir>/wandb/                        W&B run files (a view of the above; sweep.json: its W&B name)
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from orchestrator.config import TrialConfig
from orchestrator.spec import SweepSpec

__all__ = ["CORE_AXES", "ExperimentDir", "TrialRecord", "summarize_error"]

CORE_AXES = ("model.name", "model.num_layers", "data.train_fraction", "compute.num_workers")
# Per-epoch figures that are not carried into the results table as they are.
_EPOCH_ONLY = ("epoch", "epoch_time_s", "eval_time_s", "lr")


def _get(trial: dict[str, Any], dotted: str) -> Any:
    section, key = dotted.split(".", 1)
    return trial[section][key]


@dataclass
class TrialRecord:
    """What the sweep knows about one trial while it runs and after."""

    trial_id: str
    config: dict[str, Any]
    status: str = "PENDING"
    error: str = ""
    history: list[dict[str, Any]] = field(default_factory=list)
    wall_s: float | None = None
    retries: int = 0  # Tune-level retries after the trial errored (spec: trial_retries)

    def row(self, axes: list[str], primary_metric: str) -> dict[str, Any]:
        trial = TrialConfig.model_validate(self.config)
        compute = trial.compute
        row: dict[str, Any] = {
            "trial_id": self.trial_id,
            "label": trial.label(),
            "status": self.status,
            "error": self.error,
        }
        for axis in dict.fromkeys([*CORE_AXES, *axes]):
            row[axis] = _get(self.config, axis)
        row |= {
            "use_gpu": compute.use_gpu,
            "gpus_per_worker": compute.gpus_per_worker if compute.use_gpu else 0,
            "cpus_per_worker": compute.cpus_per_worker,
            "global_batch": compute.global_batch(),
            "per_worker_batch": compute.per_worker_batch(),
            "epochs_completed": len(self.history),
            "trial_wall_s": self.wall_s,
            "trial_retries": self.retries,
        }
        if self.history:
            last = self.history[-1]
            row |= {k: v for k, v in last.items() if k not in _EPOCH_ONLY}
            scores = [h[f"eval_{primary_metric}"] for h in self.history]
            row[f"best_{primary_metric}"] = max(scores)
        return row


class ExperimentDir:
    """Reads and writes one sweep's directory; every write leaves a complete, readable file."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).resolve()

    @property
    def results_csv(self) -> Path:
        return self.path / "results.csv"

    def trial_dir(self, trial_id: str) -> Path:
        return self.path / "trials" / trial_id

    def create(self, spec: SweepSpec) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        _atomic_write(self.path / "spec.yaml", yaml.safe_dump(spec.to_dict(), sort_keys=False))
        meta = {
            "name": spec.name,
            "primary_metric": spec.trials[0].primary_metric(),
            "axes": spec.axis_names(),
            "seeds": spec.seeds,
            "num_trials": len(spec.trials),
        }
        _atomic_write(self.path / "experiment.json", json.dumps(meta, indent=2))

    def metadata(self) -> dict[str, Any]:
        return json.loads((self.path / "experiment.json").read_text())

    def start_trial(self, record: TrialRecord) -> None:
        trial_dir = self.trial_dir(record.trial_id)
        trial_dir.mkdir(parents=True, exist_ok=True)
        _atomic_write(trial_dir / "config.json", json.dumps(record.config, indent=2))
        (trial_dir / "history.jsonl").write_text("")

    def append_history(self, trial_id: str, row: dict[str, Any]) -> None:
        self.trial_dir(trial_id).mkdir(parents=True, exist_ok=True)
        with open(self.trial_dir(trial_id) / "history.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")

    def write_error(self, trial_id: str, text: str) -> None:
        self.trial_dir(trial_id).mkdir(parents=True, exist_ok=True)
        _atomic_write(self.trial_dir(trial_id) / "error.txt", text)

    def write_results(self, records: list[TrialRecord]) -> pd.DataFrame:
        meta = self.metadata()
        rows = [r.row(meta["axes"], meta["primary_metric"]) for r in records]
        table = pd.DataFrame(rows)
        tmp = self.results_csv.with_suffix(".csv.tmp")
        table.to_csv(tmp, index=False)
        os.replace(tmp, self.results_csv)
        return table

    def read_results(self) -> pd.DataFrame:
        if not self.results_csv.is_file():
            raise FileNotFoundError(
                f"{self.path}: no results.csv (is this an experiment directory?)"
            )
        return pd.read_csv(self.results_csv, keep_default_na=False, na_values=[""])

    def read_history(self, trial_id: str) -> list[dict[str, Any]]:
        path = self.trial_dir(trial_id) / "history.jsonl"
        if not path.is_file():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def rewrite_history(self, trial_id: str, rows: list[dict[str, Any]]) -> None:
        text = "".join(json.dumps(row) + "\n" for row in rows)
        _atomic_write(self.trial_dir(trial_id) / "history.jsonl", text)

    def load_records(self) -> list[TrialRecord]:
        """What an earlier run of this sweep left on disk (to resume it without losing rows)."""
        if not self.results_csv.is_file():
            return []
        records = []
        for row in self.read_results().to_dict(orient="records"):
            trial_id = str(row["trial_id"])
            config_file = self.trial_dir(trial_id) / "config.json"
            if not config_file.is_file():
                continue
            wall = row.get("trial_wall_s")
            records.append(
                TrialRecord(
                    trial_id,
                    json.loads(config_file.read_text()),
                    status=row["status"],
                    error="" if pd.isna(row.get("error")) else str(row["error"]),
                    history=self.read_history(trial_id),
                    wall_s=None if pd.isna(wall) else float(wall),
                    retries=int(row.get("trial_retries") or 0),
                )
            )
        return records


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def summarize_error(traceback_text: str) -> str:
    """The line of a (possibly nested, multi-worker) traceback that says what went wrong."""
    wrappers = ("WorkerGroupError", "RayTaskError", "TrainingFailedError", "TuneError")
    lines = [line.strip() for line in traceback_text.splitlines() if line.strip()]
    for line in reversed(lines):
        name = line.split(":", 1)[0].rsplit(".", 1)[-1]
        if name.endswith(("Error", "Exception", "Interrupt")) and not name.startswith(wrappers):
            return line[:500]
    return lines[-1][:500] if lines else "unknown error"
