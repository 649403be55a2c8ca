"""Rank 0's Weights & Biases run of one trial, opened in the worker loop's own process.

Ray's ``setup_wandb`` does not work under Train V2 (it looks up the V1 session: every worker
logs, with empty ids), so rank 0 calls ``wandb.init`` itself, with the run id the sweep derived
from the trial and ``resume="allow"``: a restarted trial continues its run. Every logged number
is aggregated over all workers first. A W&B failure is a warning, never a failed trial: the
experiment directory holds the results whatever happens here.

    with TrialTracker(tracking, trial) as tracker:
        fit(trial, callbacks=[tracker])
"""

from __future__ import annotations

import os
import time
from dataclasses import fields
from types import TracebackType
from typing import Any

from contract.config import TrialConfig
from contract.rows import EpochRow, EvalPoint, score_column
from contract.tracking import MAX_TAG, TrialTracking, open_run, warn
from trainables.distributed import all_reduce, rank_and_world
from trainables.loop import EpochMeter, LoopCallbacks, Progress

__all__ = ["TrialTracker"]

# Each epoch row's fields that are W&B history, under their keys (contract.rows); the rest of
# the row is config or summary.
_HISTORY_KEYS = {f.name: f.metadata["wandb"] for f in fields(EpochRow) if f.metadata["wandb"]}
# Fields the trial's run summary also holds, from the last row, under "<section>/<column>":
# inference, convergence and utilisation figures (contract.rows).
_SUMMARY_SECTIONS = {
    f.name: f.metadata["summary"] for f in fields(EpochRow) if f.metadata["summary"]
}
_DERIVED_KEYS = ("params_total", "params_non_embedding", "train_examples")
_AXES = ("optimizer_step", "examples_seen", "train_time_s")


class TrialTracker(LoopCallbacks):
    """Logs one trial to W&B from rank 0, as loop callbacks; on other ranks (and with
    ``tracking=None``) it only takes part in the all-reduces that every rank must join."""

    def __init__(self, tracking: TrialTracking | dict[str, Any] | None, trial: TrialConfig) -> None:
        self.tracking = None if tracking is None else TrialTracking.model_validate(tracking)
        self.trial = trial
        self.run = None
        self.live = False  # logging goes on: the run opened and no call to it has failed
        self.rows: list[EpochRow] = []
        self.step = 0  # optimizer steps so far, as the loop counts them (restarts included)
        self._epoch = 0
        self._window = (0.0, 0.0, 0.0, 0.0)  # loss sum, examples, tokens, seconds at last log
        self._opened = time.time()

    def __enter__(self) -> TrialTracker:
        if self.tracking is not None and rank_and_world()[0] == 0:
            self.run = self._init()
            self.live = self.run is not None
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        run, self.run, self.live = self.run, None, False
        if run is not None:
            import wandb

            _call(self._write_summary, run, exc)
            _call(run.finish, exit_code=1 if exc else 0)
            # wandb's service process writes the run file out after finish() returns, and Ray
            # may end this worker without running atexit hooks: wait for it here.
            _call(wandb.teardown)

    def on_step(self, progress: Progress, meter: EpochMeter, lr: float) -> None:
        """After every optimizer step, on every rank; every ``log_every_steps`` steps, logs the
        window since the last log, summed over workers (the only time it reads the meter)."""
        self.step = progress.step
        if self.tracking is None or self.step % self.tracking.log_every_steps:
            return
        epoch = progress.epoch + 1  # the epoch under way
        if epoch != self._epoch:
            self._epoch, self._window = epoch, (0.0, 0.0, 0.0, 0.0)
        # Every rank joins the reduce, whether or not rank 0's W&B run is alive.
        totals = all_reduce(list(meter.totals()))
        totals += all_reduce([meter.seconds()], op="max")
        loss, examples, tokens, seconds = (a - b for a, b in zip(totals, self._window, strict=True))
        self._window = tuple(totals)
        if not self.live or examples <= 0 or seconds <= 0:
            return
        self._log(
            {
                "train/loss": loss / examples,
                "train/lr": lr,
                "train/examples_per_s": examples / seconds,
                "train/tokens_per_s": tokens / seconds,
                "epoch": epoch,
                "optimizer_step": self.step,
                "examples_seen": int(progress.examples_seen + totals[1]),
                "train_time_s": progress.train_time_s + totals[3],
            }
        )

    def on_eval(self, point: EvalPoint) -> None:
        """A mid-epoch evaluation: its scores at its optimizer step, beside the epochs' own."""
        if not self.live:
            return
        scores = {score_column(m): v for m, v in point.scores.items()} | {
            "eval_loss": point.eval_loss
        }
        history = {_HISTORY_KEYS[k]: v for k, v in scores.items() if k in _HISTORY_KEYS}
        self._log(
            history
            | {
                "epoch": point.epoch,
                "optimizer_step": point.step,
                "examples_seen": point.examples_seen,
                "train_time_s": point.train_time_s,
            }
        )

    def on_epoch(self, row: EpochRow, recipe: object = None) -> None:
        """Log one epoch row (already aggregated over workers by the loop)."""
        self.rows.append(row)
        if not self.live:
            return
        record = row.to_dict()
        if len(self.rows) == 1:  # parameter counts and the subset size are known from here on
            derived = self._derived() | {k: record[k] for k in _DERIVED_KEYS}
            _call(self.run.config.update, {"derived": derived}, allow_val_change=True)
        history = {key: record[name] for name, key in _HISTORY_KEYS.items() if name in record}
        self._log(history | {"optimizer_step": self.step})

    def _init(self) -> Any:
        tracking = self.tracking
        # The sweep's driver opens its run before it starts Ray, so the address of its wandb
        # service (WANDB_SERVICE) reaches the workers with its environment. A worker needs its
        # own: the driver's may be on another node, and holds the run id of a killed worker.
        os.environ.pop("WANDB_SERVICE", None)
        opened = open_run(
            tracking.mode,
            project=tracking.project,
            entity=tracking.entity,
            group=tracking.group,
            job_type="trial",
            id=tracking.run_id,
            name=self.trial.label(),
            tags=self._tags(),
            config=self._config(),
            dir=tracking.dir,
        )
        if opened is None:
            return None
        run, _ = opened
        _call(self._define_metrics, run)
        return run

    @staticmethod
    def _define_metrics(run: Any) -> None:
        """Charts line up by optimizer step by default; examples seen and training seconds are
        logged in every row, so either can be chosen as the x axis."""
        for axis in (*_AXES, "epoch"):
            run.define_metric(axis)
        run.define_metric("train/*", step_metric="optimizer_step")
        run.define_metric("eval/*", step_metric="optimizer_step")
        run.define_metric("epoch/*", step_metric="epoch")

    def _derived(self) -> dict[str, Any]:
        compute = self.trial.compute
        return {
            "global_batch": compute.global_batch(),
            "per_worker_batch": compute.per_worker_batch(),
            "micro_batch": compute.micro_batch(),
            "accumulation_steps": compute.accumulation_steps(),
        }

    def _config(self) -> dict[str, Any]:
        return {
            **self.trial.model_dump(mode="json"),
            "derived": self._derived(),
            "sweep": {
                "name": self.tracking.sweep,
                "trial_id": self.tracking.trial_id,
                "label": self.trial.label(),
                "primary_metric": self.trial.primary_metric(),
            },
        }

    def _tags(self) -> list[str]:
        config = self.trial.model_dump(mode="json")
        tags = list(self.tracking.tags)
        for axis in self.tracking.axes:
            section, key = axis.split(".", 1)
            tags.append(f"{axis}={config[section][key]}"[:MAX_TAG])
        return list(dict.fromkeys(tags))

    def _write_summary(self, run: Any, error: BaseException | None) -> None:
        compute = self.trial.compute
        wall = time.time() - (self.tracking.started_at or self._opened)
        gpus = compute.gpus_per_worker if compute.use_gpu else 0
        summary: dict[str, Any] = {
            "status": "failed" if error else "finished",
            # From the trial's start in its Tune driver: worker start-up and restarts included.
            "trial_wall_s": wall,
            "gpu_hours": compute.num_workers * gpus * wall / 3600,
            "worker_hours": compute.num_workers * wall / 3600,
        }
        if self.rows:
            last, metric = self.rows[-1], self.trial.primary_metric()
            # A resumed run brings its summary back: the best of the epochs before a restart.
            scores = [r.score(metric) for r in self.rows]
            earlier = run.summary.get(f"best_{metric}")
            summary[f"best_{metric}"] = max([*scores, *([earlier] if earlier is not None else [])])
            summary |= {"epochs_completed": last.epoch, "train_time_s": last.train_time_s}
            summary |= {k: getattr(last, k) for k in (*_DERIVED_KEYS, "restarts")}
            summary |= {
                f"{section}/{column}": value
                for name, section in _SUMMARY_SECTIONS.items()
                for column, value in last.columns(name).items()
            }
        if error:
            summary["error"] = f"{type(error).__name__}: {error}"[:500]
        run.summary.update(summary)

    def _log(self, row: dict[str, Any]) -> None:
        # One warning, then the trial trains on without logging; the run is still finished.
        self.live = _call(self.run.log, row)


def _call(method: Any, *args: Any, **kwargs: Any) -> bool:
    """Call a W&B method; an error becomes a warning (and False), never an exception."""
    try:
        method(*args, **kwargs)
    # A W&B error mid-trial stops the logging, not the training.
    except Exception as err:
        warn(f"{getattr(method, '__qualname__', method)} failed: {err}")
        return False
    return True
