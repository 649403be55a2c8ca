"""Rank 0's Weights & Biases run of one trial, opened in the worker loop's own process.

Ray's ``setup_wandb`` does not work under Train V2 (it looks up the V1 session: every worker
logs, with empty ids), so rank 0 calls ``wandb.init`` itself, with the run id the sweep derived
from the trial and ``resume="allow"``: a restarted trial continues its run. Every logged number
is aggregated over all workers first. A W&B failure is a warning, never a failed trial: the
experiment directory holds the results whatever happens here.

    with TrialTracker(tracking, trial) as tracker:
        fit(trial, report=tracker.report(report), on_step=tracker.on_step)
"""

from __future__ import annotations

import os
import time
from types import TracebackType
from typing import Any

from orchestrator.config import TrialConfig
from orchestrator.wandb_config import MAX_TAG, TrialTracking, open_run, warn
from trainables.loop import Report, _all_reduce, _world

__all__ = ["TrialTracker"]

# Per-epoch figures that are W&B history; the rest of an epoch row is config or summary.
_EPOCH_KEYS = {
    "train_loss": "epoch/train_loss",
    "examples_per_s": "epoch/examples_per_s",
    "tokens_per_s": "epoch/tokens_per_s",
    "epoch_time_s": "epoch/time_s",
    "lr": "epoch/lr",
}
_DERIVED_KEYS = ("params_total", "params_non_embedding", "train_examples")
_AXES = ("optimizer_step", "examples_seen", "train_time_s")


class TrialTracker:
    """Logs one trial to W&B from rank 0; on other ranks (and with ``tracking=None``) it only
    takes part in the all-reduces that every rank must join."""

    def __init__(self, tracking: TrialTracking | dict[str, Any] | None, trial: TrialConfig) -> None:
        self.tracking = None if tracking is None else TrialTracking.model_validate(tracking)
        self.trial = trial
        self.run = None
        self.live = False  # logging goes on: the run opened and no call to it has failed
        self.rows: list[dict[str, Any]] = []
        self.step = 0  # optimizer steps so far, as the loop counts them (restarts included)
        self._epoch = 0
        self._window = (0.0, 0.0, 0.0, 0.0)  # loss sum, examples, tokens, seconds at last log
        self._opened = time.time()

    def __enter__(self) -> TrialTracker:
        if self.tracking is not None and _world()[0] == 0:
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

    def report(self, report: Report | None) -> Report:
        """Wrap the loop's ``report``: each epoch row goes to W&B too, then on as before."""

        def log_and_report(row: dict[str, Any], state: dict[str, Any] | None = None) -> None:
            self.on_epoch(row)
            if report:
                report(row, state)

        return log_and_report

    def on_step(self, counters: dict[str, float]) -> None:
        """After every optimizer step, on every rank, with the loop's running counters; every
        ``log_every_steps`` steps, logs the window since the last log, summed over workers."""
        self.step = int(counters["step"])
        if self.tracking is None or self.step % self.tracking.log_every_steps:
            return
        if counters["epoch"] != self._epoch:
            self._epoch, self._window = counters["epoch"], (0.0, 0.0, 0.0, 0.0)
        # Every rank joins the reduce, whether or not rank 0's W&B run is alive.
        totals = _all_reduce([counters["loss_sum"], counters["examples"], counters["tokens"]])
        totals += _all_reduce([counters["seconds"]], op="max")
        loss, examples, tokens, seconds = (a - b for a, b in zip(totals, self._window, strict=True))
        self._window = tuple(totals)
        if not self.live or examples <= 0 or seconds <= 0:
            return
        self._log(
            {
                "train/loss": loss / examples,
                "train/lr": counters["lr"],
                "train/examples_per_s": examples / seconds,
                "train/tokens_per_s": tokens / seconds,
                "epoch": counters["epoch"],
                "optimizer_step": self.step,
                "examples_seen": int(counters["examples_seen"] + totals[1]),
                "train_time_s": counters["train_time_s"] + totals[3],
            }
        )

    def on_epoch(self, row: dict[str, Any]) -> None:
        """Log one epoch row (already aggregated over workers by the loop)."""
        self.rows.append(row)
        if not self.live:
            return
        if len(self.rows) == 1:  # parameter counts and the subset size are known from here on
            derived = self._derived() | {k: row[k] for k in _DERIVED_KEYS if k in row}
            _call(self.run.config.update, {"derived": derived}, allow_val_change=True)
        history = {
            "epoch": row["epoch"],
            "optimizer_step": self.step,
            "examples_seen": row["examples_seen"],
            "train_time_s": row["train_time_s"],
        }
        history |= {
            f"eval/{k.removeprefix('eval_')}": v for k, v in row.items() if k.startswith("eval_")
        }
        history |= {name: row[k] for k, name in _EPOCH_KEYS.items() if k in row}
        self._log(history)

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
            scores = [r[f"eval_{metric}"] for r in self.rows]
            earlier = run.summary.get(f"best_{metric}")
            summary[f"best_{metric}"] = max([*scores, *([earlier] if earlier is not None else [])])
            summary |= {"epochs_completed": last["epoch"], "train_time_s": last["train_time_s"]}
            summary |= {k: last[k] for k in (*_DERIVED_KEYS, "restarts") if k in last}
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
