"""`run` refuses bad data and unwritable paths in one line, before Ray starts."""

from __future__ import annotations

import textwrap

import pytest
import ray

from orchestrator.cli import main

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
