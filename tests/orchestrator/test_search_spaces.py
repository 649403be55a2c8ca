"""Every shipped search space validates, plans, and documents itself."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.plan import plan_rows, render_plan
from orchestrator.spec import load_spec

SPACES = sorted((Path(__file__).resolve().parents[2] / "search_spaces").glob("*.yaml"))


def test_there_are_search_spaces():
    names = {p.stem for p in SPACES}
    assert {"quickstart", "mrpc_bert_ladder"} <= names


@pytest.mark.parametrize("path", SPACES, ids=lambda p: p.stem)
def test_search_space_validates_and_plans(path):
    spec = load_spec(path)
    assert spec.name == path.stem
    rows = plan_rows(spec)
    assert len(rows) == len(spec.trials) > 0
    assert "trials" in render_plan(spec, rows)


@pytest.mark.parametrize("path", SPACES, ids=lambda p: p.stem)
def test_search_space_header_says_question_command_and_budget(path):
    header = path.read_text().split("\nname:")[0]
    assert header.startswith("# ")
    assert f"scalesweep run  search_spaces/{path.name}" in header
    assert "Budget:" in header


def test_quickstart_is_offline_and_fits_a_two_core_machine():
    spec = load_spec(Path(__file__).resolve().parents[2] / "search_spaces/quickstart.yaml")
    assert len(spec.trials) == 12
    # Enough points along each axis for analyze to fit its law: 3 for a power law's three
    # constants on one worker, and a cell on 2 worker counts with 2 seeds, for Amdahl's serial
    # fraction with an interval (one T1 per seed).
    one_worker = [t for t in spec.trials if t.compute.num_workers == 1 and t.train.seed == 0]
    assert len({(t.model.num_layers, t.data.train_fraction) for t in one_worker}) == 3 * 3
    compute_cell = {
        (t.compute.num_workers, t.train.seed)
        for t in spec.trials
        if (t.model.num_layers, t.data.train_fraction) == (2, 1.0)
    }
    assert compute_cell == {(1, 0), (1, 1), (2, 0), (2, 1)}
    for trial in spec.trials:
        assert trial.data.source == "synthetic"
        assert trial.model.from_scratch and trial.model.tokenizer == "wordpiece"
        assert not trial.compute.use_gpu
        assert trial.compute.trial_resources()["CPU"] <= 2
