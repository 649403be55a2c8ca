"""A task's data files, read and checked: the one validation that ``plan``, ``run`` and the
trial share.

GLUE TSVs (``data.glue_dir``) and user files (``data.source: files``: csv, tsv, jsonl,
parquet) are read here into text columns and label ids (or scores), and refused, in one line
naming the file, the line (or row) and the column, when they cannot be trained on: a file that
is missing, not UTF-8, binary or not of its type; a column that is missing or empty; no data
rows; a label outside the label set. ``plan`` counts rows with it, ``run`` checks every source
with it before Ray starts, and ``trainables.data`` builds the trial's datasets from what it
returns, so all three accept exactly the same files.

Standard library only (pyarrow for Parquet, imported when a Parquet file is read), so the CLI
can check data without importing the training stack.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from contract.config import GLUE_FILES, DataConfig

__all__ = [
    "COLA_COLUMNS",
    "FILE_SUFFIXES",
    "GLUE_COLUMNS",
    "DataError",
    "GlueColumns",
    "Split",
    "TaskFiles",
    "glue_paths",
    "read_task_files",
]

FILE_SUFFIXES = (".csv", ".tsv", ".jsonl", ".json", ".parquet")
_CLASSIFICATION_METRICS = ("accuracy", "f1")
_REGRESSION_METRICS = ("pearson", "spearmanr")
_INT_LABEL = re.compile(r"-?\d+")
_FLOAT32_MAX = 3.4028234663852886e38  # labels become float32: larger scores would be inf


class DataError(ValueError):
    """A data file that cannot be trained on, said in one line: the file, where in it
    (line or row, column) and what would be valid."""


@dataclass(frozen=True)
class GlueColumns:
    """What the TSV columns of a GLUE task are called; the file layout is config.GLUE_FILES."""

    text: tuple[str, ...]  # one or two text columns
    label: str
    file_labels: tuple[str, ...] | None  # label strings in the TSV, in hub id order; None: scores
    label_names: tuple[str, ...] | None  # the hub's names for those ids


_BINARY = ("0", "1")
_NLI = ("entailment", "not_entailment")
COLA_COLUMNS = ("source", "label", "judgement", "sentence")  # CoLA's files have no header
GLUE_COLUMNS: dict[str, GlueColumns] = {
    "cola": GlueColumns(("sentence",), "label", _BINARY, ("unacceptable", "acceptable")),
    "sst2": GlueColumns(("sentence",), "label", _BINARY, ("negative", "positive")),
    "mrpc": GlueColumns(
        ("#1 String", "#2 String"), "Quality", _BINARY, ("not_equivalent", "equivalent")
    ),
    "stsb": GlueColumns(("sentence1", "sentence2"), "score", None, None),
    "qqp": GlueColumns(
        ("question1", "question2"), "is_duplicate", _BINARY, ("not_duplicate", "duplicate")
    ),
    "mnli": GlueColumns(
        ("sentence1", "sentence2"), "gold_label", ("entailment", "neutral", "contradiction"),
        ("entailment", "neutral", "contradiction"),
    ),
    "qnli": GlueColumns(("question", "sentence"), "label", _NLI, _NLI),
    "rte": GlueColumns(("sentence1", "sentence2"), "label", _NLI, _NLI),
    "wnli": GlueColumns(
        ("sentence1", "sentence2"), "label", _BINARY, ("not_entailment", "entailment")
    ),
}  # fmt: skip


@dataclass(frozen=True)
class Split:
    """One checked split: its text columns (one or two) and its labels, row by row."""

    path: Path
    texts: tuple[list[str], ...]
    labels: list[int] | list[float]  # class ids, or scores (regression)

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class TaskFiles:
    """A task's training and validation files, read and checked, and what scoring them needs."""

    train: Split
    validation: Split
    label_names: tuple[str, ...] | None  # None: regression
    metric_names: tuple[str, ...]

    @property
    def problem_type(self) -> str:
        return "regression" if self.label_names is None else "classification"

    @property
    def num_labels(self) -> int:
        return 1 if self.label_names is None else len(self.label_names)


def glue_paths(cfg: DataConfig) -> tuple[Path, Path]:
    """(train, validation) of a GLUE task in ``cfg.glue_dir``, the standard glue_data layout."""
    files = GLUE_FILES[cfg.task]
    task_dir = Path(cfg.glue_dir).expanduser() / files.directory
    return task_dir / "train.tsv", task_dir / files.validation_file


def read_task_files(cfg: DataConfig) -> TaskFiles | None:
    """Read and check the files ``cfg`` names (GLUE with ``glue_dir``, or ``source: files``);
    None for sources without files (GLUE from the hub, the synthetic task). Raises DataError."""
    if cfg.source == "glue" and cfg.glue_dir:
        return _read_glue(cfg)
    if cfg.source == "files":
        return _read_files(cfg)
    return None


# --- the table in a file ---------------------------------------------------------------------


@dataclass(frozen=True)
class _Table:
    """The columns a task uses, as read from one file, with where each row came from."""

    path: Path
    columns: dict[str, list[Any]]
    places: list[str]  # per row: "line 5" (text files) or "row 5" (Parquet)

    def __len__(self) -> int:
        return len(self.places)

    def where(self, index: int, column: str) -> str:
        return f"{self.path}: {self.places[index]}, column {column!r}"


def _decode(path: Path, what: str) -> str:
    """The file's text; a BOM is dropped (pandas and `datasets` drop MRPC's too)."""
    try:
        data = path.read_bytes()
    except OSError as err:
        raise DataError(f"{path}: cannot be read: {err.strerror or err}") from None
    if not data.strip():
        raise DataError(f"{path}: the file is empty; expected {what}")
    data = data.removeprefix(codecs.BOM_UTF8)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        column = err.start - data.rfind(b"\n", 0, err.start)
        raise DataError(
            f"{path}: line {line}, column {column}: byte 0x{data[err.start]:02x} is not UTF-8; "
            f"expected {what} in UTF-8 (re-save the file as UTF-8)"
        ) from None
    nul = text.find("\0")
    if nul >= 0:
        line = text.count("\n", 0, nul) + 1
        raise DataError(f"{path}: line {line} holds a NUL byte: a binary file, not {what}")
    return text


def _lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) of every non-blank line, LF or CRLF endings."""
    lines = ((n, line.removesuffix("\r")) for n, line in enumerate(text.split("\n"), 1))
    return [(n, line) for n, line in lines if line]


def _pick(
    path: Path, header: Sequence[str], records: list[tuple[int, list[str]]], wanted: list[str]
) -> _Table:
    """The ``wanted`` columns of delimited records, every record checked to have them."""
    index = {}
    for name in wanted:
        if name not in header:
            raise DataError(f"{path}: no column {name!r}; columns present: {list(header)}")
        if list(header).count(name) > 1:
            raise DataError(f"{path}: column {name!r} appears twice in the header")
        index[name] = list(header).index(name)
    columns: dict[str, list[Any]] = {name: [] for name in wanted}
    places = []
    for line, fields in records:
        if len(fields) > len(header):
            raise DataError(
                f"{path}: line {line} has {len(fields)} fields, more than the {len(header)} "
                f"columns ({', '.join(header)}); a stray delimiter inside a field?"
            )
        for name, i in index.items():
            if i >= len(fields):
                raise DataError(
                    f"{path}: line {line}, column {name!r}: missing (the line has {len(fields)} "
                    f"field(s); {name!r} is field {i + 1} of {len(header)}: {', '.join(header)})"
                )
            columns[name].append(fields[i])
        places.append(f"line {line}")
    return _Table(path, columns, places)


def _read_tsv(path: Path, wanted: list[str], names: Sequence[str] | None = None) -> _Table:
    """A tab-separated file with no quoting (GLUE sentences may begin with an unbalanced
    quote), its header in the first line unless ``names`` gives the columns."""
    rows = [(n, line.split("\t")) for n, line in _lines(_decode(path, "tab-separated text"))]
    if not rows:
        raise DataError(f"{path}: no lines; expected tab-separated text")
    if names is None:
        (_, header), rows = rows[0], rows[1:]
    else:
        header = list(names)
    return _pick(path, header, rows, wanted)


def _read_csv(path: Path, wanted: list[str]) -> _Table:
    text = _decode(path, "comma-separated text")
    reader = csv.reader(io.StringIO(text, newline=""))
    records, start = [], 1
    try:
        for fields in reader:
            if fields:  # a blank line
                records.append((start, fields))
            start = reader.line_num + 1
    except csv.Error as err:
        raise DataError(f"{path}: line {reader.line_num}: not well-formed CSV: {err}") from None
    if not records:
        raise DataError(f"{path}: no lines; expected comma-separated text")
    header, rows = records[0][1], records[1:]
    return _pick(path, header, rows, wanted)


def _read_jsonl(path: Path, wanted: list[str]) -> _Table:
    """JSON Lines: one object per line (a ``.json`` file too)."""
    columns: dict[str, list[Any]] = {name: [] for name in wanted}
    places = []
    for line, text in _lines(_decode(path, "JSON Lines (one object per line)")):
        if not text.strip():
            continue
        try:
            record = json.loads(text)
        except json.JSONDecodeError as err:
            raise DataError(
                f"{path}: line {line}, column {err.colno}: not valid JSON: {err.msg}"
            ) from None
        except RecursionError:
            raise DataError(f"{path}: line {line}: JSON nested too deeply") from None
        if not isinstance(record, dict):
            raise DataError(
                f"{path}: line {line} is a JSON {type(record).__name__}, not an object; "
                "expected JSON Lines: one object per line"
            )
        for name in wanted:
            if name not in record:
                raise DataError(
                    f"{path}: line {line}, column {name!r}: missing; the line has keys "
                    f"{list(record)[:10]}"
                )
            columns[name].append(record[name])
        places.append(f"line {line}")
    return _Table(path, columns, places)


def _read_parquet(path: Path, wanted: list[str]) -> _Table:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
        present = parquet.schema_arrow.names
        for name in wanted:
            if name not in present:
                raise DataError(f"{path}: no column {name!r}; columns present: {present}")
        table = parquet.read(columns=list(dict.fromkeys(wanted)))
        columns = {name: table.column(name).to_pylist() for name in wanted}
    except (pa.ArrowException, OSError, ValueError) as err:
        if isinstance(err, DataError):
            raise
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise DataError(f"{path}: not a readable Parquet file: {first}") from None
    rows = len(columns[wanted[0]]) if wanted else 0
    return _Table(path, columns, [f"row {i}" for i in range(1, rows + 1)])


_READERS = {
    ".csv": _read_csv,
    ".tsv": _read_tsv,
    ".jsonl": _read_jsonl,
    ".json": _read_jsonl,
    ".parquet": _read_parquet,
}


# --- cells -----------------------------------------------------------------------------------


def _texts(table: _Table, column: str, *, every_cell: bool) -> list[str]:
    """A text column. With ``every_cell``, an empty cell anywhere is an error; otherwise only a
    column empty in every row (the official GLUE files hold a few empty sentences)."""
    values = table.columns[column]
    for i, value in enumerate(values):
        if value is not None and not isinstance(value, str):
            raise DataError(
                f"{table.where(i, column)}: a {type(value).__name__} ({_show(value)}), not text"
            )
        if every_cell and not (value or "").strip():
            raise DataError(f"{table.where(i, column)}: empty text")
    texts = [value or "" for value in values]
    if not any(text.strip() for text in texts):
        raise DataError(f"{table.path}: column {column!r} is empty in every row")
    return texts


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _class_keys(table: _Table, column: str) -> list[str]:
    """Class labels as text, so "1" in a CSV and 1 in a JSON file are the same class."""
    keys = []
    for i, value in enumerate(table.columns[column]):
        if isinstance(value, float) and value.is_integer():
            value = int(value)  # Parquet and JSON may store integer classes as floats
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise DataError(
                f"{table.where(i, column)}: label {_show(value)} is not a class (text or an "
                "integer); for real-valued labels set problem_type: regression"
            )
        key = str(value)
        if not key.strip():
            raise DataError(f"{table.where(i, column)}: empty label")
        keys.append(key)
    return keys


def _scores(table: _Table, column: str) -> list[float]:
    scores = []
    for i, value in enumerate(table.columns[column]):
        try:
            if isinstance(value, bool):
                raise TypeError
            score = float(value.strip() if isinstance(value, str) else value)
        except (TypeError, ValueError, OverflowError):
            score = math.nan
        if not (math.isfinite(score) and abs(score) <= _FLOAT32_MAX):
            raise DataError(
                f"{table.where(i, column)}: label {_show(value)} is not a finite number "
                "(problem_type is regression)"
            )
        scores.append(score)
    return scores


def _require_rows(table: _Table) -> None:
    if not len(table):
        raise DataError(f"{table.path}: no data rows (only a header, or blank lines)")


# --- GLUE ------------------------------------------------------------------------------------


def _read_glue(cfg: DataConfig) -> TaskFiles:
    files, columns = GLUE_FILES[cfg.task], GLUE_COLUMNS[cfg.task]
    train_path, validation_path = glue_paths(cfg)
    for path in (train_path, validation_path):
        if not path.is_file():
            raise DataError(
                f"GLUE task {cfg.task}: {path} not found; glue_dir (or $GLUE_DIR) must hold "
                f"the standard glue_data layout: {files.directory}/train.tsv and "
                f"{files.directory}/{files.validation_file}"
            )
    splits = []
    for path in (train_path, validation_path):
        names = None if files.has_header else COLA_COLUMNS
        table = _read_tsv(path, [*columns.text, columns.label], names)
        _require_rows(table)
        texts = tuple(_texts(table, c, every_cell=False) for c in columns.text)
        if columns.file_labels is None:
            labels: list = _scores(table, columns.label)
        else:
            ids = {name: i for i, name in enumerate(columns.file_labels)}
            labels = []
            for i, value in enumerate(table.columns[columns.label]):
                if value not in ids:
                    raise DataError(
                        f"{table.where(i, columns.label)}: label {_show(value)}; expected one "
                        f"of {list(columns.file_labels)}"
                    )
                labels.append(ids[value])
        splits.append(Split(path, texts, labels))
    return TaskFiles(splits[0], splits[1], columns.label_names, files.metrics)


# --- user files ------------------------------------------------------------------------------


def _read_user_table(cfg: DataConfig, field: str) -> _Table:
    path = Path(getattr(cfg, field)).expanduser()
    if not path.is_file():
        what = "is a directory, not a file" if path.is_dir() else "not found"
        raise DataError(f"data.{field}: {path} {what}")
    reader = _READERS.get(path.suffix.lower())
    if reader is None:
        raise DataError(
            f"data.{field}: {path} has an unsupported extension; use one of "
            f"{', '.join(FILE_SUFFIXES)}"
        )
    table = reader(path, [*cfg.text_columns, cfg.label_column])
    _require_rows(table)
    return table


def _read_files(cfg: DataConfig) -> TaskFiles:
    train = _read_user_table(cfg, "train_file")
    validation = _read_user_table(cfg, "validation_file")
    if cfg.problem_type == "regression":
        labels = (_scores(train, cfg.label_column), _scores(validation, cfg.label_column))
        label_names = None
    else:
        keys = _class_keys(train, cfg.label_column)
        classes = sorted(set(keys))
        if len(classes) < 2:
            raise DataError(
                f"{train.path}: column {cfg.label_column!r} needs two or more classes, found "
                f"{classes}"
            )
        if all(_INT_LABEL.fullmatch(key) for key in classes):
            classes.sort(key=int)  # integer labels 0..K-1 keep their own values as ids
        ids = {key: i for i, key in enumerate(classes)}
        validation_ids = []
        for i, key in enumerate(_class_keys(validation, cfg.label_column)):
            if key not in ids:
                raise DataError(
                    f"{validation.where(i, cfg.label_column)}: label {key!r} does not occur in "
                    f"the training file; training labels: {classes}"
                )
            validation_ids.append(ids[key])
        labels = ([ids[key] for key in keys], validation_ids)
        label_names = tuple(classes)
    splits = [
        Split(table.path, tuple(_texts(table, c, every_cell=True) for c in cfg.text_columns), y)
        for table, y in zip((train, validation), labels, strict=True)
    ]
    if label_names is None:
        metrics = _REGRESSION_METRICS
    else:
        # Binary F1 scores class 1 (the second label in sorted order); with more it is moot.
        metrics = _CLASSIFICATION_METRICS if len(label_names) == 2 else ("accuracy",)
    return TaskFiles(splits[0], splits[1], label_names, metrics)
