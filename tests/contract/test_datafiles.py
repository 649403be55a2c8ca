"""Data files read and checked in one place (plan, run and the trial): every refusal is one
line naming the file, the line or row, and the column."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from contract.config import GLUE_FILES, DataConfig
from contract.datafiles import GLUE_COLUMNS, DataError, read_task_files

GLUE_DIR = Path(__file__).resolve().parents[3] / "shared" / "data" / "glue"
needs_glue = pytest.mark.skipif(not GLUE_DIR.is_dir(), reason=f"GLUE files not at {GLUE_DIR}")


def _glue(task: str, glue_dir: Path) -> DataConfig:
    return DataConfig(source="glue", task=task, glue_dir=str(glue_dir))


def _refused(cfg: DataConfig, *fragments: str) -> str:
    with pytest.raises(DataError) as caught:
        read_task_files(cfg)
    message = str(caught.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message
    return message


def _copy_glue(tmp_path: Path, task_dir: str) -> Path:
    shutil.copytree(GLUE_DIR / task_dir, tmp_path / task_dir)
    return tmp_path / task_dir


def _write(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_every_glue_task_has_columns_matching_the_config():
    for task, files in GLUE_FILES.items():
        columns = GLUE_COLUMNS[task]
        assert files.num_labels == (len(columns.file_labels) if columns.file_labels else 1)
        assert columns.label_names is None or len(columns.label_names) == files.num_labels


def test_sources_without_files_read_nothing():
    assert read_task_files(DataConfig(source="synthetic")) is None
    assert read_task_files(DataConfig(source="glue", task="rte", glue_dir=None)) is None


# --- GLUE ------------------------------------------------------------------------------------


@needs_glue
def test_the_real_glue_files_pass_with_their_official_counts():
    mrpc, cola = read_task_files(_glue("mrpc", GLUE_DIR)), read_task_files(_glue("cola", GLUE_DIR))
    assert (len(mrpc.train), len(mrpc.validation)) == (3668, 408)
    assert (len(cola.train), len(cola.validation)) == (8551, 1043)
    assert len(mrpc.train.texts) == 2 and len(cola.train.texts) == 1
    assert mrpc.train.labels.count(1) == 2474 and cola.validation.labels.count(0) == 322


@needs_glue
def test_a_cola_file_with_a_column_cut_out_is_refused(tmp_path):
    # `cut -f1,2,4 train.tsv`: the sentence moves to field 3, and no line has a field 4.
    cola = _copy_glue(tmp_path, "CoLA")
    lines = (GLUE_DIR / "CoLA" / "train.tsv").read_text().splitlines()
    _write(
        cola / "train.tsv",
        ["\t".join(line.split("\t")[:2] + line.split("\t")[3:]) for line in lines],
    )
    _refused(_glue("cola", tmp_path), "CoLA/train.tsv: line 1, column 'sentence': missing")


@needs_glue
def test_a_header_only_mrpc_train_file_is_refused(tmp_path):
    mrpc = _copy_glue(tmp_path, "MRPC")
    header = (GLUE_DIR / "MRPC" / "train.tsv").read_bytes().split(b"\n")[0]
    (mrpc / "train.tsv").write_bytes(header + b"\n")
    _refused(_glue("mrpc", tmp_path), "MRPC/train.tsv: no data rows")


@needs_glue
@pytest.mark.parametrize(
    ("content", "fragments"),
    [
        (b"", ["dev.tsv: the file is empty"]),
        (b"\x89PNG\r\n\x1a\n\x00\x00", ["dev.tsv: line 1, column 1: byte 0x89 is not UTF-8"]),
        (b"Quality\tx\n1\tcaf\xe9\n", ["dev.tsv: line 2, column 6: byte 0xe9 is not UTF-8"]),
        (b"Quality\t#1 ID\n\x00\x01\n", ["dev.tsv: line 2 holds a NUL byte"]),
        (b"a\tb\n1\t2\n", ["dev.tsv: no column '#1 String'"]),
    ],
    ids=["empty", "binary", "latin-1", "nul", "wrong-header"],
)
def test_glue_files_that_are_not_tsv_text_name_the_file(tmp_path, content, fragments):
    mrpc = _copy_glue(tmp_path, "MRPC")
    (mrpc / "dev.tsv").write_bytes(content)
    _refused(_glue("mrpc", tmp_path), *fragments)


def test_glue_unexpected_label_names_line_and_column(tmp_path):
    header = "index\tsentence1\tsentence2\tlabel"
    _write(tmp_path / "RTE" / "train.tsv", [header, "0\ta\tb\tentailment", "1\tc\td\tmaybe"])
    _write(tmp_path / "RTE" / "dev.tsv", [header, "0\ta\tb\tentailment"])
    _refused(
        _glue("rte", tmp_path),
        "RTE/train.tsv: line 3, column 'label': label 'maybe'; expected one of",
    )


def test_glue_column_empty_in_every_row_is_refused(tmp_path):
    header = "index\tsentence1\tsentence2\tlabel"
    _write(tmp_path / "RTE" / "train.tsv", [header, "0\ta\t\tentailment", "1\tc\t \tentailment"])
    _write(tmp_path / "RTE" / "dev.tsv", [header, "0\ta\tb\tentailment"])
    _refused(_glue("rte", tmp_path), "RTE/train.tsv: column 'sentence2' is empty in every row")


def test_glue_stray_tab_is_refused(tmp_path):
    header = "index\tsentence1\tsentence2\tlabel"
    _write(tmp_path / "RTE" / "train.tsv", [header, "0\ta\tb\tc\tentailment"])
    _write(tmp_path / "RTE" / "dev.tsv", [header, "0\ta\tb\tentailment"])
    _refused(_glue("rte", tmp_path), "RTE/train.tsv: line 2 has 5 fields, more than the 4")


def test_glue_missing_files_name_the_layout(tmp_path):
    _refused(_glue("rte", tmp_path), "RTE/train.tsv not found", "glue_data layout")


# --- user files ------------------------------------------------------------------------------


def _files(tmp_path: Path, train: bytes, validation: bytes | None = None, suffix=".csv", **kw):
    (tmp_path / f"train{suffix}").write_bytes(train)
    (tmp_path / f"dev{suffix}").write_bytes(train if validation is None else validation)
    return DataConfig(
        source="files",
        train_file=str(tmp_path / f"train{suffix}"),
        validation_file=str(tmp_path / f"dev{suffix}"),
        **{"text_columns": ["text"], "label_column": "label", **kw},
    )


GOOD_CSV = b"text,label\ngood,pos\nbad,neg\n"


@pytest.mark.parametrize(
    ("suffix", "train", "fragments"),
    [
        (".csv", b"text,label\ngood,pos\n,neg\n", ["train.csv: line 3, column 'text': empty text"]),
        (".csv", b"text,label\ngood,pos\n  ,neg\n", ["line 3, column 'text': empty text"]),
        (".csv", b"text,label\ngood,pos\nbad\n", ["line 3, column 'label': missing"]),
        (".csv", b"text,label\ngood,pos,x\n", ["line 2 has 3 fields, more than the 2"]),
        (".csv", b"text,label\n", ["train.csv: no data rows"]),
        (".csv", b"", ["train.csv: the file is empty"]),
        (".csv", b"text,label\nna\xefve,pos\n", ["train.csv: line 2, column 3: byte 0xef"]),
        (".csv", b"\xff\xfet\x00e\x00", ["train.csv: line 1, column 1: byte 0xff is not UTF-8"]),
        (".csv", b"PK\x03\x04\x00\x00junk", ["train.csv: line 1 holds a NUL byte"]),
        (".csv", b"sentence,label\na,b\n", ["train.csv: no column 'text'; columns present"]),
        (".csv", b"text,label\na,pos\nb,pos\n", ["column 'label' needs two or more classes"]),
        (
            ".jsonl",
            b'{"text": "a", "label": 1}\n{"text": "\xe9"}',
            ["line 2, column 11: byte 0xe9"],
        ),
        (".jsonl", b'{"text": "a", "label": 1}\n{"text": "b"', ["line 2, column 13: not valid"]),
        (".jsonl", b'[{"text": "a", "label": 1}]\n', ["line 1 is a JSON list, not an object"]),
        (".jsonl", b'{"text": "a", "label": 1}\n{"label": 0}\n', ["line 2, column 'text'"]),
        (".jsonl", b'{"text": 5, "label": 1}\n{"text": "b", "label": 0}\n', ["int (5), not text"]),
        (".jsonl", b'{"text": null, "label": 1}\n{"text": "b", "label": 0}\n', ["empty text"]),
        (".jsonl", b'{"text": "a", "label": [1]}\n', ["label [1] is not a class"]),
        (".parquet", b"PAR1 this is not parquet", ["not a readable Parquet file"]),
        (".xlsx", b"", ["unsupported extension"]),
    ],
)
def test_bad_user_files_are_refused_in_one_line(tmp_path, suffix, train, fragments):
    cfg = _files(tmp_path, train, suffix=suffix)
    _refused(cfg, *fragments)


def test_unknown_validation_label_names_line_and_training_labels(tmp_path):
    cfg = _files(tmp_path, GOOD_CSV, b"text,label\nfine,pos\nfine,meh\n")
    _refused(cfg, "dev.csv: line 3, column 'label': label 'meh' does not occur", "['neg', 'pos']")


@pytest.mark.parametrize("score", ["high", "nan", "inf", "1e39", ""])
def test_regression_scores_must_be_finite_numbers(tmp_path, score):
    cfg = _files(tmp_path, f"text,label\na,0.5\nb,{score}\n".encode(), problem_type="regression")
    _refused(cfg, "line 3, column 'label'", "not a finite number")


def test_a_directory_given_as_a_file_is_refused(tmp_path):
    cfg = _files(tmp_path, GOOD_CSV).model_copy(update={"validation_file": str(tmp_path)})
    _refused(cfg, "data.validation_file:", "is a directory, not a file")


def test_parquet_cells_are_checked_like_text_files(tmp_path):
    pd.DataFrame({"text": ["a", None], "label": [1, 0]}).to_parquet(tmp_path / "train.parquet")
    cfg = _files(tmp_path, (tmp_path / "train.parquet").read_bytes(), suffix=".parquet")
    _refused(cfg, "train.parquet: row 2, column 'text': empty text")


def test_integer_classes_stored_as_floats_are_the_same_class(tmp_path):
    # pandas writes an integer column with a gap as floats; 1.0 in one file is 1 in the other.
    pd.DataFrame({"text": ["a", "b"], "label": [1.0, 0.0]}).to_parquet(tmp_path / "t.parquet")
    pd.DataFrame({"text": ["c"], "label": [1]}).to_parquet(tmp_path / "v.parquet")
    cfg = DataConfig(
        source="files",
        train_file=str(tmp_path / "t.parquet"),
        validation_file=str(tmp_path / "v.parquet"),
        text_columns=["text"],
    )
    files = read_task_files(cfg)
    assert files.label_names == ("0", "1")
    assert (files.train.labels, files.validation.labels) == ([1, 0], [1])


def test_quoted_csv_fields_keep_commas_newlines_and_na(tmp_path):
    train = b'text,label\n"a, b\nc",pos\nNA,neg\nnull,pos\n'
    files = read_task_files(_files(tmp_path, train))
    assert files.train.texts == (["a, b\nc", "NA", "null"],)
    assert files.train.labels == [1, 0, 1]
