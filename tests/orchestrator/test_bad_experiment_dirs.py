"""`results` and `analyze` on damaged experiment directories: one line and exit 2, or a
result; never a traceback, and never a change to the directory (but analyze's analysis/)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from orchestrator.cli import main

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "quickstart_experiment"


@pytest.fixture
def experiment(tmp_path) -> Path:
    directory = tmp_path / "quickstart"
    shutil.copytree(FIXTURE, directory)
    return directory


def _snapshot(directory: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(directory)): p.read_bytes()
        for p in directory.rglob("*")
        if p.is_file() and "analysis" not in p.relative_to(directory).parts
    }


def _one_line_error(capsys, *args) -> str:
    assert main([*map(str, args)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return err


def _cut(path: Path, keep: float) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


@pytest.mark.parametrize("command", ["results", "analyze"])
@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda d: _cut(d / "results.csv", 0.93), "results.csv: line 9 has 2"),
        (lambda d: (d / "results.csv").write_bytes(b""), "results.csv is empty: no header row"),
        (lambda d: (d / "results.csv").write_bytes(b"\xff\xfe\x00"), "results.csv: not UTF-8"),
        (
            lambda d: (d / "results.csv").write_text(
                (d / "results.csv").read_text().replace(",0.724\n", ",high\n", 1)
            ),
            "column 'best_accuracy': 'high' is not a number",
        ),
        (lambda d: _cut(d / "experiment.json", 0.5), "experiment.json is not valid JSON"),
        (lambda d: (d / "experiment.json").write_text("[]"), "holds a JSON list, not an object"),
        (lambda d: (d / "experiment.json").unlink(), "experiment.json not found"),
    ],
    ids=["cut-mid-line", "empty", "utf-16", "not-a-number", "json-cut", "json-list", "no-json"],
)
def test_a_damaged_directory_is_one_line(experiment, capsys, command, damage, message):
    damage(experiment)
    before = _snapshot(experiment)
    assert message in _one_line_error(capsys, command, experiment)
    assert _snapshot(experiment) == before


def test_torn_and_junk_history_lines_are_skipped_and_said(experiment, capsys):
    histories = sorted(experiment.glob("trials/*/history.jsonl"))
    with histories[0].open("a") as f:
        f.write('{"epoch": 4, "train_lo')  # a driver killed mid-write
    histories[1].write_bytes(histories[1].read_bytes() + b'\xff{"epoch": "x"}\n[1]\n"s"\n')
    before = _snapshot(experiment)
    assert main(["analyze", str(experiment)]) == 0
    report = (experiment / "analysis" / "report.md").read_text()
    assert "4 unreadable line(s) in history.jsonl files were skipped" in report
    assert main(["results", str(experiment)]) == 0
    assert _snapshot(experiment) == before


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--target", "7"], "target 7.0 is outside the range of accuracy"),
        (["--epsilon", "-1"], "epsilon must be ≥ 0"),
        (["--price-per-gpu-hour", "-2"], "must be a positive number"),
    ],
)
def test_analysis_options_out_of_range_are_one_line(experiment, capsys, option, message):
    assert message in _one_line_error(capsys, "analyze", experiment, *option)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "expected a mapping of settings"),
        (b"\x80", "not a UTF-8 text file"),
        (b"%\n", "malformed YAML"),
    ],
    ids=["empty", "binary", "not-yaml"],
)
def test_analyze_with_a_damaged_spec_writes_the_analysis_then_says_so(
    experiment, capsys, content, message
):
    # Found by a random fuzz run: the W&B step read spec.yaml with no checks (a traceback).
    (experiment / "spec.yaml").write_bytes(content)
    err = _one_line_error(capsys, "analyze", experiment)
    assert message in err and "the analysis is written, its W&B upload skipped" in err
    assert (experiment / "analysis" / "report.html").is_file()
