"""The experiment directory's home (a URI): every file lands there as it is written, whole;
a working copy is made from it on any machine; `results` and `analyze` read it directly."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from orchestrator.cli import main
from orchestrator.experiment import HOME_FILE, UNSAVED_FILE, ExperimentDir, Ledger
from orchestrator.spec import load_spec
from orchestrator.storage import (
    ArrowStore,
    LocalStore,
    StorageError,
    open_store,
    uri_join,
    working_copy,
)

QUICKSTART = Path(__file__).resolve().parents[1] / "fixtures" / "quickstart_experiment"
TRIAL = "t_00000"


def _spec(tmp_path: Path):
    space = tmp_path / "space.yaml"
    space.write_text("name: w\ndata: {source: synthetic}\nmodel: {from_scratch: true}\n")
    return load_spec(space)


def _files(store) -> dict[str, bytes]:
    return {name: store.read(name) for name in store.names()}


def test_uri_join_keeps_the_query_at_the_end():
    assert uri_join("s3://b/sweeps/", "x", "tune") == "s3://b/sweeps/x/tune"
    assert uri_join("s3://b/s?endpoint_override=h:9", "x") == "s3://b/s/x?endpoint_override=h:9"


def test_a_working_copy_mirrors_the_uri_under_the_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("SCALESWEEP_CACHE", str(tmp_path))
    assert working_copy("s3://bucket/sweeps/q") == tmp_path / "experiments/s3/bucket/sweeps/q"


@pytest.mark.parametrize("kind", ["local", "file"])
def test_a_store_replaces_whole_files_and_lists_what_it_holds(tmp_path, kind):
    store = LocalStore(tmp_path / "d") if kind == "local" else ArrowStore(f"file://{tmp_path}/d")
    store.write("a/b.txt", b"one")
    store.write("a/b.txt", b"two")
    store.write("tune/state.json", b"{}")
    store.write("c.csv", b"x\n")
    assert store.read("a/b.txt") == b"two" and store.exists("c.csv")
    assert list(store.names()) == ["a/b.txt", "c.csv", "tune/state.json"]  # no .tmp left
    assert list(store.names(lambda name: not name.startswith("tune"))) == ["a/b.txt", "c.csv"]
    store.delete("c.csv")
    store.delete("c.csv")  # gone already: nothing to do
    assert not store.exists("c.csv")
    with pytest.raises(FileNotFoundError):
        store.read("c.csv")


def test_every_write_lands_in_the_home_as_it_happens(tmp_path, s3, epoch_row):
    home = f"{s3.uri}/sweeps/w"
    experiment = ExperimentDir(tmp_path / "w", home=home)
    experiment.create(_spec(tmp_path))
    config = _spec(tmp_path).trials[0].model_dump(mode="json")
    ledger = Ledger(experiment)
    remote = open_store(home)
    ledger.start(TRIAL, config)
    assert remote.read("results.csv") == experiment.results_csv.read_bytes()
    ledger.add_row(TRIAL, config, epoch_row(epoch=1))
    ledger.add_row(TRIAL, config, epoch_row(epoch=2))
    lines = remote.read(f"trials/{TRIAL}/history.jsonl").decode().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2]  # appended = rewritten whole
    ledger.fail(TRIAL, config, "Traceback\nValueError: boom")
    assert b"boom" in remote.read(f"trials/{TRIAL}/error.txt")
    local = LocalStore(experiment.path)
    assert _files(remote) == {n: b for n, b in _files(local).items() if n != HOME_FILE}
    # The working copy remembers its home: anyone opening the directory writes there too.
    ExperimentDir(experiment.path).write_file("wandb/sweep.json", "{}")
    assert remote.read("wandb/sweep.json") == b"{}"


def test_a_working_copy_is_made_from_the_uri_on_a_fresh_machine(tmp_path, s3, monkeypatch):
    monkeypatch.setenv("SCALESWEEP_CACHE", str(tmp_path / "cache"))
    home = f"{s3.uri}/sweeps/quickstart"
    remote = open_store(home)
    for name in LocalStore(QUICKSTART).names():
        remote.write(name, (QUICKSTART / name).read_bytes())
    remote.write("tune/experiment_state.json", b"{}")  # Tune's and Train's: not copied
    remote.write("train/run/checkpoint_000000/model.pt", b"weights")
    remote.write("wandb/offline-run-1/run-x.wandb", b"log")  # W&B's run files: not copied

    experiment = ExperimentDir.open(home + "/")
    assert experiment.home == home and experiment.path == working_copy(home)
    copied = set(LocalStore(experiment.path).names())
    assert copied == set(LocalStore(QUICKSTART).names()) | {HOME_FILE}
    assert ExperimentDir(experiment.path).home == home
    assert len(experiment.load_records()) == len(pd.read_csv(QUICKSTART / "results.csv"))


def test_a_uri_that_holds_no_experiment_is_one_line(tmp_path, s3, monkeypatch, capsys):
    monkeypatch.setenv("SCALESWEEP_CACHE", str(tmp_path))
    assert main(["results", f"{s3.uri}/sweeps/nothing"]) == 2
    err = capsys.readouterr().err
    assert (
        err == f"error: {s3.uri}/sweeps/nothing: not an experiment directory (no experiment.json)\n"
    )
    assert main(["results", "s3://no-such-bucket-here/x"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: s3://no-such-bucket-here/x") and err.count("\n") == 1


def test_results_and_analyze_work_from_the_uri(tmp_path, s3, monkeypatch, capsys):
    monkeypatch.setenv("SCALESWEEP_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("WANDB_MODE", "disabled")
    home = f"{s3.uri}/sweeps/quickstart"
    remote = open_store(home)
    for name in LocalStore(QUICKSTART).names():
        remote.write(name, (QUICKSTART / name).read_bytes())

    assert main(["results", home]) == 0
    out = capsys.readouterr().out
    assert "8 trials" in out and f"table: {home}/results.csv" in out
    assert main(["analyze", home]) == 0
    assert f"analysis -> {home}/analysis" in capsys.readouterr().out
    written = {n for n in remote.names() if n.startswith("analysis/")}
    local = {n for n in LocalStore(working_copy(home)).names() if n.startswith("analysis/")}
    assert written == local and "analysis/report.md" in written


class _FlakyStore(LocalStore):
    """A home that refuses writes while ``down``."""

    down = True

    def write(self, name: str, data: bytes) -> None:
        if self.down:
            raise OSError("connection refused")
        super().write(name, data)


def test_a_home_that_refuses_writes_gets_them_later(tmp_path, capsys):
    experiment = ExperimentDir(tmp_path / "w", home="file:///unused")
    home = experiment._remote = _FlakyStore(tmp_path / "home")
    experiment.create(_spec(tmp_path))  # refused: one warning, no exception
    assert capsys.readouterr().err.count("could not write to file:///unused") == 1
    experiment.write_file("results.csv", "a\n")  # within the retry delay: not even tried
    assert capsys.readouterr().err == "" and not list(home.names())
    (experiment.path / "wandb" / "offline-run-1").mkdir(parents=True)
    (experiment.path / "wandb" / "offline-run-1" / "run.wandb").write_text("log")
    experiment.sync("wandb")  # still down: said once more, and remembered on disk
    assert "4 file(s) did not reach file:///unused" in capsys.readouterr().err
    assert (experiment.path / UNSAVED_FILE).read_text().split() == [
        "experiment.json",
        "results.csv",
        "spec.yaml",
        "wandb/offline-run-1/run.wandb",
    ]

    # The sweep is resumed later (another process): the home is up again, and gets them first.
    later = ExperimentDir(experiment.path)
    later._remote = home
    home.down = False
    later.pull()
    assert set(home.names()) == {
        "experiment.json",
        "results.csv",
        "spec.yaml",
        "wandb/offline-run-1/run.wandb",
    }
    assert not (experiment.path / UNSAVED_FILE).exists()
    assert later.results_csv.read_text() == "a\n"  # not replaced by an older one


def test_a_bad_uri_is_a_storage_error():
    with pytest.raises(StorageError):
        open_store("nosuchscheme://x/y").exists("a")


def test_a_local_copy_removes_nothing_it_was_not_asked_to(tmp_path):
    # remove_file is the only deletion, of one file, locally and in the home.
    shutil.copytree(QUICKSTART, tmp_path / "q")
    experiment = ExperimentDir(tmp_path / "q", home=f"file://{tmp_path}/home")
    experiment.write_file("results.csv", "a\n")
    experiment.remove_file("results.csv")
    assert not experiment.results_csv.exists() and not (tmp_path / "home/results.csv").exists()
    assert (tmp_path / "q" / "spec.yaml").is_file()
