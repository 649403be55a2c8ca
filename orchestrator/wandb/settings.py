"""The search space's ``wandb`` section: W&B settings for a whole sweep, never a trial axis.

The sweep resolves them once (file < WANDB_* variables < command line) and hands each trial a
``contract.tracking.TrialTracking``. No field ever holds an API key: the key reaches wandb
through the environment only.
"""

from __future__ import annotations

import netrc
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

from contract.tracking import MAX_TAG, WandbMode

__all__ = ["WandbConfig", "has_credentials", "wandb_environment"]

_FORBIDDEN = re.compile(r"[/\\#?%:]")  # W&B rejects these in project and entity names
# The usual variables, and the field each one overrides. WANDB_MODE (and WANDB_DISABLED) can
# also switch W&B on or off; the others only change a sweep that uses W&B.
_ENV_FIELDS = {
    "WANDB_MODE": "mode",
    "WANDB_PROJECT": "project",
    "WANDB_ENTITY": "entity",
    "WANDB_RUN_GROUP": "group",
    "WANDB_TAGS": "tags",
}
# wandb's own older names for the modes, still common in users' shells.
_MODE_ALIASES = {"dryrun": "offline", "run": "online"}


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class WandbConfig(_Frozen):
    """The ``wandb`` section of a search space.

    ``group`` defaults to the sweep's W&B name (experiment directory name plus a short token),
    so two sweeps never share a group by accident; ``log_every_steps`` is how often (in
    optimizer steps) the training loss, learning rate and throughput are logged.
    """

    mode: WandbMode = WandbMode.online
    project: str = "scalesweep"
    entity: str | None = None
    group: Annotated[str, Field(min_length=1, max_length=128)] | None = None
    tags: list[Annotated[str, Field(min_length=1, max_length=MAX_TAG)]] = Field(
        default_factory=list
    )
    log_every_steps: Annotated[int, Field(ge=1)] = 10

    @field_validator("project", "entity")
    @classmethod
    def _check_name(cls, value: str | None) -> str | None:
        if value is not None and (not value.strip() or _FORBIDDEN.search(value)):
            raise ValueError(f"{value!r} must be non-empty and contain none of / \\ # ? % :")
        return value

    @property
    def enabled(self) -> bool:
        return self.mode is not WandbMode.disabled


def wandb_environment(environ: Mapping[str, str]) -> dict[str, Any]:
    """The ``wandb`` settings that WANDB_* variables override; ValueError for a bad WANDB_MODE."""
    values: dict[str, Any] = {}
    for variable, key in _ENV_FIELDS.items():
        value = environ.get(variable, "").strip()
        if value:
            values[key] = value
    if "tags" in values:
        values["tags"] = [t.strip() for t in values["tags"].split(",") if t.strip()]
    if environ.get("WANDB_DISABLED", "").strip().lower() in ("1", "true", "yes"):
        values["mode"] = WandbMode.disabled.value
    if "mode" in values:
        mode = _MODE_ALIASES.get(values["mode"].lower(), values["mode"].lower())
        if mode not in WandbMode.__members__:
            raise ValueError(
                f"WANDB_MODE={values['mode']!r} is not a mode; valid: "
                + ", ".join(WandbMode.__members__)
            )
        values["mode"] = mode
    return values


def has_credentials(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether wandb can authenticate without asking: WANDB_API_KEY (or an identity token) in
    the environment, or a ``wandb login`` entry in the netrc file for the W&B host."""
    if environ.get("WANDB_API_KEY") or environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    import wandb  # its default server changes between versions

    host = urlsplit(environ.get("WANDB_BASE_URL") or wandb.Settings().base_url).hostname
    path = Path(environ.get("NETRC") or Path.home() / ".netrc").expanduser()
    try:
        return bool(host and path.is_file() and host in netrc.netrc(path).hosts)
    except (OSError, netrc.NetrcParseError):
        return False
