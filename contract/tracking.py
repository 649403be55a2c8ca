"""A trial's Weights & Biases identity, and ``open_run``: the one way any run is started.

Both sides rely on these agreeing: the sweep (orchestrator) names every run, decides the mode
and opens its own summary and analysis runs; the trial's rank 0 (trainables) opens the trial's
run under the id the sweep gave it. No field ever holds an API key: the key reaches wandb
through the environment only. wandb itself is imported inside the functions that need it.
"""

from __future__ import annotations

import contextlib
import shutil
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["MAX_TAG", "TrialTracking", "WandbMode", "open_run", "run_id", "warn"]

MAX_TAG = 64  # W&B's limit on one tag's length
# A worker killed mid-trial (preemption, OOM) loses what wandb has not yet written to its run
# file: at most this many seconds of it, instead of wandb's default 15.
_FLUSH_SETTING, _FLUSH_EVERY_S = "x_transaction_log_flush_interval", 2.0


class WandbMode(StrEnum):
    """online: stream to the server; offline: write runs to disk for ``wandb sync``; disabled."""

    online = "online"
    offline = "offline"
    disabled = "disabled"


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TrialTracking(_Frozen):
    """What the worker that logs a trial needs: where and how, and under which run id.

    The sweep builds one for all trials; the trial driver adds the trial's ``run_id`` and start
    time (``for_trial``). Without a ``run_id`` (a trial run by hand) W&B picks one.
    """

    mode: WandbMode
    project: str
    entity: str | None = None
    group: str | None = None
    tags: list[str] = Field(default_factory=list)
    log_every_steps: Annotated[int, Field(ge=1)] = 10
    dir: str  # wandb writes its runs under <dir>/wandb/
    sweep: str | None = None  # the sweep's W&B name: the prefix of every run id
    axes: list[str] = Field(default_factory=list)  # dotted axis names, each becomes a tag
    trial_id: str | None = None
    run_id: str | None = None
    started_at: float | None = None  # time.time() when the trial started, for its wall time

    def for_trial(self, trial_id: str, started_at: float) -> TrialTracking:
        """This tracking for one Tune trial: its deterministic run id and start time."""
        run = run_id(self.sweep, trial_id) if self.sweep else None
        return self.model_copy(
            update={"trial_id": trial_id, "run_id": run, "started_at": started_at}
        )


def run_id(sweep: str, trial_id: str) -> str:
    """The W&B run id of a trial (or of ``summary``/``analysis``): the same on every restart."""
    return f"{sweep}-{trial_id}"


def warn(message: str) -> None:
    """A W&B problem, in one line on stderr: it never stops a sweep or a trial."""
    print(f"warning: W&B: {message}", file=sys.stderr, flush=True)


def open_run(mode: WandbMode, **options: Any) -> tuple[Any, WandbMode] | None:
    """``wandb.init(**options)`` resuming any run of the same id; (run, mode it runs in).

    Online falls back to offline when the server cannot be reached, so nothing is lost; any
    failure is a warning and None. Runs go under ``<options["dir"]>/wandb/``.
    """
    try:
        import wandb
    except ImportError as err:
        warn(f"cannot import wandb ({err}); not logging {options.get('id') or 'this run'}")
        return None
    try:
        Path(options["dir"]).mkdir(parents=True, exist_ok=True)  # e.g. on a fresh worker node
    except OSError as err:
        warn(f"cannot create {options['dir']} ({err}); not logging {options.get('id') or ''}")
        return None
    modes = [mode, WandbMode.offline] if mode is WandbMode.online else [mode]
    wandb_dir = Path(options["dir"]) / "wandb"
    # No console capture (it would copy Ray's logs); wandb's banners stay quiet.
    settings = {"console": "off", "silent": True}
    if _FLUSH_SETTING in wandb.Settings.model_fields:  # an experimental setting: if still there
        settings[_FLUSH_SETTING] = _FLUSH_EVERY_S
    for candidate in modes:
        before = set(wandb_dir.glob("*run-*"))
        try:
            run = wandb.init(
                mode=candidate.value,
                resume="allow",
                # Never finish a run someone else holds in this process; ours closes itself.
                reinit="create_new",
                settings=wandb.Settings(**settings),
                **options,
            )
        # Whatever wandb raises (network, auth, quota, settings), the caller goes on.
        except Exception as err:
            then = "logging offline instead" if candidate is not modes[-1] else "not logged"
            reason = " ".join(str(err).split())  # wandb's messages span lines
            warn(
                f"cannot start run {options.get('id') or ''} ({candidate.value}): {reason}; {then}"
            )
            # A failed init leaves its run id claimed in wandb's service process: only a fresh
            # one accepts the id again. No other run is open here (a trial's rank 0, or the
            # CLI's driver process, which holds one run at a time).
            with contextlib.suppress(Exception):
                wandb.teardown()
            # Its folder holds no run, only logs (the warning says why): drop it, so the sweep
            # keeps one run per trial on disk and `wandb sync` meets no stub.
            for stub in set(wandb_dir.glob(f"*run-*-{options.get('id')}*")) - before:
                shutil.rmtree(stub, ignore_errors=True)
            continue
        return run, candidate
    return None
