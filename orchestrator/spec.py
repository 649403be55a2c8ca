"""Search-space files: load, override, validate and expand into trial configs (no Ray).

A file has fixed settings (``model``, ``data``, ``compute``, ``train``, ``inference`` sections
whose keys are TrialConfig fields), ``axes`` (dotted field name -> list of values) and
``seeds``. The grid is the product of every axis and the seeds; every cell is validated before
anything runs.

``axes`` may also be a list of such grids, each with its own ``seeds`` if it likes: the sweep
is their union, and a cell that two grids share runs once. A scaling study rarely needs every
axis crossed with every other: the worker-count axis, say, on one model × data cell, beside a
model × data grid on one worker.
"""

from __future__ import annotations

import copy
import difflib
import itertools
import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from contract.config import BERT_LADDER, TrialConfig
from contract.tracking import WandbMode
from orchestrator.errors import UserError
from orchestrator.wandb.settings import WandbConfig, wandb_environment

__all__ = [
    "AXIS_FIELDS",
    "SpecError",
    "SweepSpec",
    "load_spec",
    "parse_override",
    "read_spec_mapping",
]

SECTIONS = ("model", "data", "compute", "train", "inference")
TOP_LEVEL_KEYS = (
    "name",
    "description",
    *SECTIONS,
    "axes",
    "seeds",
    "storage_path",
    "max_concurrent_trials",
    "trial_retries",  # Tune runs a failed trial again (from its checkpoint) this many times
    "max_trials",  # the most trials this spec may expand to (axes x seeds, summed over grids)
    "wandb",  # sweep-level W&B settings (orchestrator.wandb.settings), never a trial axis
)
# Where experiment directories go locally (with a cloud storage_path: the local copy).
DEFAULT_STORAGE_PATH = "experiments"
# The largest grid a spec may expand to unless it sets max_trials: far above any sweep a
# cluster finishes in days, and small enough that a typo (100 x 100 x 100) fails at once
# instead of expanding a million trial configs.
DEFAULT_MAX_TRIALS = 5000


class SpecError(UserError):
    """A problem with a search-space file or an override, phrased for the user in one line."""


def _field_paths(model: type[BaseModel], prefix: str = "") -> list[str]:
    paths = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            paths += _field_paths(annotation, f"{prefix}{name}.")
        else:
            paths.append(f"{prefix}{name}")
    return paths


AXIS_FIELDS: tuple[str, ...] = tuple(_field_paths(TrialConfig))
WANDB_FIELDS: tuple[str, ...] = tuple(_field_paths(WandbConfig, "wandb."))


def _did_you_mean(word: object, valid: list[str] | tuple[str, ...]) -> str:
    close = difflib.get_close_matches(str(word), valid, n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else f"; valid: {', '.join(valid)}"


@dataclass(frozen=True)
class Grid:
    """One grid of the sweep: axes whose product, times the seeds, gives its trials."""

    axes: dict[str, list[Any]]
    seeds: list[int] | None = None  # None: the sweep's seeds

    def size(self, sweep_seeds: list[int]) -> int:
        return math.prod(len(v) for v in self.axes.values()) * len(self.seeds or sweep_seeds)


def _grids_to_raw(grids: list[Grid]) -> dict[str, Any] | list[dict[str, Any]]:
    """``axes`` as a file writes it: one mapping for one grid, else a list."""
    raw = [{**g.axes, **({"seeds": g.seeds} if g.seeds is not None else {})} for g in grids]
    return raw[0] if len(raw) == 1 and grids[0].seeds is None else raw


@dataclass(frozen=True)
class SweepSpec:
    """A validated search space: the fixed trial settings, the axes and every expanded cell."""

    path: Path
    name: str
    description: str
    base: dict[str, Any]
    grids: list[Grid]
    seeds: list[int]  # the seeds of every grid that names none of its own
    storage_path: str
    max_concurrent_trials: int | None
    trial_retries: int
    max_trials: int
    trials: list[TrialConfig]
    wandb: WandbConfig

    @property
    def axes(self) -> dict[str, list[Any]]:
        """Every axis of any grid, with the values any grid gives it (in first-seen order)."""
        union: dict[str, list[Any]] = {}
        for grid in self.grids:
            for axis, values in grid.axes.items():
                seen = union.setdefault(axis, [])
                seen += [v for v in values if v not in seen]
        return union

    def all_seeds(self) -> list[int]:
        """Every seed any grid runs, in first-seen order."""
        return list(dict.fromkeys(s for g in self.grids for s in (g.seeds or self.seeds)))

    def axis_names(self) -> list[str]:
        """The dotted names that vary across trials, seeds last."""
        return [*self.axes, "train.seed"]

    def param_space(self) -> dict[str, Any]:
        """The fully resolved trial dict with each axis as ``{"grid_search": values}``: the
        space Tune validates ``points()`` against. Defaults are resolved here (e.g.
        $GLUE_DIR), so every trial receives exactly what was validated. Built from plain dicts
        so this module needs no Ray."""
        space = self.trials[0].model_dump(mode="json")
        for axis, values in {**self.axes, "train.seed": self.all_seeds()}.items():
            section, key = axis.split(".", 1)
            space[section][key] = {"grid_search": list(values)}
        return space

    def points(self) -> list[dict[str, Any]]:
        """Every trial's dict, in order: what Tune runs (a union of grids is no product)."""
        return [trial.model_dump(mode="json") for trial in self.trials]

    def to_dict(self) -> dict[str, Any]:
        """The resolved spec as it ran (overrides applied), for the experiment directory."""
        return {
            "name": self.name,
            "description": self.description,
            **self.base,
            "axes": _grids_to_raw(self.grids),
            "seeds": self.seeds,
            "storage_path": self.storage_path,
            "max_concurrent_trials": self.max_concurrent_trials,
            "trial_retries": self.trial_retries,
            "max_trials": self.max_trials,
            "wandb": self.wandb.model_dump(mode="json"),
        }


def parse_override(text: str) -> tuple[str, Any]:
    """``train.lr=3e-5`` -> ("train.lr", 3e-05); values are parsed as YAML (lists work too)."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise SpecError(f"override {text!r} is not of the form key=value (e.g. train.lr=3e-5)")
    try:
        parsed = yaml.safe_load(value)
    except yaml.YAMLError:
        parsed = value
    # YAML 1.1 reads 3e-5 as a string; a number is what anyone typing it means.
    if isinstance(parsed, str) and re.fullmatch(r"[-+]?\d+(\.\d*)?[eE][-+]?\d+", parsed):
        parsed = float(parsed)
    return key.strip(), parsed


def read_spec_mapping(path: Path) -> dict[str, Any]:
    """The top-level mapping of a search-space (or an experiment's spec.yaml) file, unvalidated;
    SpecError with a one-line reason when it is not a readable YAML mapping."""
    if path.is_dir():
        raise SpecError(f"{path}: is a directory; give a search-space YAML file")
    if not path.is_file():
        raise SpecError(f"{path}: no such search-space file")
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except OSError as err:
        raise SpecError(f"{path}: cannot be read: {err.strerror or err}") from None
    except UnicodeDecodeError as err:
        raise SpecError(
            f"{path}: not a UTF-8 text file (byte 0x{err.object[err.start]:02x} at offset "
            f"{err.start}); a search space is a YAML text file"
        ) from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise SpecError(f"{path}: malformed YAML{where}: {problem}") from None
    if not isinstance(raw, dict):
        raise SpecError(f"{path}: expected a mapping of settings at the top level")
    return _normalise_numbers(raw)


def _normalise_numbers(value: Any) -> Any:
    """YAML 1.1 leaves ``5e-5`` (no dot) a string; read it as the float a person meant."""
    if isinstance(value, dict):
        return {k: _normalise_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_normalise_numbers(v) for v in value]
    if isinstance(value, str) and re.fullmatch(r"[-+]?\d+(\.\d*)?[eE][-+]?\d+", value):
        return float(value)
    return value


def _raw_grids(raw: dict[str, Any]) -> list[dict[str, Any]]:
    """The grid mappings of a file's ``axes`` (one, or a list), unvalidated; made if absent."""
    axes = raw.get("axes")
    if not axes:
        axes = raw["axes"] = {}
    grids = axes if isinstance(axes, list) else [axes]
    return [g for g in grids if isinstance(g, dict)]


def _apply_override(raw: dict[str, Any], key: str, value: Any, where: str) -> None:
    if key.startswith("axes."):
        # An axis given on the command line is that axis in every grid.
        axis = key.removeprefix("axes.")
        for grid in _raw_grids(raw):
            grid[axis] = value
        return
    if key == "train.seed":
        key, value = "seeds", value if isinstance(value, list) else [value]
    if key == "seeds":
        # Seeds on the command line are every grid's seeds.
        for grid in _raw_grids(raw):
            grid.pop("seeds", None)
    if key in TOP_LEVEL_KEYS and key not in SECTIONS:
        raw[key] = value
        return
    if key.startswith("wandb."):
        wandb = raw.get("wandb") or {}
        if not isinstance(wandb, dict):
            raise SpecError(f"{where}: section 'wandb' must be a mapping")
        raw["wandb"] = {**wandb, key.removeprefix("wandb."): value}
        return
    if key not in AXIS_FIELDS:
        raise SpecError(f"{where}: unknown setting {key!r}{_did_you_mean(key, AXIS_FIELDS)}")
    section, field = key.split(".", 1)
    # A fixed value given on the command line replaces an axis of the same name.
    for grid in _raw_grids(raw):
        grid.pop(key, None)
    section_dict = raw.setdefault(section, {})
    if not isinstance(section_dict, dict):
        raise SpecError(f"{where}: section {section!r} must be a mapping")
    section_dict[field] = value


def _check_shape(raw: dict[str, Any], path: Path) -> None:
    for key in raw:
        if key not in TOP_LEVEL_KEYS:
            raise SpecError(f"{path}: unknown key {key!r}{_did_you_mean(key, TOP_LEVEL_KEYS)}")
    if not isinstance(raw.get("name"), str) or not re.fullmatch(r"[\w.-]+", raw["name"]):
        raise SpecError(
            f"{path}: 'name' must be a word of letters, digits, '_', '-' or '.' "
            f"(got {raw.get('name')!r})"
        )
    for section in (*SECTIONS, "wandb"):
        if not isinstance(raw.get(section) or {}, dict):
            raise SpecError(f"{path}: {section!r} must be a mapping of settings")
    axes = raw.get("axes") or {}
    grids = axes if isinstance(axes, list) else [axes]
    if not isinstance(axes, dict | list) or not all(isinstance(g, dict) for g in grids):
        raise SpecError(
            f"{path}: 'axes' must map setting names to lists of values, or be a list of such grids"
        )
    for index, grid in enumerate(grids):
        _check_grid(grid, "axes" if isinstance(axes, dict) else f"axes[{index}]", path)
    _check_seeds(raw.get("seeds", [0]), "'seeds'", path)
    storage = raw.get("storage_path")
    if storage is not None and (not isinstance(storage, str) or not storage or "\0" in storage):
        raise SpecError(
            f"{path}: 'storage_path' must be a directory or a URI such as s3://bucket/sweeps "
            f"(got {storage!r:.80})"
        )
    mct = raw.get("max_concurrent_trials")
    if mct is not None and (not isinstance(mct, int) or isinstance(mct, bool) or mct < 1):
        raise SpecError(f"{path}: 'max_concurrent_trials' must be a positive integer or omitted")
    retries = raw.get("trial_retries", 0)
    if not isinstance(retries, int) or isinstance(retries, bool) or retries < 0:
        raise SpecError(f"{path}: 'trial_retries' must be an integer >= 0 (got {retries!r})")
    limit = raw.get("max_trials", DEFAULT_MAX_TRIALS)
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
        raise SpecError(f"{path}: 'max_trials' must be a positive integer (got {limit!r})")


def _check_grid(grid: dict[Any, Any], where: str, path: Path) -> None:
    for axis, values in grid.items():
        if axis == "seeds":
            _check_seeds(values, f"{where}.seeds", path)
            continue
        if not isinstance(axis, str):
            raise SpecError(f"{path}: {where}: {axis!r} is not a setting name (e.g. train.lr)")
        if axis == "train.seed":
            raise SpecError(f"{path}: {where}.train.seed: list the seeds under 'seeds' instead")
        if axis.startswith("wandb."):
            raise SpecError(f"{path}: {where}.{axis}: W&B settings are one per sweep, not an axis")
        if axis not in AXIS_FIELDS:
            raise SpecError(f"{path}: unknown axis {axis!r}{_did_you_mean(axis, AXIS_FIELDS)}")
        if not isinstance(values, list) or not values:
            raise SpecError(f"{path}: {where}.{axis} must be a non-empty list of values")
        if len({repr(v) for v in values}) != len(values):
            raise SpecError(f"{path}: {where}.{axis} repeats a value: {values}")


def _check_seeds(seeds: Any, name: str, path: Path) -> None:
    if (
        not isinstance(seeds, list)
        or not seeds
        or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds)
    ):
        raise SpecError(f"{path}: {name} must be a non-empty list of integers (got {seeds!r})")
    if len(set(seeds)) != len(seeds):
        raise SpecError(f"{path}: {name} repeats a value: {seeds}")


def _grids(raw: dict[str, Any]) -> list[Grid]:
    """The file's grids (checked by ``_check_shape``)."""
    return [
        Grid(
            axes={axis: list(values) for axis, values in grid.items() if axis != "seeds"},
            seeds=list(grid["seeds"]) if "seeds" in grid else None,
        )
        for grid in _raw_grids(raw)
    ]


def _check_grid_size(grids: list[Grid], seeds: list[int], limit: int, path: Path) -> None:
    """Refuse a sweep larger than ``limit`` from its axis lengths, before expanding it."""
    total = sum(grid.size(seeds) for grid in grids)
    if total > limit:
        shapes = [
            " x ".join(f"{len(v)} {axis}" for axis, v in grid.axes.items()) or "1 cell"
            for grid in grids
        ]
        shape = " + ".join(
            f"{s} x {len(g.seeds or seeds)} seed(s)" for s, g in zip(shapes, grids, strict=True)
        )
        raise SpecError(
            f"{path}: the grid has {total:,} trials ({shape}), more than max_trials {limit:,}; "
            "shorten an axis, or raise max_trials in the file (or with max_trials=N)"
        )


def _validation_message(
    err: ValidationError,
    cell: dict[str, Any],
    prefix: str = "",
    valid: tuple[str, ...] = AXIS_FIELDS,
) -> str:
    first = err.errors()[0]
    loc = prefix + ".".join(str(p) for p in first["loc"])
    if first["type"] == "extra_forbidden":
        message = f"unknown key {loc!r}{_did_you_mean(loc, valid)}"
    else:
        message = f"{loc}: " if loc else ""
        message += first["msg"].removeprefix("Value error, ")
        if "input" in first and first["type"] not in ("value_error", "missing"):
            message += f" (got {first['input']!r})"
    where = ", ".join(f"{k}={v}" for k, v in cell.items())
    return message + (f" [in grid cell {where}]" if where else "")


def _exists(name: str) -> bool:
    try:
        return Path(name).expanduser().exists()
    except (OSError, ValueError, RuntimeError):  # a NUL byte, a name too long, no home
        return False


def _is_local(name: str) -> bool:
    """Whether a model or tokenizer name means a local directory (as transformers reads it)."""
    return _exists(name) or name.startswith(("/", "./", "../", "~"))


def _check_model_names(names: list[Any], path: Path) -> None:
    for name in names:
        if not isinstance(name, str) or name in BERT_LADDER or _exists(name):
            continue
        if _is_local(name):
            raise SpecError(f"{path}: model.name: local model directory {name!r} not found")
        if "/" in name:
            continue  # a hub id: checked when the trial loads it
        close = difflib.get_close_matches(name, list(BERT_LADDER), n=1, cutoff=0.8)
        if close:
            raise SpecError(
                f"{path}: model.name: unknown model {name!r}; did you mean {close[0]!r}? "
                f"(ladder: {', '.join(BERT_LADDER)}; or a hub id or local directory)"
            )


# What AutoTokenizer loads a tokenizer from: its fast file, its config, or a vocabulary.
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.txt",
    "vocab.json",
    "spiece.model",
    "sentencepiece.bpe.model",
    "tokenizer.model",
)


def _check_local_models(trials: list[TrialConfig], path: Path) -> None:
    """A local model directory must hold a config.json (and a tokenizer, when the model's own
    is used): otherwise every trial fails, with an error about sentencepiece or tiktoken."""
    for model in {trial.model for trial in trials}:
        if not model.ladder and _is_local(model.name):
            directory = Path(model.name).expanduser()
            where = f"{path}: model.name: local model directory {model.name!r}"
            if not directory.is_dir():
                raise SpecError(f"{where} is not a directory")
            config = directory / "config.json"
            if not config.is_file():
                raise SpecError(
                    f"{where} has no config.json; expected a directory written by "
                    "save_pretrained (config.json, weights, tokenizer files)"
                )
            try:
                readable = isinstance(json.loads(config.read_text(encoding="utf-8")), dict)
            except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError):
                readable = False
            if not readable:
                raise SpecError(
                    f"{config}: not a model config (a JSON object, as transformers writes it)"
                )
            if model.tokenizer == "auto" and not model.from_scratch:
                _check_tokenizer_files(directory, where, path)
        if model.tokenizer not in ("auto", "wordpiece") and _is_local(model.tokenizer):
            where = f"{path}: model.tokenizer: local tokenizer directory {model.tokenizer!r}"
            _check_tokenizer_files(Path(model.tokenizer).expanduser(), where, path)


def _check_tokenizer_files(directory: Path, where: str, path: Path) -> None:
    if not directory.is_dir():
        raise SpecError(f"{where} is not a directory")
    if not any((directory / name).is_file() for name in TOKENIZER_FILES):
        raise SpecError(
            f"{where} has no tokenizer files ({', '.join(TOKENIZER_FILES[:3])}, ...); set "
            "model.tokenizer to a tokenizer's hub id or directory, or 'wordpiece' to train one"
        )


def load_spec(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> SweepSpec:
    """Read, override and validate a search-space file; raise SpecError with a one-line reason."""
    path = Path(path)
    raw = read_spec_mapping(path)
    wandb_requested = _merge_wandb_environment(raw, path)
    for text in overrides:
        key, value = parse_override(text)
        wandb_requested |= key.split(".", 1)[0] == "wandb"
        _apply_override(raw, key, value, where=f"override {text!r}")
    _check_shape(raw, path)

    base = {section: dict(raw.get(section) or {}) for section in SECTIONS}
    if "seed" in base["train"]:
        raise SpecError(f"{path}: train.seed: list the seeds under 'seeds' instead")
    grids = _grids(raw)
    seeds = list(raw.get("seeds", [0]))
    max_trials = raw.get("max_trials", DEFAULT_MAX_TRIALS)
    _check_grid_size(grids, seeds, max_trials, path)
    base_model = base["model"].get("name", "bert-tiny")
    model_names = [n for g in grids for n in g.axes.get("model.name", [base_model])]
    _check_model_names(model_names, path)

    trials, seen = [], set()
    for grid in grids:
        axes = {**grid.axes, "train.seed": grid.seeds or seeds}
        for values in itertools.product(*axes.values()):
            cell = dict(zip(axes, values, strict=True))
            trial_dict = copy.deepcopy(base)
            for axis, value in cell.items():
                section, field = axis.split(".", 1)
                trial_dict[section][field] = value
            try:
                trial = TrialConfig.model_validate(trial_dict)
            except ValidationError as err:
                raise SpecError(f"{path}: {_validation_message(err, cell)}") from None
            # A cell that two grids share runs once.
            if (key := trial.model_dump_json()) not in seen:
                seen.add(key)
                trials.append(trial)
    _check_local_models(trials, path)

    return SweepSpec(
        path=path,
        name=raw["name"],
        description=str(raw.get("description") or "").strip(),
        base=base,
        grids=grids,
        seeds=seeds,
        storage_path=str(raw.get("storage_path") or DEFAULT_STORAGE_PATH),
        max_concurrent_trials=raw.get("max_concurrent_trials"),
        trial_retries=raw.get("trial_retries", 0),
        max_trials=max_trials,
        trials=trials,
        wandb=_wandb_config(raw, path, wandb_requested),
    )


def _merge_wandb_environment(raw: dict[str, Any], path: Path) -> bool:
    """Lay the WANDB_* variables over the file's ``wandb`` section (overrides go on top);
    return whether W&B is asked for, by the section itself or by WANDB_MODE."""
    try:
        env = wandb_environment(os.environ)
    except ValueError as err:
        raise SpecError(str(err)) from None
    requested = "wandb" in raw or "mode" in env
    if env:
        section = raw.get("wandb") or {}
        if not isinstance(section, dict):
            raise SpecError(f"{path}: 'wandb' must be a mapping of settings")
        raw["wandb"] = {**section, **env}
    return requested


def _wandb_config(raw: dict[str, Any], path: Path, requested: bool) -> WandbConfig:
    """The validated ``wandb`` section; W&B is off unless the file, WANDB_MODE or an override
    asks for it."""
    if not requested:
        return WandbConfig(mode=WandbMode.disabled)
    try:
        return WandbConfig.model_validate(raw.get("wandb") or {})
    except ValidationError as err:
        message = _validation_message(err, {}, "wandb.", WANDB_FIELDS)
        raise SpecError(f"{path}: {message}") from None
