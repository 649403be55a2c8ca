"""The experiment directory: the sweep's source of truth on disk (no Ray needed to read it).

<dir>/spec.yaml                     the resolved search space, overrides applied
<dir>/experiment.json               name, primary metric, axes, seeds, trial count, planned cells
<dir>/results.csv                   one row per trial (rewritten as trials start and end)
<dir>/progress.json                 the sweep's state, elapsed time and ETA (orchestrator.progress)
<dir>/trials/<trial_id>/config.json the trial's full config
<dir>/trials/<trial_id>/history.jsonl  one EpochRow per line, as reported
<dir>/trials/<trial_id>/progress.json  the trial's latest progress within its epoch
<dir>/trials/<trial_id>/error.txt   the traceback of a failed trial
<dir>/tune/, <dir>/train/           Ray Tune and Ray Train state (restore, checkpoints)
<dir>/wandb/                        W&B run files (a view of the above; sweep.json: its W&B name)
<dir>/analysis/                     what `analyze` wrote

With a URI storage_path the experiment lives at ``<storage_path>/<name>`` (its home), where
every file above is written as it is written locally; ``tune/`` and ``train/`` are only there.

``Ledger`` keeps the books while a sweep runs: which trials started, finished or failed, every
epoch once (whatever restarts replay or repeat), and wall time across resumptions. It knows
nothing of Ray: the sweep's Tune callback only translates Tune's events into its calls.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from contract.config import TrialConfig
from contract.rows import REQUIRED_RESULT_FIELDS, EpochRow
from orchestrator.errors import UserError
from orchestrator.progress import SweepProgress, TrialProgress
from orchestrator.spec import SweepSpec
from orchestrator.storage import ArrowStore, LocalStore, StorageError, is_uri, working_copy

__all__ = [
    "CORE_AXES",
    "METADATA_KEYS",
    "STATUS_COLUMNS",
    "TRIAL_COLUMNS",
    "ExperimentDir",
    "ExperimentError",
    "Ledger",
    "TrialRecord",
    "summarize_error",
]

CORE_AXES = ("model.name", "model.num_layers", "data.train_fraction", "compute.num_workers")
# What the sweep knows of each trial beside its config and rows: results.csv's first columns.
STATUS_COLUMNS = ("trial_id", "label", "status", "error")
# The ledger's own columns that every results.csv has had: the trial's resources and wall time.
TRIAL_COLUMNS = ("use_gpu", "gpus_per_worker", "trial_wall_s")
FINISHED, FAILED, RUNNING, INTERRUPTED = "TERMINATED", "ERROR", "RUNNING", "INTERRUPTED"
# In a working copy, local only: the URI of its home; the files the home has not got yet.
HOME_FILE, UNSAVED_FILE = ".home", ".unsaved"
RETRY_S = 30.0  # after a write the home refused, the next attempt


def _mirrored(name: str) -> bool:
    """The files of an experiment's home that a working copy needs: not Tune's and Train's
    state, not W&B's run files (sweep.json, their name, is needed), no half-written file."""
    if name.split("/")[0] in ("tune", "train") or name.endswith(".tmp") or name.startswith("."):
        return False
    return not name.startswith("wandb/") or name.count("/") == 1


def _within(folder: str) -> Callable[[str], bool]:
    return lambda name: name.startswith(folder.rstrip("/") + "/")


def _trial_file(trial_id: str, name: str) -> str:
    return f"trials/{trial_id}/{name}"


def warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr, flush=True)


# What experiment.json holds, and every reader relies on.
METADATA_KEYS = ("name", "primary_metric", "axes", "seeds", "num_trials")


class ExperimentError(UserError):
    """An experiment directory whose files cannot be read as ``run`` writes them, in one line."""


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
    history: list[EpochRow] = field(default_factory=list)
    wall_s: float | None = None
    retries: int = 0  # Tune-level retries after the trial errored (spec: trial_retries)

    @property
    def label(self) -> str:
        return TrialConfig.model_validate(self.config).label()

    def row(self, axes: list[str], primary_metric: str) -> dict[str, Any]:
        """The trial's line in results.csv: status, axes, resources, then the last epoch's
        row (its trial-level fields) and the best score of any epoch."""
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
        # The columns every trial reports are there (empty) before its first epoch, too.
        row |= dict.fromkeys(REQUIRED_RESULT_FIELDS)
        row |= self.history[-1].results() if self.history else {}
        if self.history:
            row[f"best_{primary_metric}"] = max(r.score(primary_metric) for r in self.history)
        return row


class ExperimentDir:
    """Reads and writes one sweep's directory; every write leaves a complete, readable file.

    ``path`` is the local directory. With a ``home`` (a URI: the sweep's storage_path is one) it
    is the working copy of the experiment that lives there: every write lands in both, as it
    happens (``write_file``), so the home holds the whole directory at any moment; Tune's and
    Train's state is there too (``tune/``, ``train/``). A working copy remembers its home, and
    any file the home has not got yet, in local files of its own (never copied there).
    """

    def __init__(self, path: str | Path, *, home: str | None = None) -> None:
        self.path = Path(path).resolve()
        self._local = LocalStore(self.path)
        if home is None and self._local.exists(HOME_FILE):
            home = self._local.read(HOME_FILE).decode().strip()
        self.home = home
        self._remote = ArrowStore(home) if home else None
        # Written here, not yet in the home (it refused them): written there first, next time.
        self._unsaved: set[str] = set()
        if home and self._local.exists(UNSAVED_FILE):
            self._unsaved = set(self._local.read(UNSAVED_FILE).decode().split())
        self._retry_at = 0.0

    @classmethod
    def open(cls, location: str | Path) -> ExperimentDir:
        """The experiment at a local path, or at a URI: its files (all but Tune's and Train's
        state and W&B's run files) are brought into a local working copy first (``pull``)."""
        if not is_uri(str(location)):
            return cls(location)
        uri = str(location).rstrip("/")
        experiment = cls(working_copy(uri), home=uri)
        experiment.pull()
        return experiment

    @property
    def location(self) -> str:
        """Where the experiment lives: its home, else its local path (what to tell the user)."""
        return self.home or str(self.path)

    @property
    def storage(self) -> str:
        """Where Tune and Train keep their state (``tune/``, ``train/``)."""
        return self.location

    @property
    def results_csv(self) -> Path:
        return self.path / "results.csv"

    def trial_dir(self, trial_id: str) -> Path:
        return self.path / "trials" / trial_id

    def write_file(self, name: str, text: str) -> None:
        """Write ``name`` (relative, e.g. "trials/<id>/history.jsonl") whole: locally, then in
        the home. Any small file of the experiment goes through here. A home that refuses a
        write (the network, the store) costs a warning; what it missed is written again with
        a later write (every ``RETRY_S`` at most), and at the end of the sweep (``sync``)."""
        self._local.write(name, text.encode())
        if self._remote is None:
            return
        self._unsaved.add(name)
        if time.monotonic() >= self._retry_at:
            self._push()

    def remove_file(self, name: str) -> None:
        self._local.delete(name)
        if self._remote is not None:
            self._unsaved.discard(name)
            self._remote.delete(name)

    def sync(self, *folders: str) -> None:
        """Write again what the home refused, and copy ``folders`` (e.g. W&B's offline run
        files, "wandb") there whole; says what still could not be written."""
        if self._remote is None:
            return
        for folder in folders:
            self._unsaved |= set(self._local.names(_within(folder)))
        if error := self._push():
            warn(
                f"{len(self._unsaved)} file(s) did not reach {self.home} ({error}); the local "
                f"copy {self.path} has them, and writes them there first when the sweep resumes"
            )

    def pull(self) -> None:
        """Make the local working copy what the home holds (``resume``, and ``open`` of a URI);
        first, what the home has not got yet from here."""
        assert self._remote is not None
        try:
            if error := self._push():
                raise error
            if not self._remote.exists("experiment.json"):
                raise FileNotFoundError(
                    f"{self.home}: not an experiment directory (no experiment.json)"
                )
            for name in self._remote.names(_mirrored):
                self._local.write(name, self._remote.read(name))
        except FileNotFoundError:
            raise
        except OSError as err:
            raise StorageError(f"cannot read {self.home}: {err}") from None
        self._local.write(HOME_FILE, self.home.encode())

    def _push(self) -> OSError | None:
        """Write what the home has not got; the error that stopped it, if one did."""
        assert self._remote is not None
        failed = bool(self._retry_at)
        try:
            for name in sorted(self._unsaved):
                self._remote.write(name, self._local.read(name))
                self._unsaved.discard(name)
        except OSError as err:
            if not failed:
                warn(f"could not write to {self.home} ({err}); retrying every {RETRY_S:.0f} s")
            self._retry_at = time.monotonic() + RETRY_S
            self._local.write(UNSAVED_FILE, "\n".join(sorted(self._unsaved)).encode())
            return err
        if failed or self._local.exists(UNSAVED_FILE):
            self._retry_at = 0.0
            self._local.delete(UNSAVED_FILE)
        return None

    def create(self, spec: SweepSpec) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        if self.home:
            self._local.write(HOME_FILE, self.home.encode())
        self.write_file("spec.yaml", yaml.safe_dump(spec.to_dict(), sort_keys=False))
        axes = spec.axis_names()
        meta = {
            "name": spec.name,
            "primary_metric": spec.trials[0].primary_metric(),
            "axes": axes,
            "seeds": spec.all_seeds(),
            "num_trials": len(spec.trials),
            # Each trial's axis values: which cells the analysis should expect, and with how
            # many seeds (a union of grids plans no product).
            "planned": [
                {axis: _get(point, axis) for axis in dict.fromkeys([*CORE_AXES, *axes])}
                for point in spec.points()
            ],
        }
        self.write_file("experiment.json", json.dumps(meta, indent=2))

    def metadata(self) -> dict[str, Any]:
        """experiment.json, checked to hold what every reader relies on."""
        path = self.path / "experiment.json"
        if not path.is_file():
            raise ExperimentError(f"{path} not found: not an experiment directory written by `run`")
        try:
            meta = json.loads(path.read_bytes().decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
            raise ExperimentError(f"{path} is not valid JSON ({_first_line(err)})") from None
        if not isinstance(meta, dict):
            raise ExperimentError(f"{path} holds a JSON {type(meta).__name__}, not an object")
        absent = [key for key in METADATA_KEYS if key not in meta]
        if absent:
            raise ExperimentError(f"{path} lacks key(s): {', '.join(absent)}")
        if not isinstance(meta["primary_metric"], str) or not isinstance(meta["axes"], list):
            raise ExperimentError(f"{path}: primary_metric must be a name, axes a list")
        return meta

    def start_trial(self, record: TrialRecord) -> None:
        self.write_file(
            _trial_file(record.trial_id, "config.json"), json.dumps(record.config, indent=2)
        )
        self.write_file(_trial_file(record.trial_id, "history.jsonl"), "")

    def append_history(self, trial_id: str, row: EpochRow) -> None:
        # The whole file again: an object store cannot append, and the file is one line per epoch.
        path = self.trial_dir(trial_id) / "history.jsonl"
        held = path.read_text() if path.is_file() else ""
        if held and not held.endswith("\n"):
            held = held[: held.rfind("\n") + 1]  # a torn last line (from an older version)
        self.write_file(
            _trial_file(trial_id, "history.jsonl"), held + json.dumps(row.to_dict()) + "\n"
        )

    def write_error(self, trial_id: str, text: str) -> None:
        self.write_file(_trial_file(trial_id, "error.txt"), text)

    def write_results(self, records: list[TrialRecord]) -> pd.DataFrame:
        meta = self.metadata()
        rows = [r.row(meta["axes"], meta["primary_metric"]) for r in records]
        table = pd.DataFrame(rows)
        self.write_file("results.csv", table.to_csv(index=False))
        return table

    def read_results(self) -> pd.DataFrame:
        """results.csv, checked as the sweep writes it: every row complete (a file cut off
        mid-line is an error, not a row of blanks), numbers where numbers belong."""
        path = self.results_csv
        if not path.is_file():
            raise FileNotFoundError(
                f"{self.location}: no results.csv (is this an experiment directory?)"
            )
        try:
            text = path.read_bytes().decode("utf-8")
        except UnicodeDecodeError as err:
            raise ExperimentError(f"{path}: not UTF-8 text (byte {err.start})") from None
        reader = csv.reader(io.StringIO(text, newline=""))
        try:
            records = [(reader.line_num, row) for row in reader if row]
        except csv.Error as err:
            raise ExperimentError(f"{path}: line {reader.line_num}: not CSV ({err})") from None
        if not records:
            raise ExperimentError(f"{path} is empty: no header row")
        header = records[0][1]
        for line, row in records[1:]:
            if len(row) != len(header):
                raise ExperimentError(
                    f"{path}: line {line} has {len(row)} field(s) where the header has "
                    f"{len(header)}: the file is cut off or was edited"
                )
        absent = [c for c in STATUS_COLUMNS if c not in header]
        duplicated = sorted({c for c in header if header.count(c) > 1})
        if absent or duplicated:
            problem = f"lacks column(s) {absent}" if absent else f"repeats column(s) {duplicated}"
            raise ExperimentError(f"{path} {problem}: not a results table written by `run`")
        try:
            table = pd.read_csv(
                io.StringIO(text),
                keep_default_na=False,
                na_values=[""],
                dtype={c: str for c in (*STATUS_COLUMNS, "model.name") if c in header},
            )
        except (ValueError, pd.errors.ParserError) as err:
            raise ExperimentError(f"{path}: not a results table ({_first_line(err)})") from None
        for index in table.index[table["trial_id"].isna()][:1]:
            raise ExperimentError(f"{path}: line {records[index + 1][0]}: no trial_id")
        for column in [c for c in table.columns if _is_numeric_column(c)]:
            for index, value in table[column].items():
                if not _is_number(value):
                    raise ExperimentError(
                        f"{path}: line {records[index + 1][0]}, column {column!r}: {value!r} is "
                        "not a number"
                    )
            table[column] = pd.to_numeric(table[column], errors="coerce")
        return table

    def read_history(self, trial_id: str) -> list[EpochRow]:
        """The trial's rows; a torn last line (a driver killed mid-write) is left out."""
        rows = []
        for record in self.history_records(trial_id)[0]:
            with contextlib.suppress(TypeError):  # a required field missing: not a row
                rows.append(EpochRow.from_dict(record))
        return rows

    def history_records(self, trial_id: str) -> tuple[list[dict[str, Any]], int]:
        """The lines of history.jsonl that are records (a JSON object with an epoch, every
        number of EpochRow a number), and how many lines were skipped: a torn last line (a
        driver killed mid-write), or anything else."""
        path = self.trial_dir(trial_id) / "history.jsonl"
        if not path.is_file():
            return [], 0
        records, skipped = [], 0
        for line in path.read_bytes().decode("utf-8", errors="replace").splitlines():
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except (ValueError, RecursionError):  # JSONDecodeError is a ValueError
                record = None
            if _is_record(record):
                records.append(record)
            else:
                skipped += 1
        return records, skipped

    def rewrite_history(self, trial_id: str, rows: list[EpochRow]) -> None:
        text = "".join(json.dumps(row.to_dict()) + "\n" for row in rows)
        self.write_file(_trial_file(trial_id, "history.jsonl"), text)

    def write_progress(self, record: TrialProgress) -> None:
        """The trial's latest progress record (``trials/<id>/progress.json``), replaced whole."""
        self.write_file(_trial_file(record.trial_id, "progress.json"), json.dumps(record.to_dict()))

    def read_progress(self, trial_id: str) -> TrialProgress | None:
        """The trial's latest progress record; None when it has none, or none that reads
        whole (a torn or foreign file is no progress, never an error)."""
        data = _read_json(self.trial_dir(trial_id) / "progress.json")
        try:
            return TrialProgress.from_dict(data) if data is not None else None
        except (KeyError, TypeError, ValueError):
            return None

    def write_sweep_progress(self, record: SweepProgress) -> None:
        self.write_file("progress.json", json.dumps(record.to_dict(), indent=2))

    def read_sweep_progress(self) -> SweepProgress | None:
        """The sweep's progress record; None when missing or unreadable (an older sweep)."""
        data = _read_json(self.path / "progress.json")
        try:
            return SweepProgress.from_dict(data) if data is not None else None
        except (KeyError, TypeError, ValueError):
            return None

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


class Ledger:
    """The books of a running sweep, kept in its experiment directory as events arrive.

    Each method records one event and rewrites results.csv, so an interrupted sweep keeps
    everything that happened. ``clock`` measures wall time (monotonic seconds).
    """

    def __init__(
        self, experiment: ExperimentDir, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.experiment = experiment
        self.clock = clock
        # A resumed sweep starts from what the interrupted run wrote: finished trials keep
        # their rows and histories.
        self.records = {r.trial_id: r for r in experiment.load_records()}
        self.finished_before = {t for t, r in self.records.items() if r.status == FINISHED}
        # When each running trial (re)started, and its wall time before that: a trial's wall
        # time adds up over resumptions, and is saved with every epoch, so a killed driver
        # loses at most the time since the last one.
        self._started: dict[str, tuple[float, float]] = {}
        self._flushing = self._dirty = False

    def record(self, trial_id: str, config: dict[str, Any]) -> TrialRecord:
        if trial_id not in self.records:
            self.records[trial_id] = TrialRecord(trial_id, dict(config))
        return self.records[trial_id]

    def flush(self) -> None:
        """Rewrite results.csv. A signal handler may call ``end`` while a flush is under way:
        the flush under way then writes again, so the last state is the one on disk."""
        self._dirty = True
        if self._flushing or not self.records:  # no trial started yet: no results.csv
            return
        self._flushing = True
        try:
            while self._dirty:
                self._dirty = False
                self.experiment.write_results(list(self.records.values()))
        finally:
            self._flushing = False

    def start(self, trial_id: str, config: dict[str, Any]) -> bool:
        """A trial (re)starts; whether it resumes one that ran before."""
        resumed = trial_id in self.records
        record = self.record(trial_id, config)
        record.status = RUNNING
        self._started[trial_id] = (self.clock(), record.wall_s or 0.0)
        if not resumed:
            self.experiment.start_trial(record)
        self.flush()
        return resumed

    def add_row(self, trial_id: str, config: dict[str, Any], row: EpochRow) -> bool:
        """A reported epoch; False when it is one already recorded (a restarted trial replays
        the rows of its checkpoint first)."""
        record = self.record(trial_id, config)
        if any(_same_epoch_row(row, held) for held in record.history):
            return False
        if record.history and row.epoch <= record.history[-1].epoch:
            # The trial restarted from an earlier checkpoint (or from scratch): its new rows
            # replace the ones it is repeating, so each epoch appears once.
            record.history = [h for h in record.history if h.epoch < row.epoch]
            self.experiment.rewrite_history(trial_id, record.history)
        record.history.append(row)
        self.experiment.append_history(trial_id, row)
        self._update_wall(record)
        self.flush()
        return True

    def finish(self, trial_id: str, config: dict[str, Any], status: str, error: str = "") -> None:
        record = self.record(trial_id, config)
        record.status, record.error = status, error
        self._update_wall(record)
        self.flush()

    def fail(self, trial_id: str, config: dict[str, Any], traceback_text: str) -> str:
        """A trial failed: its traceback saved, its row ERROR with a one-line reason (returned)."""
        self.experiment.write_error(trial_id, traceback_text)
        reason = summarize_error(traceback_text)
        self.finish(trial_id, config, FAILED, reason)
        return reason

    def retry(self, trial_id: str, config: dict[str, Any]) -> TrialRecord:
        """Tune runs a failed trial again (spec: trial_retries); it resumes from its checkpoint."""
        record = self.record(trial_id, config)
        record.retries += 1
        self._update_wall(record)
        self.flush()
        return record

    def end(self) -> None:
        """The sweep stopped: a trial still running is INTERRUPTED (``resume`` continues it).
        Called again, it changes nothing; a trial that goes on reporting keeps its rows."""
        for record in self.records.values():
            if record.status == RUNNING:
                record.status = INTERRUPTED
                self._update_wall(record)
        self.flush()

    def done(self) -> int:
        return sum(r.status in (FINISHED, FAILED) for r in self.records.values())

    def wall_now(self, trial_id: str) -> float | None:
        """A trial's wall time up to now, over all its runs (its saved one when not running)."""
        record = self.records.get(trial_id)
        if record is None or trial_id not in self._started or record.status != RUNNING:
            return record.wall_s if record else None
        since, before = self._started[trial_id]
        return before + self.clock() - since

    def _update_wall(self, record: TrialRecord) -> None:
        if record.trial_id in self._started:
            since, before = self._started[record.trial_id]
            record.wall_s = before + self.clock() - since


def _same_epoch_row(row: EpochRow, held: EpochRow) -> bool:
    """Whether ``row`` repeats ``held``; the checkpoint path is added on the way to Tune, so a
    replayed row lacks it."""
    return dataclasses.replace(row, checkpoint_path=None) == dataclasses.replace(
        held, checkpoint_path=None
    )


# Every results.csv column that holds numbers (empty when unknown): EpochRow's numeric fields,
# the ledger's own, the best score per metric, and the numeric axes the analysis reads.
_NUMERIC_FIELDS = tuple(
    f.name for f in fields(EpochRow) if f.type.split(" |")[0] in ("int", "float")
)
_NUMERIC_COLUMNS = frozenset(
    [
        *_NUMERIC_FIELDS,
        "gpus_per_worker",
        "cpus_per_worker",
        "global_batch",
        "per_worker_batch",
        "epochs_completed",
        "trial_wall_s",
        "trial_retries",
        "model.num_layers",
        "data.train_fraction",
        "compute.num_workers",
        "train.seed",
    ]
)


def _is_record(record: Any) -> bool:
    """Whether a history line holds an epoch's record: its EpochRow numbers are numbers."""
    if not isinstance(record, dict) or "epoch" not in record:
        return False
    numbers = [record[name] for name in _NUMERIC_FIELDS if record.get(name) is not None]
    return all(isinstance(v, int | float) and not isinstance(v, bool) for v in numbers)


def _is_numeric_column(column: str) -> bool:
    return column in _NUMERIC_COLUMNS or column.startswith("best_")


def _is_number(value: Any) -> bool:
    if isinstance(value, int | float):
        return True
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


def _first_line(err: Exception) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


def _read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object from ``path``; None when missing, torn or not an object."""
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def summarize_error(traceback_text: str) -> str:
    """The line of a (possibly nested, multi-worker) traceback that says what went wrong."""
    wrappers = ("WorkerGroupError", "RayTaskError", "TrainingFailedError", "TuneError")
    lines = [line.strip() for line in traceback_text.splitlines() if line.strip()]
    for line in reversed(lines):
        name = line.split(":", 1)[0].rsplit(".", 1)[-1]
        if name.endswith(("Error", "Exception", "Interrupt")) and not name.startswith(wrappers):
            return line[:500]
    return lines[-1][:500] if lines else "unknown error"
