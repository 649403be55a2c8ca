"""Property-based fuzzing of every input a user gives: spec files, overrides, data files (GLUE
layouts and ``files`` sources) and experiment directories.

Whatever the input, a command ends in exit 0, or exit 2 with one line on stderr: never a
traceback, never a hang (each case has a time bound), and ``results`` / ``analyze`` never
change a finished experiment directory (but ``analyze``'s own analysis/ folder). Data that
``plan`` accepts, the trial's loader accepts, and data it refuses, ``run`` and the trial
refuse with the same words, before Ray starts.

A fixed, derandomized example budget keeps this under a minute; set SCALESWEEP_FUZZ_EXAMPLES
to run N random examples per target instead (e.g. 2000, overnight; ``--hypothesis-seed=S``
repeats a run), and ``--hypothesis-show-statistics`` shows the mix of outcomes.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import io
import json
import os
import shutil
import signal
import sys
import tempfile
import types
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, Phase, event, given, settings
from hypothesis import strategies as st

from contract.config import GLUE_FILES, DataConfig
from orchestrator.cli import main
from orchestrator.spec import AXIS_FIELDS, TOP_LEVEL_KEYS

ROOT = Path(__file__).resolve().parents[1]
GLUE_DIR = ROOT.parent / "shared" / "data" / "glue"
EXPERIMENT = ROOT / "tests" / "fixtures" / "quickstart_experiment"
CASE_TIMEOUT_S = 30  # a case slower than this is a hang


def _settings(examples: int) -> settings:
    on_demand = int(os.environ.get("SCALESWEEP_FUZZ_EXAMPLES") or 0)
    return settings(
        max_examples=on_demand or examples,
        deadline=None,  # CASE_TIMEOUT_S bounds each case; the machine's load varies
        derandomize=not on_demand,  # CI sees the same examples every run
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        # No explain phase: it traces every line run, and a traced analyze runs 10x slower.
        phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink],
        print_blob=True,
    )


class CaseTimeout(Exception):
    """A case ran past CASE_TIMEOUT_S."""


@contextlib.contextmanager
def _time_bound(seconds: float) -> Iterator[None]:
    def expire(signum, frame):
        raise CaseTimeout(f"no answer within {seconds} s: a hang")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture(scope="module", autouse=True)
def no_ray_in_process() -> Iterator[None]:
    """``run`` here may only fail before Ray starts: reaching the sweep is a test failure."""
    stub = types.ModuleType("orchestrator.sweep")

    def run_sweep(*args, **kwargs):
        raise AssertionError("run reached Ray with a fuzzed input")

    stub.run_sweep = run_sweep
    saved = sys.modules.get("orchestrator.sweep")
    sys.modules["orchestrator.sweep"] = stub
    yield
    if saved is None:
        del sys.modules["orchestrator.sweep"]
    else:
        sys.modules["orchestrator.sweep"] = saved


def cli(*args: str | Path) -> tuple[int, str, str]:
    """``main(args)`` in-process: (exit code, stdout, stderr), checked to be a clean ending."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            with _time_bound(CASE_TIMEOUT_S):
                code = main([str(a) for a in args])
        except SystemExit as exit_:  # argparse: a usage error
            code = exit_.code
    stderr = err.getvalue()
    event(f"{args[0]} exit {code}")  # pytest --hypothesis-show-statistics: the mix of outcomes
    assert "Traceback" not in stderr, stderr
    assert code in (0, 2), (code, stderr)
    if code == 2:
        assert stderr.startswith("error: ") and stderr.count("\n") == 1, stderr
    return code, out.getvalue(), stderr


# --- mutations -------------------------------------------------------------------------------

yaml_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.sampled_from(["bert-tiny", "glue", "files", "strong", "weak", "fp16", "~", "..", "/"]),
)
yaml_values = st.recursive(
    yaml_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=8,
)


@st.composite
def mutated_bytes(draw, original: bytes) -> bytes:
    """``original`` spoilt as files get spoilt: cut off, overwritten, re-encoded, junk."""
    kind = draw(
        st.sampled_from(
            ["truncate", "insert", "flip", "delete-line", "duplicate-line", "encode", "junk"]
        )
    )
    if kind == "junk":
        return draw(st.binary(max_size=300))
    if kind == "encode":
        text = original.decode("utf-8-sig", errors="replace") + draw(st.text(max_size=5))
        codec = draw(st.sampled_from(["utf-16", "utf-32", "latin-1", "cp1252"]))
        return text.encode(codec, errors="replace")
    lines = original.split(b"\n")
    if kind in ("delete-line", "duplicate-line"):
        i = draw(st.integers(0, len(lines) - 1))
        lines[i : i + 1] = [] if kind == "delete-line" else [lines[i], lines[i]]
        return b"\n".join(lines)
    at = draw(st.integers(0, len(original)))
    if kind == "truncate":
        return original[:at]
    chunk = draw(st.binary(min_size=1, max_size=20))
    if kind == "insert":
        return original[:at] + chunk + original[at:]
    return original[:at] + chunk + original[at + len(chunk) :]


def _set_path(tree: object, path: list, value: object) -> object:
    """``tree`` with the node at ``path`` (keys or indices, followed as far as they go)
    replaced by ``value``."""
    if not path or not isinstance(tree, dict | list) or not tree:
        return value
    key = list(tree)[path[0] % len(tree)] if isinstance(tree, dict) else path[0] % len(tree)
    tree[key] = _set_path(tree[key], path[1:], value)
    return tree


@st.composite
def mutated_spec(draw, base: dict) -> bytes:
    if draw(st.booleans()):
        return draw(mutated_bytes(yaml.safe_dump(base, sort_keys=False).encode()))
    tree = json.loads(json.dumps(base))
    for _ in range(draw(st.integers(1, 3))):
        action = draw(st.sampled_from(["set", "drop", "add"]))
        path = draw(st.lists(st.integers(0, 50), min_size=1, max_size=3))
        if action == "set":
            tree = _set_path(tree, path, draw(yaml_values))
        elif action == "drop" and isinstance(tree, dict) and tree:
            tree.pop(list(tree)[path[0] % len(tree)])
        elif action == "add" and isinstance(tree, dict):
            key = draw(st.one_of(st.sampled_from([*TOP_LEVEL_KEYS, *AXIS_FIELDS]), st.text()))
            tree[key] = draw(yaml_values)
    try:
        return yaml.safe_dump(tree, sort_keys=False, allow_unicode=True).encode()
    except yaml.YAMLError:
        return b"name: unrepresentable\n"


# --- spec files and overrides ----------------------------------------------------------------


def _base_spec(storage: Path) -> dict:
    return {
        "name": "fuzz",
        "description": "a fuzzed search space",
        "data": {
            "source": "synthetic",
            "synthetic_train_size": 100,
            "synthetic_validation_size": 20,
            "max_length": 32,
        },
        "model": {"from_scratch": True, "tokenizer": "wordpiece", "wordpiece_vocab_size": 200},
        "compute": {"global_batch_size": 8, "cpus_per_worker": 1},
        "train": {"epochs": 1, "lr": 1e-3},
        "axes": {"model.name": ["bert-tiny", "bert-mini"], "data.train_fraction": [0.5, 1.0]},
        "seeds": [0, 1],
        "storage_path": str(storage),
    }


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="scalesweep-fuzz-") as directory:
        yield Path(directory)


def _plan_then_run(space: Path, *overrides: str, out: Path) -> tuple[int, str]:
    """``plan``; when it refuses, ``run`` must refuse alike, before Ray starts."""
    code, _, err = cli("plan", space, *overrides)
    if code == 2:
        run_code, _, run_err = cli("run", space, *overrides, "-o", out)
        assert (run_code, run_err) == (2, err)
        assert not out.exists()
    return code, err


def _grids_spec(storage: Path) -> dict:
    """The base spec with ``axes`` as a list of grids, one with seeds of its own."""
    return _base_spec(storage) | {
        "axes": [
            {"model.name": ["bert-tiny", "bert-mini"], "data.train_fraction": [0.5, 1.0]},
            {"model.name": ["bert-mini"], "compute.num_workers": [1, 2], "seeds": [0, 3]},
        ]
    }


@pytest.mark.parametrize("base", [_base_spec, _grids_spec], ids=["one_grid", "grid_list"])
@_settings(examples=60)
@given(data=st.data())
def test_fuzzed_spec_files(workdir, base, data):
    space = workdir / "space.yaml"
    space.write_bytes(data.draw(mutated_spec(base(workdir / "experiments"))))
    _plan_then_run(space, out=workdir / "never")


override_keys = st.one_of(
    st.sampled_from([*AXIS_FIELDS, *TOP_LEVEL_KEYS, "wandb.mode", "wandb.project"]),
    st.sampled_from(AXIS_FIELDS).map(lambda key: f"axes.{key}"),
    st.text(max_size=20),
)
override_values = st.one_of(
    yaml_values.map(lambda v: yaml.safe_dump(v, default_flow_style=True).strip()),
    st.text(max_size=30),
)


# Overrides a user would type; the fuzzed ones are mixed among them.
PLAUSIBLE_OVERRIDES = [
    "train.lr=3e-5",
    "train.epochs=2",
    "compute.num_workers=2",
    "seeds=[0, 1, 2]",
    "axes.model.name=[bert-tiny]",
    "axes.compute.num_workers=[1, 2, 4]",
    "max_trials=100",
    "data.max_length=64",
    "data.train_fraction=0.1",
    "compute.global_batch_size=16",
    "model.num_layers=1",
    "train.progress_timeout_s=null",
    "description=tried again",
    "storage_path=elsewhere",
]


@_settings(examples=80)
@given(
    overrides=st.lists(
        st.one_of(
            st.sampled_from(PLAUSIBLE_OVERRIDES),
            st.tuples(override_keys, override_values).map("=".join),
            st.text(max_size=20),
        ),
        max_size=3,
    )
)
def test_fuzzed_overrides(workdir, overrides):
    space = workdir / "base.yaml"
    space.write_text(yaml.safe_dump(_base_spec(workdir / "experiments")))
    _plan_then_run(space, *overrides, out=workdir / "never")


# --- data files ------------------------------------------------------------------------------


def _data_space(workdir: Path, data: dict) -> Path:
    space = workdir / "data.yaml"
    spec = _base_spec(workdir / "experiments") | {"data": data, "axes": {}, "seeds": [0]}
    space.write_text(yaml.safe_dump(spec))
    return space


def _agrees_with_the_trial(space: Path, code: int, err: str) -> None:
    """The trial's loader accepts exactly what plan accepts, and refuses it in the same words."""
    from orchestrator.spec import load_spec
    from trainables.data import load_task_data

    cfg: DataConfig = load_spec(space).trials[0].data
    try:
        with _time_bound(CASE_TIMEOUT_S):
            task = load_task_data(cfg)
    except ValueError as refusal:
        assert code == 2 and str(refusal) in err, (str(refusal), err)
        return
    assert code == 0, err
    assert len(task.train) > 0 and len(task.validation) > 0


GLUE_TASKS = {"mrpc": "MRPC", "cola": "CoLA"}


@functools.cache
def _glue_heads() -> dict[str, dict[str, bytes]]:
    """The first 40 lines of each real GLUE file: the real layout, small enough to fuzz (not a
    fixture: hypothesis would print all of it with every failing example)."""
    return {
        task: {
            name: b"".join((GLUE_DIR / directory / name).open("rb").readlines()[:40])
            for name in ("train.tsv", GLUE_FILES[task].validation_file)
        }
        for task, directory in GLUE_TASKS.items()
    }


@pytest.mark.skipif(not GLUE_DIR.is_dir(), reason=f"GLUE files not at {GLUE_DIR}")
@_settings(examples=60)
@given(data=st.data())
def test_fuzzed_glue_layouts(workdir, data):
    glue_heads = _glue_heads()
    task = data.draw(st.sampled_from(sorted(GLUE_TASKS)))
    glue = workdir / "glue"
    shutil.rmtree(glue, ignore_errors=True)
    task_dir = glue / GLUE_TASKS[task]
    task_dir.mkdir(parents=True)
    for name, content in glue_heads[task].items():
        (task_dir / name).write_bytes(content)
    name = data.draw(st.sampled_from(sorted(glue_heads[task])))
    spoil = data.draw(st.sampled_from(["bytes", "cut-column", "header-only", "missing", "dir"]))
    target = task_dir / name
    if spoil == "bytes":
        target.write_bytes(data.draw(mutated_bytes(target.read_bytes())))
    elif spoil == "cut-column":
        column = data.draw(st.integers(0, 4))
        lines = [line.split(b"\t") for line in target.read_bytes().split(b"\n")]
        target.write_bytes(b"\n".join(b"\t".join(f[:column] + f[column + 1 :]) for f in lines))
    elif spoil == "header-only":
        target.write_bytes(target.read_bytes().split(b"\n")[0] + b"\n")
    elif spoil == "missing":
        target.unlink()
    else:
        target.unlink()
        target.mkdir()
    space = _data_space(workdir, {"source": "glue", "task": task, "glue_dir": str(glue)})
    code, err = _plan_then_run(space, out=workdir / "never")
    _agrees_with_the_trial(space, code, err)


cells = st.one_of(
    st.text(max_size=15),
    st.sampled_from(["", " ", "NA", "null", "nan", '"', "a,b", "a\tb", "x\ny", "pos", "neg"]),
    st.integers(-3, 3),
    st.floats(allow_nan=True, allow_infinity=True, width=32),
    st.none(),
    st.booleans(),
)
words = st.text(st.characters(categories=["L", "N", "Zs", "P"]), min_size=1, max_size=20).filter(
    str.strip
)


@st.composite
def tables(draw, regression: bool) -> list[list]:
    """A clean table (two texts and a label per row, both classes present), then at most a
    few cells replaced by anything at all."""
    label = st.floats(-5, 5, width=32) if regression else st.sampled_from(["pos", "neg", 0, 1])
    rows = [[draw(words), draw(words), draw(label)] for _ in range(draw(st.integers(2, 6)))]
    if not regression:
        rows[0][2], rows[1][2] = draw(st.sampled_from([("pos", "neg"), (0, 1)]))
    for _ in range(draw(st.integers(0, 2))):
        row, column = draw(st.integers(0, len(rows) - 1)), draw(st.integers(0, 2))
        rows[row][column] = draw(cells)
    return rows[: draw(st.integers(0, len(rows)))] if draw(st.integers(0, 9)) == 0 else rows


def _write_table(path: Path, rows: list[tuple], columns: list[str]) -> None:
    suffix = path.suffix
    if suffix == ".jsonl":
        path.write_text(
            "".join(json.dumps(dict(zip(columns, r, strict=True))) + "\n" for r in rows)
        )
    elif suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        arrays = {}
        for i, name in enumerate(columns):
            values = [r[i] for r in rows]
            try:
                arrays[name] = pa.array(values)
            except (pa.ArrowException, TypeError, ValueError):  # mixed types: as text
                arrays[name] = pa.array([None if v is None else str(v) for v in values])
        pq.write_table(pa.table(arrays) if rows else pa.table({c: [] for c in columns}), path)
    else:
        buffer = io.StringIO()
        delimiter = "\t" if suffix == ".tsv" else ","
        quoting = csv.QUOTE_NONE if suffix == ".tsv" else csv.QUOTE_MINIMAL
        writer = csv.writer(buffer, delimiter=delimiter, quoting=quoting, escapechar="\\")
        writer.writerows([columns, *([("" if v is None else v) for v in r] for r in rows)])
        path.write_text(buffer.getvalue())


@_settings(examples=80)
@given(data=st.data())
def test_fuzzed_files_sources(workdir, data):
    suffix = data.draw(st.sampled_from([".csv", ".tsv", ".jsonl", ".parquet"]))
    columns = data.draw(
        st.sampled_from([["a", "b", "label"], ["a", "b", "y"], ["a", "label", "b"]])
    )
    problem_type = data.draw(st.sampled_from(["classification", "regression"]))
    paths = {}
    for split in ("train", "validation"):
        path = workdir / f"{split}{suffix}"
        path.unlink(missing_ok=True)
        _write_table(path, data.draw(tables(problem_type == "regression")), columns)
        if data.draw(st.integers(0, 3)) == 0:
            path.write_bytes(data.draw(mutated_bytes(path.read_bytes())))
        paths[split] = path
    space = _data_space(
        workdir,
        {
            "source": "files",
            "train_file": str(paths["train"]),
            "validation_file": str(paths["validation"]),
            "text_columns": data.draw(st.sampled_from([["a"], ["a", "b"]])),
            "label_column": "label",
            "problem_type": problem_type,
        },
    )
    code, err = _plan_then_run(space, out=workdir / "never")
    _agrees_with_the_trial(space, code, err)


# --- experiment directories ------------------------------------------------------------------


def _snapshot(directory: Path) -> dict[str, bytes | None]:
    return {
        str(p.relative_to(directory)): p.read_bytes() if p.is_file() else None
        for p in sorted(directory.rglob("*"))
        if "analysis" not in p.relative_to(directory).parts
    }


EXPERIMENT_FILES = sorted(
    str(p.relative_to(EXPERIMENT)) for p in EXPERIMENT.rglob("*") if p.is_file()
)


@st.composite
def spoilt_results(draw, original: bytes) -> bytes:
    """results.csv with cells, rows or columns changed: what hand edits and merges do."""
    rows = list(csv.reader(io.StringIO(original.decode())))
    kind = draw(st.sampled_from(["cell", "drop-row", "drop-column", "swap-rows"]))
    if kind == "cell":
        row, column = draw(st.integers(0, len(rows) - 1)), draw(st.integers(0, len(rows[0]) - 1))
        rows[row][column] = draw(
            st.one_of(
                st.text(max_size=10),
                st.sampled_from(["", "nan", "inf", "-1", "0", "1e308", "TERMINATED", "True"]),
                st.integers(-5, 10**6).map(str),
            )
        )
    elif kind == "drop-row":
        del rows[draw(st.integers(0, len(rows) - 1))]
    elif kind == "drop-column":
        column = draw(st.integers(0, len(rows[0]) - 1))
        rows = [r[:column] + r[column + 1 :] for r in rows]
    else:
        i, j = draw(st.integers(1, len(rows) - 1)), draw(st.integers(1, len(rows) - 1))
        rows[i], rows[j] = rows[j], rows[i]
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    return buffer.getvalue().encode()


@_settings(examples=30)
@given(data=st.data())
def test_fuzzed_experiment_directories(workdir, data):
    directory = workdir / "experiment"
    shutil.rmtree(directory, ignore_errors=True)
    shutil.copytree(EXPERIMENT, directory)
    for _ in range(data.draw(st.integers(1, 3))):
        target = directory / data.draw(st.sampled_from(EXPERIMENT_FILES))
        if not target.is_file():
            continue
        spoil = data.draw(st.sampled_from(["bytes", "table", "delete", "dir"]))
        if spoil == "bytes":
            target.write_bytes(data.draw(mutated_bytes(target.read_bytes())))
        elif spoil == "table" and target.name == "results.csv":
            target.write_bytes(data.draw(spoilt_results(target.read_bytes())))
        elif spoil == "delete":
            target.unlink()
        elif spoil == "dir":
            target.unlink()
            target.mkdir()
    options = data.draw(
        st.lists(
            st.sampled_from(
                [
                    ["--target", "0.9"],
                    ["--target", "7"],
                    ["--epsilon", "-1"],
                    ["--metric", "loss"],
                    ["--metric", "bleu"],
                    ["--price-per-gpu-hour", "0"],
                    ["--money-budget", "1"],
                    ["--time-budget-s", "1e9"],
                    ["--model", "bert-mini"],
                    ["--flops-budget", "1e15"],
                ]
            ),
            max_size=2,
        )
    )
    before = _snapshot(directory)
    cli("results", directory)
    assert _snapshot(directory) == before
    # analyze draws and saves ten plots (seconds): one case in three keeps the budget short.
    if data.draw(st.integers(0, 2)) == 0:
        cli("analyze", directory, *(arg for option in options for arg in option))
        assert _snapshot(directory) == before
