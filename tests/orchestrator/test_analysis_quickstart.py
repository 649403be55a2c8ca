"""`analyze` on a real quickstart experiment directory (checked in under tests/fixtures/)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from orchestrator.analysis import analyze

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "quickstart_experiment"


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
