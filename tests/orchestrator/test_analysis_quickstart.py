"""`analyze` on real quickstart experiment directories (checked in under tests/fixtures/): the
first quickstart's 8 trials (2 sizes x 2 fractions), and today's 12 (two grids: 3 depths x 3
fractions on 1 worker; bert-tiny-L2 at 100 % on 1 and 2 workers x 2 seeds), which fits a law
along every axis, with intervals on each."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from orchestrator.analysis import analyze

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
FIXTURE = FIXTURES / "quickstart_experiment"


@pytest.fixture(scope="module")
def analysed(tmp_path_factory):
    directory = tmp_path_factory.mktemp("qs") / "quickstart"
    shutil.copytree(FIXTURE, directory)
    return directory, analyze(directory)


def test_every_output_is_written(analysed):
    directory, _ = analysed
    out = directory / "analysis"
    for name in ("summary.json", "report.md", "report.html"):
        assert (out / name).is_file()
    for name in ("model_axis", "data_axis", "compute_axis"):
        assert (out / f"{name}.png").is_file() and (out / f"{name}.svg").is_file()
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 3


def test_summary_matches_the_results_table(analysed):
    directory, _ = analysed
    table = pd.read_csv(directory / "results.csv")
    summary = json.loads((directory / "analysis" / "summary.json").read_text())
    assert summary["trials"]["in_results"] == len(table) == 8
    assert summary["trials"]["finished"] == 8 and summary["trials"]["failed"] == 0
    assert summary["experiment"]["metric"] == "accuracy"
    recommendation = summary["recommendation"]["model"]
    assert recommendation["choice"] in set(table["model.name"])
    assert recommendation["text"]
    # Two model sizes and two fractions per curve: too few points for a power law, and each
    # curve says so instead of fitting.
    for curve in summary["fits"]["model_axis"]["curves"] + summary["fits"]["data_axis"]["curves"]:
        assert curve["fit"] is None and "3" in curve["refusal"]


def test_the_quickstart_grids_fit_a_law_along_every_axis_with_intervals(tmp_path):
    directory = tmp_path / "quickstart"
    shutil.copytree(FIXTURES / "quickstart_grid_experiment", directory)
    summary = analyze(directory).summary
    assert summary["trials"]["finished"] == 12
    assert summary["did_not_learn"] == []  # every trial clearly above chance (0.5)
    # Only the planned cells are expected: no 2-worker cell of the first grid is "missing".
    assert summary["missing_cells"] == [] and summary["absent_cells"] == []
    # One pair of seeds that agreed to 0.001 is no noise scale: no cell is called an outlier.
    assert summary["outliers"] == []
    fits = summary["fits"]
    curves = fits["model_axis"]["curves"] + fits["data_axis"]["curves"]
    assert len(curves) == 6 and all(c["fit"] and c["refusal"] is None for c in curves)
    # Intervals along every axis: where a second seed gives a curve more points than constants.
    with_intervals = {
        (axis, tuple(c["key"].values()))
        for axis in ("model_axis", "data_axis")
        for c in fits[axis]["curves"]
        if c["fit"]["ci95"]
    }
    assert with_intervals == {("model_axis", (1.0,)), ("data_axis", ("bert-tiny-L2",))}
    (joint,) = fits["joint"]
    assert joint["fit"]["ci95"]  # 10 points for 5 constants
    for clock in ("train_time_s", "trial_wall_s"):  # only L2 ran on 2 workers
        (amdahl,) = fits["amdahl"][clock]
        assert amdahl["key"]["model"] == "bert-tiny-L2"
        low, high = amdahl["fit"]["ci95"]["s"]
        assert 0 < low <= amdahl["fit"]["params"]["s"] <= high < 1
    recommendation = summary["recommendation"]
    assert recommendation["model"]["choice"] == "bert-tiny-L3"
    # L3 ran on one worker count: the workers answer is read where workers were swept.
    assert recommendation["workers"]["question"].startswith("Workers for bert-tiny-L2 at 100 %")
