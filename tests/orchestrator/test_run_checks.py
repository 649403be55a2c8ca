"""`run` refuses bad data and unwritable paths in one line, before Ray starts."""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import pytest
import ray

from orchestrator.cli import main
from orchestrator.spec import load_spec
from trainables.data import load_task_data

FILES_SPACE = """
name: mine
data:
  source: files
  train_file: {train}
  validation_file: {validation}
  text_columns: [{column}]
  label_column: label
model: {{from_scratch: true, tokenizer: wordpiece}}
"""


def _run(tmp_path, capsys, *, column="text", validation_labels=("pos", "neg"), out=None):
    (tmp_path / "train.csv").write_text("text,label\ngood,pos\nbad,neg\n")
    rows = "".join(f"fine,{label}\n" for label in validation_labels)
    (tmp_path / "dev.csv").write_text("text,label\n" + rows)
    space = tmp_path / "space.yaml"
    space.write_text(
        textwrap.dedent(
            FILES_SPACE.format(
                train=tmp_path / "train.csv", validation=tmp_path / "dev.csv", column=column
            )
        )
    )
    code = main(["run", str(space), "-o", str(out or tmp_path / "experiment")])
    return code, capsys.readouterr().err


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"column": "sentence"}, "column 'sentence'"),
        ({"validation_labels": ("pos", "meh")}, "'meh'"),
    ],
)
def test_bad_data_is_caught_before_ray_starts(tmp_path, capsys, kwargs, message):
    code, err = _run(tmp_path, capsys, **kwargs)
    assert code == 2
    assert err.startswith("error: ") and message in err and err.count("\n") == 1
    assert not ray.is_initialized()
    assert not (tmp_path / "experiment").exists()


def test_unwritable_experiment_dir(tmp_path, capsys):
    blocker = tmp_path / "a-file"  # a directory cannot be made below a file, even by root
    blocker.write_text("")
    code, err = _run(tmp_path, capsys, out=blocker / "experiment")
    assert code == 2 and "cannot write the experiment directory" in err
    assert not ray.is_initialized()


GLUE_DIR = Path(__file__).resolve().parents[3] / "shared" / "data" / "glue"
needs_glue = pytest.mark.skipif(not GLUE_DIR.is_dir(), reason=f"GLUE files not at {GLUE_DIR}")


def _cut_cola(task_dir: Path) -> None:
    # `cut -f1,2,4`: the judgement column gone, the sentence in field 3.
    lines = (GLUE_DIR / "CoLA" / "train.tsv").read_text().splitlines()
    fields = [line.split("\t") for line in lines]
    (task_dir / "train.tsv").write_text("".join(f"{a}\t{b}\t{d}\n" for a, b, _, d in fields))


def _header_only_mrpc(task_dir: Path) -> None:
    header = (GLUE_DIR / "MRPC" / "train.tsv").read_bytes().split(b"\n")[0]
    (task_dir / "train.tsv").write_bytes(header + b"\n")


@needs_glue
@pytest.mark.parametrize(
    ("task", "directory", "spoil", "message"),
    [
        ("cola", "CoLA", _cut_cola, "CoLA/train.tsv: line 1, column 'sentence': missing"),
        ("mrpc", "MRPC", _header_only_mrpc, "MRPC/train.tsv: no data rows"),
    ],
    ids=["cola-cut-column", "mrpc-header-only"],
)
def test_plan_run_and_the_trial_refuse_bad_glue_files_alike(
    tmp_path, capsys, task, directory, spoil, message
):
    shutil.copytree(GLUE_DIR / directory, tmp_path / "glue" / directory)
    spoil(tmp_path / "glue" / directory)
    space = tmp_path / "space.yaml"
    space.write_text(
        f"name: g\ndata: {{source: glue, task: {task}, glue_dir: {tmp_path / 'glue'}}}\n"
        "model: {from_scratch: true, tokenizer: wordpiece}\n"
    )
    errors = []
    for command in (["plan", str(space)], ["run", str(space), "-o", str(tmp_path / "out")]):
        assert main(command) == 2
        errors.append(capsys.readouterr().err)
    assert errors[0] == errors[1] and errors[0].count("\n") == 1 and message in errors[0]
    assert not ray.is_initialized() and not (tmp_path / "out").exists()
    # The trial reads the data through the same check: the same words.
    cfg = load_spec(space).trials[0].data
    with pytest.raises(ValueError) as caught:
        load_task_data(cfg)
    assert str(caught.value) in errors[0]


def test_an_experiment_dir_that_is_a_file_is_refused(tmp_path, capsys):
    (tmp_path / "taken").write_text("notes")
    code, err = _run(tmp_path, capsys, out=tmp_path / "taken")
    assert code == 2 and err == f"error: --experiment-dir {tmp_path / 'taken'} is a file; " + (
        "name a new or empty directory\n"
    )
    assert (tmp_path / "taken").read_text() == "notes" and not ray.is_initialized()
