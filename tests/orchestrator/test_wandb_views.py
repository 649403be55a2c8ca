"""The sweep's W&B views from the driver: summary run, listing and sync (offline; no Ray)."""

from __future__ import annotations

import json
import subprocess
import textwrap

import pandas as pd
import pytest
import wandb

from contract.tracking import WandbMode, run_id
from orchestrator.cli import main
from orchestrator.errors import UserError
from orchestrator.spec import load_spec
from orchestrator.wandb.offline import find_run_files, read_run
from orchestrator.wandb.views import SweepTracking, describe_runs, sync_runs
from tests.orchestrator.test_analysis_analyze import write_experiment  # the runner's format

SPACE = """
name: views
data: {source: synthetic}
model: {from_scratch: true, tokenizer: wordpiece}
axes:
  compute.num_workers: [1, 2]
wandb: {project: unit, mode: offline}
"""


@pytest.fixture
def spec(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    path = tmp_path / "space.yaml"
    path.write_text(textwrap.dedent(SPACE))
    return load_spec(path)


def chart(run_dir, logged: dict, name: str) -> pd.DataFrame:
    table = json.loads((run_dir / "files" / logged[f"{name}_table/path"]).read_text())
    return pd.DataFrame(table["data"], columns=table["columns"])


def test_summary_run_logs_the_results_table_and_every_scaling_view(tmp_path, spec, capsys):
    experiment = tmp_path / "experiment"
    tracking = SweepTracking.start(spec, experiment)
    assert tracking.trials.mode is WandbMode.offline and tracking.trials.axes[-1] == "train.seed"
    # What the sweep would have written: 2 models x 2 fractions x 2 worker counts, one failed.
    write_experiment(
        experiment,
        models=("bert-tiny", "bert-mini"),
        fractions=(0.3, 1.0),
        workers=(1, 2),
        seeds=(0,),
        failed=(("bert-mini", 0.3, 2, 0),),
    )
    tracking.finish()
    wandb.teardown()  # wandb's service writes the run file out after finish() returns

    [file] = find_run_files(experiment / "wandb")
    run = read_run(file.path)
    sweep = tracking.trials.sweep
    assert run.run_id == run_id(sweep, "summary") and run.group == sweep
    assert run.job_type == "sweep-summary" and run.config["spec"]["name"] == "views"
    [logged] = run.history
    results = chart(file.directory, {"results_table/path": logged["results/path"]}, "results")
    assert len(results) == 8 and results["wandb_run_id"][0] == run_id(sweep, "t000")
    assert run.summary["failed"] == 1 and run.summary["finished"] == 7
    assert run.summary["best_trial"].startswith("bert-mini·f1·")

    by_params = chart(file.directory, logged, "scaling/metric_vs_params")
    assert set(by_params["lineKey"]) == {"data.train_fraction=0.3", "data.train_fraction=1.0"}
    by_examples = chart(file.directory, logged, "scaling/metric_vs_train_examples")
    assert set(by_examples["lineKey"]) == {"model=bert-tiny", "model=bert-mini"}
    assert sorted(by_examples["step"].unique()) == [3000, 10000]
    speedup = chart(file.directory, logged, "scaling/speedup_vs_workers")
    reference = speedup[speedup["step"] == 1]
    assert (reference["lineVal"] == 1.0).all()  # one worker is the reference of each line
    assert (speedup[speedup["step"] == 2]["lineVal"] > 1.0).all()
    assert "scaling/train_time_vs_workers_table/path" in logged
    latency = chart(file.directory, logged, "scaling/latency_p95_vs_params")
    assert set(latency["lineKey"]) == {"batch_size=1", "batch_size=32"}
    throughput = chart(file.directory, logged, "scaling/inference_throughput_vs_workers")
    assert set(throughput["lineKey"]) == {"model=bert-tiny", "model=bert-mini"}
    to_target = chart(file.directory, logged, "scaling/time_to_target_vs_workers")
    assert sorted(to_target["step"].unique()) == [1, 2]

    err = capsys.readouterr().err
    assert "W&B: offline, project 'unit'" in err
    assert "warning: W&B: no run files here for 8 trial(s)" in err  # none ran: no trial runs
    assert f"scalesweep wandb {experiment.resolve()} --sync" in err


def test_a_disabled_sweep_makes_no_run(tmp_path, spec):
    spec = load_spec(spec.path, ["wandb.mode=disabled"])
    tracking = SweepTracking.start(spec, tmp_path / "experiment")
    assert tracking.trials is None and tracking.run is None
    tracking.finish()
    assert not (tmp_path / "experiment" / "wandb").exists()


def test_online_without_a_key_logs_offline_after_one_notice(tmp_path, spec, monkeypatch, capsys):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    tracking = SweepTracking.start(load_spec(spec.path, ["wandb.mode=online"]), tmp_path / "e")
    assert tracking.trials.mode is WandbMode.offline
    tracking.finish()
    notices = [line for line in capsys.readouterr().err.splitlines() if "no API key" in line]
    assert len(notices) == 1 and "logging offline instead" in notices[0]


def test_resuming_a_sweep_keeps_its_wandb_name(tmp_path, spec):
    first = SweepTracking.start(spec, tmp_path / "experiment")
    first.finish()
    again = SweepTracking.start(spec, tmp_path / "experiment")
    again.finish()
    assert again.trials.sweep == first.trials.sweep  # same run ids on resume
    assert again.trials.sweep.startswith("experiment-")
    other = SweepTracking.start(spec, tmp_path / "other" / "experiment")
    other.finish()
    assert other.trials.sweep != first.trials.sweep  # same name elsewhere: other runs


def test_wandb_command_lists_runs_and_syncs_the_offline_ones(tmp_path, spec, monkeypatch, capsys):
    experiment = tmp_path / "experiment"
    with pytest.raises(UserError, match="no W&B runs"):
        describe_runs(experiment)
    SweepTracking.start(spec, experiment).finish()
    wandb.teardown()
    assert main(["wandb", str(experiment)]) == 0
    out = capsys.readouterr().out
    assert "W&B project 'unit', group 'experiment-" in out and "1 run(s)" in out
    assert "summary" in out and "finished" in out and "1 offline file(s) not uploaded" in out

    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    assert main(["wandb", str(experiment), "--sync"]) == 2  # a one-line error: no key
    assert "no API key" in capsys.readouterr().err

    calls = []
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    monkeypatch.setattr(
        subprocess,
        "run",
        lambda command: calls.append(command) or subprocess.CompletedProcess(command, 0),
    )
    assert sync_runs(experiment) == 0
    [file] = find_run_files(experiment / "wandb")
    assert calls and calls[0][-3:] == ["wandb", "sync", str(file.directory)]
    file.path.with_name(file.path.name + ".synced").touch()  # what `wandb sync` leaves behind
    assert sync_runs(experiment) == 0 and len(calls) == 1
    assert "nothing to upload" in capsys.readouterr().out
