"""The ``wandb`` section: defaults, layering (file < WANDB_* < command line), one-line errors,
the run-id scheme and the API-key check (no wandb server, no Ray)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import yaml

from contract.tracking import TrialTracking, WandbMode
from orchestrator.spec import SpecError, load_spec
from orchestrator.wandb.settings import has_credentials, wandb_environment

BASE = """
name: demo
data: {source: synthetic, synthetic_train_size: 200}
model: {from_scratch: true, tokenizer: wordpiece}
compute: {global_batch_size: 8}
train: {epochs: 1}
axes:
  compute.num_workers: [1, 2]
"""
WITH_WANDB = BASE + "wandb: {project: scaling, tags: [a, b], log_every_steps: 5}\n"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in ("WANDB_MODE", "WANDB_PROJECT", "WANDB_ENTITY", "WANDB_RUN_GROUP", "WANDB_TAGS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("WANDB_DISABLED", raising=False)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_no_section_means_disabled_and_a_section_means_online(tmp_path):
    assert load_spec(write(tmp_path, BASE)).wandb.mode is WandbMode.disabled
    config = load_spec(write(tmp_path, WITH_WANDB)).wandb
    assert config.mode is WandbMode.online and config.enabled
    assert (config.project, config.tags, config.log_every_steps) == ("scaling", ["a", "b"], 5)
    assert config.group is None  # the sweep's own name, decided when it runs
    assert load_spec(write(tmp_path, BASE + "wandb:\n")).wandb.mode is WandbMode.online


def test_overrides_and_the_run_flag_set_wandb_fields(tmp_path):
    spec = load_spec(write(tmp_path, BASE), ["wandb.mode=offline", "wandb.project=p2"])
    assert (spec.wandb.mode, spec.wandb.project) == (WandbMode.offline, "p2")
    assert spec.to_dict()["wandb"]["mode"] == "offline"  # spec.yaml records what ran
    assert len(spec.trials) == 2  # a sweep setting, never a grid axis


def test_environment_overrides_the_file_and_the_command_line_overrides_both(tmp_path, monkeypatch):
    path = write(tmp_path, WITH_WANDB)
    monkeypatch.setenv("WANDB_MODE", "dryrun")  # wandb's old name for offline
    monkeypatch.setenv("WANDB_PROJECT", "from-env")
    monkeypatch.setenv("WANDB_TAGS", "x, y")
    config = load_spec(path).wandb
    assert (config.mode, config.project, config.tags) == (WandbMode.offline, "from-env", ["x", "y"])
    config = load_spec(path, ["wandb.mode=disabled", "wandb.project=cli"]).wandb
    assert (config.mode, config.project) == (WandbMode.disabled, "cli")


def test_only_wandb_mode_switches_wandb_on_from_the_environment(tmp_path, monkeypatch):
    path = write(tmp_path, BASE)
    monkeypatch.setenv("WANDB_PROJECT", "from-env")
    assert load_spec(path).wandb.mode is WandbMode.disabled
    monkeypatch.setenv("WANDB_MODE", "offline")
    config = load_spec(path).wandb
    assert (config.mode, config.project) == (WandbMode.offline, "from-env")
    monkeypatch.setenv("WANDB_DISABLED", "true")
    assert load_spec(write(tmp_path, WITH_WANDB)).wandb.mode is WandbMode.disabled


@pytest.mark.parametrize(
    ("extra", "override", "message"),
    [
        ("wandb: {projct: p}\n", None, "unknown key 'wandb.projct'; did you mean 'wandb.project'?"),
        ("wandb: {mode: onlin}\n", None, "wandb.mode: Input should be 'online', 'offline' or"),
        ("wandb: {project: a/b}\n", None, "wandb.project: 'a/b' must be non-empty and contain"),
        (f"wandb: {{tags: [{'x' * 65}]}}\n", None, "wandb.tags.0: String should have at most 64"),
        ("wandb: {log_every_steps: 0}\n", None, "wandb.log_every_steps: Input should be greater"),
        ("wandb: offline\n", None, "'wandb' must be a mapping"),
        ("", "wandb.mode=sometimes", "wandb.mode: Input should be 'online', 'offline' or"),
        ("", "axes.wandb.mode=[online,offline]", "W&B settings are one per sweep, not an axis"),
    ],
)
def test_bad_wandb_settings_are_one_line_errors(tmp_path, extra, override, message):
    with pytest.raises(SpecError) as info:
        load_spec(write(tmp_path, BASE + extra), [override] if override else [])
    assert message in str(info.value) and "\n" not in str(info.value)
    assert str(tmp_path / "space.yaml") in str(info.value)


def test_a_bad_wandb_mode_variable_names_the_variable(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "sometimes")
    with pytest.raises(SpecError, match="WANDB_MODE='sometimes' is not a mode; valid: online"):
        load_spec(write(tmp_path, BASE))


def test_spec_yaml_with_its_wandb_section_loads_again(tmp_path):
    spec = load_spec(write(tmp_path, WITH_WANDB), ["wandb.mode=offline"])
    again = write(tmp_path, yaml.safe_dump(spec.to_dict(), sort_keys=False))
    assert load_spec(again).wandb == spec.wandb


def test_environment_parsing():
    assert wandb_environment({}) == {}
    assert wandb_environment({"WANDB_MODE": "run", "WANDB_RUN_GROUP": "g"}) == {
        "mode": "online",
        "group": "g",
    }
    with pytest.raises(ValueError, match="WANDB_MODE='x'"):
        wandb_environment({"WANDB_MODE": "x"})


def test_a_trial_gets_a_run_id_from_the_sweep_and_its_trial_id(tmp_path):
    tracking = TrialTracking(
        mode=WandbMode.offline, project="p", dir=str(tmp_path), sweep="qs-1a2b"
    )
    trial = tracking.for_trial("f00d5_00003", started_at=12.0)
    assert trial.run_id == "qs-1a2b-f00d5_00003" and trial.started_at == 12.0
    assert tracking.for_trial("f00d5_00003", 99.0).run_id == trial.run_id  # a restart: same run
    standalone = TrialTracking(mode=WandbMode.offline, project="p", dir=str(tmp_path))
    assert standalone.for_trial("t", 0.0).run_id is None  # W&B picks one


def test_credentials_come_from_the_environment_or_a_netrc_entry(tmp_path):
    netrc = tmp_path / "netrc"
    env = {"NETRC": str(netrc), "WANDB_BASE_URL": "https://wandb.example.com"}
    assert not has_credentials(env)
    assert has_credentials(env | {"WANDB_API_KEY": "k" * 40})
    netrc.write_text("machine other.example.com login user password secret\n")
    assert not has_credentials(env)
    netrc.write_text("machine wandb.example.com login user password secret\n")
    assert has_credentials(env)
