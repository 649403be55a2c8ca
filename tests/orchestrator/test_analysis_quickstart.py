"""`analyze` on real quickstart experiment directories (checked in under tests/fixtures/): the
first quickstart's 8 trials (2 sizes x 2 fractions), and today's 18 (3 depths x 3 fractions x
1 and 2 workers), which fits a law along every axis."""

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


def test_the_quickstart_grid_fits_a_law_along_every_axis(tmp_path):
    directory = tmp_path / "quickstart"
    shutil.copytree(FIXTURES / "quickstart_grid_experiment", directory)
    summary = analyze(directory).summary
    assert summary["trials"]["finished"] == 18
    assert summary["did_not_learn"] == []  # every trial clearly above chance (0.5)
    fits = summary["fits"]
    curves = fits["model_axis"]["curves"] + fits["data_axis"]["curves"]
    assert len(curves) == 6 and all(c["fit"] and c["refusal"] is None for c in curves)
    (joint,) = fits["joint"]
    assert joint["fit"]["ci95"]  # 9 cells for 5 constants: intervals
    for amdahl in fits["amdahl"]["train_time_s"]:  # 1 and 2 workers pin the serial fraction
        assert 0 < amdahl["fit"]["params"]["s"] < 1
    assert summary["recommendation"]["model"]["choice"] == "bert-tiny-L3"
