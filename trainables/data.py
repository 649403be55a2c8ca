"""Task data: load a task's splits, take nested training subsets, tokenise once per machine.

Every source (GLUE files or hub, user files, the built-in synthetic task) comes out as the same
columns: ``text_a``, optional ``text_b``, and ``label`` (int64 class id, or float32 score).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np
from filelock import FileLock

from contract.config import GLUE_FILES, DataConfig
from contract.datafiles import GLUE_COLUMNS, TaskFiles, read_task_files

__all__ = [
    "TaskData",
    "default_cache_dir",
    "load_task_data",
    "nested_subset",
    "synthetic_pairs",
    "tokenize_cached",
]

# Bump when loading or tokenising changes what lands in the cache, so old entries are not reused.
_LOADER_VERSION = 2
_TOKENIZE_VERSION = 1

_HUB_GLUE = "nyu-mll/glue"
_CLASSIFICATION_METRICS = ("accuracy", "f1")


@dataclass(frozen=True)
class TaskData:
    """A task's training and (whole) validation split, normalised, plus what scoring it needs."""

    train: datasets.Dataset
    validation: datasets.Dataset
    num_labels: int
    problem_type: str
    metric_names: tuple[str, ...]
    label_names: tuple[str, ...] | None
    fingerprint: str

    @property
    def text_columns(self) -> tuple[str, ...]:
        return ("text_a", "text_b") if "text_b" in self.train.column_names else ("text_a",)


def default_cache_dir() -> Path:
    """Where tokenised datasets are cached: ``$SCALESWEEP_CACHE`` or ``~/.cache/scalesweep``."""
    return Path(os.environ.get("SCALESWEEP_CACHE") or "~/.cache/scalesweep").expanduser()


def load_task_data(cfg: DataConfig) -> TaskData:
    """Load the task ``cfg`` describes, with the full training split (subset with nested_subset).

    Data files are read and checked by ``contract.datafiles`` (DataError, a ValueError, names
    the file, line and column of what is wrong)."""
    files = read_task_files(cfg)
    if files is not None:
        return _from_files(cfg, files)
    if cfg.source == "glue":
        return _load_glue_hub(cfg)
    return _load_synthetic(cfg)


def nested_subset(dataset: datasets.Dataset, cfg: DataConfig, seed: int) -> datasets.Dataset:
    """The first ``cfg.subset_size`` rows of a seeded order that keeps the class mix.

    Every fraction takes a prefix of the same order, so for one seed the 10% subset lies inside
    the 25% one: data-scaling curves then differ only in how much data was added. For class
    labels the order is stratified (see ``_stratified_order``): every prefix holds each class
    in its share of the split, to within an example or two, so a small subset neither drops a
    rare class nor swings the positive rate from seed to seed. Scores (regression) have no
    classes and take a plain seeded permutation.
    """
    rng = np.random.default_rng(seed)
    column = next((c for c in ("labels", "label") if c in dataset.column_names), None)
    labels = np.asarray(dataset[column]) if column else np.empty(0)
    if column and np.issubdtype(labels.dtype, np.integer):
        order = _stratified_order(labels, rng)
    else:
        order = rng.permutation(len(dataset))
    return dataset.select(order[: cfg.subset_size(len(dataset))])


def _stratified_order(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Each class shuffled, then its k-th example placed at rank (k + phase) / class size.

    The ranks of a class are evenly spaced over [0, 1), so any prefix (all ranks below some t)
    holds within one example of t × its size of every class. The phase is drawn per class so
    that which class leads varies with the seed, and no two ranks tie.
    """
    classes, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    rank = np.empty(labels.size)
    for c in range(len(classes)):
        members = rng.permutation(np.flatnonzero(inverse == c))
        rank[members] = (np.arange(counts[c]) + rng.random()) / counts[c]
    return np.argsort(rank, kind="stable")


def _fingerprint(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def _file_identity(path: Path) -> list[object]:
    # Size and mtime rather than a content hash: MNLI is ~300 MB and every trial loads it.
    stat = path.stat()
    return [str(path.resolve()), stat.st_size, stat.st_mtime_ns]


def _make_dataset(
    text_a: list[str], text_b: list[str] | None, labels: np.ndarray, regression: bool
) -> datasets.Dataset:
    columns: dict[str, object] = {"text_a": text_a}
    features = {"text_a": datasets.Value("string")}
    if text_b is not None:
        columns["text_b"] = text_b
        features["text_b"] = datasets.Value("string")
    columns["label"] = labels
    features["label"] = datasets.Value("float32" if regression else "int64")
    return datasets.Dataset.from_dict(columns, features=datasets.Features(features))


# --- files (GLUE TSVs, user files) -----------------------------------------------------------

# The hub's GLUE: its text columns and validation split per task (the local files' layout,
# and every check of them, is contract.datafiles: the same for plan, run and the trial).
_HUB_GLUE_TEXT = {
    "cola": ("sentence",),
    "sst2": ("sentence",),
    "mrpc": ("sentence1", "sentence2"),
    "stsb": ("sentence1", "sentence2"),
    "qqp": ("question1", "question2"),
    "mnli": ("premise", "hypothesis"),
    "qnli": ("question", "sentence"),
    "rte": ("sentence1", "sentence2"),
    "wnli": ("sentence1", "sentence2"),
}
_HUB_VALIDATION = {"mnli": "validation_matched"}


def _from_files(cfg: DataConfig, files: TaskFiles) -> TaskData:
    regression = files.problem_type == "regression"
    splits = [
        _make_dataset(
            split.texts[0],
            split.texts[1] if len(split.texts) == 2 else None,
            np.asarray(split.labels, dtype=np.float32 if regression else np.int64),
            regression,
        )
        for split in (files.train, files.validation)
    ]
    paths = [files.train.path, files.validation.path]
    # What decides the examples: the files' identities and the columns and labels taken.
    identity = [cfg.task] if cfg.source == "glue" else [cfg.text_columns, cfg.label_column]
    return TaskData(
        train=splits[0],
        validation=splits[1],
        num_labels=files.num_labels,
        problem_type=files.problem_type,
        metric_names=files.metric_names,
        label_names=files.label_names,
        fingerprint=_fingerprint(
            cfg.source,
            _LOADER_VERSION,
            *identity,
            files.problem_type,
            list(map(_file_identity, paths)),
        ),
    )


def _load_glue_hub(cfg: DataConfig) -> TaskData:
    files, columns = GLUE_FILES[cfg.task], GLUE_COLUMNS[cfg.task]
    try:
        splits = datasets.load_dataset(_HUB_GLUE, cfg.task)
    except OSError as err:  # offline, unreachable or not cached (ConnectionError is one)
        # Advice first: callers may show only the first line, and the hub's error comes last.
        expected = f"{files.directory}/train.tsv and {files.directory}/{files.validation_file}"
        raise OSError(
            f"GLUE task {cfg.task} could not be loaded from the Hugging Face hub "
            f"({_HUB_GLUE}); offline, set data.glue_dir (or $GLUE_DIR) to a local glue_data "
            f"directory holding {expected}. Hub error: {err}"
        ) from err
    train = splits["train"]
    validation = splits[_HUB_VALIDATION.get(cfg.task, "validation")]
    # The hub datasets' own fingerprints identify the cached Arrow files they come from.
    fingerprint = _fingerprint(
        "glue-hub", _LOADER_VERSION, cfg.task, train._fingerprint, validation._fingerprint
    )
    regression = columns.file_labels is None
    return TaskData(
        train=_from_hub(train, _HUB_GLUE_TEXT[cfg.task], regression),
        validation=_from_hub(validation, _HUB_GLUE_TEXT[cfg.task], regression),
        num_labels=files.num_labels,
        problem_type="regression" if regression else "classification",
        metric_names=files.metrics,
        label_names=columns.label_names,
        fingerprint=fingerprint,
    )


def _from_hub(
    split: datasets.Dataset, text_columns: tuple[str, ...], regression: bool
) -> datasets.Dataset:
    """The hub's columns renamed to ours; its ClassLabel ids become plain int64, like the files."""
    renames = dict(zip(text_columns, ("text_a", "text_b"), strict=False))
    split = split.select_columns([*text_columns, "label"]).rename_columns(renames)
    return split.cast_column("label", datasets.Value("float32" if regression else "int64"))


# --- synthetic -------------------------------------------------------------------------------

# Difficulty knobs of the built-in task (see synthetic_pairs). Measured with a from-scratch
# 2-layer BERT (hidden 128, lr 1e-3): ~0.72 validation accuracy from 4000 pairs, ~0.76 from
# 16000; word valences alone allow ~0.76, handling negation ~0.95 (the label noise caps it).
_CONCEPTS = 300
_SYNONYMS = (2, 3)  # inclusive range of surface words per concept
_NEUTRAL = 0.5  # share of concepts without valence (filler)
_ZIPF = 1.0  # concept frequency ~ 1 / rank**_ZIPF: rare words need more data to learn
_LENGTH = (5, 12)  # inclusive range of concepts per sentence
_NEGATORS = 3  # words that flip the valence of the word after them
_NEGATION = 0.15  # chance that a word is preceded by a negator
_LABEL_NOISE = 0.05
_ONSETS = "bdfgklmnprstvz"
_VOWELS = "aeiou"
_SPLITS = ("train", "validation")
_SYNTHETIC_VERSION = 1


@dataclass(frozen=True)
class _Lexicon:
    words: list[list[str]]  # concept -> its synonyms
    valence: np.ndarray  # concept -> -2..2, 0 for filler
    frequency: np.ndarray  # concept -> sampling probability
    negators: list[str]


def _lexicon(seed: int) -> _Lexicon:
    """Distinct pseudo-words of two or three syllables, with valences and Zipf frequencies."""
    rng = np.random.default_rng([seed, 0])
    syllables = [onset + vowel for onset in _ONSETS for vowel in _VOWELS]
    used: set[str] = set()

    def new_word() -> str:
        word = ""
        while not word or word in used:
            word = "".join(rng.choice(syllables, size=rng.integers(2, 4)))
        used.add(word)
        return word

    words = [
        [new_word() for _ in range(rng.integers(_SYNONYMS[0], _SYNONYMS[1] + 1))]
        for _ in range(_CONCEPTS)
    ]
    valence = rng.choice([-2, -1, 1, 2], size=_CONCEPTS) * (rng.random(_CONCEPTS) >= _NEUTRAL)
    frequency = 1 / np.arange(1, _CONCEPTS + 1) ** _ZIPF
    negators = [new_word() for _ in range(_NEGATORS)]
    return _Lexicon(words, valence, frequency / frequency.sum(), negators)


def _sentence(rng: np.random.Generator, lexicon: _Lexicon) -> tuple[str, int]:
    """A sentence and its score: the sum of its words' valences, negated ones counting minus."""
    size = rng.integers(_LENGTH[0], _LENGTH[1] + 1)
    words, score = [], 0
    for concept in rng.choice(_CONCEPTS, size=size, p=lexicon.frequency):
        sign = 1
        if rng.random() < _NEGATION:
            words.append(lexicon.negators[rng.integers(_NEGATORS)])
            sign = -1
        synonyms = lexicon.words[concept]
        words.append(synonyms[rng.integers(len(synonyms))])
        score += sign * lexicon.valence[concept]
    return " ".join(words), int(score)


def synthetic_pairs(size: int, seed: int, *, split: str = "train") -> datasets.Dataset:
    """The built-in sentence-pair task: is sentence B more positive than sentence A? (label 1)

    Sentences are strings of pseudo-words (a lexicon drawn from ``seed``): concepts with two or
    three synonyms, half of them carrying a valence of +-1 or +-2, at Zipf frequencies, some
    preceded by a negator that flips the valence. A sentence's score is the sum. Learning word
    valences from the labels alone gets a small model well above chance; rare words reward more
    data, and negation (an interaction between neighbouring words) rewards capacity. Labels
    alternate (exactly balanced) and ~5% are flipped as noise.

    ``split`` picks an independent stream of pairs over the same lexicon, so validation pairs
    are not training pairs. Rows are prefix-stable: a larger ``size`` only appends rows.
    """
    lexicon = _lexicon(seed)
    rng = np.random.default_rng([seed, 1 + _SPLITS.index(split)])
    text_a, text_b, labels = [], [], np.arange(size, dtype=np.int64) % 2
    for label in labels:
        b_higher = bool(label) != (rng.random() < _LABEL_NOISE)
        (a, score_a), (b, score_b) = _sentence(rng, lexicon), _sentence(rng, lexicon)
        while score_a == score_b:  # a tie has no right answer
            b, score_b = _sentence(rng, lexicon)
        if (score_b > score_a) != b_higher:
            a, b = b, a
        text_a.append(a)
        text_b.append(b)
    return _make_dataset(text_a, text_b, labels, regression=False)


def _load_synthetic(cfg: DataConfig) -> TaskData:
    seed = cfg.synthetic_seed
    return TaskData(
        train=synthetic_pairs(cfg.synthetic_train_size, seed, split="train"),
        validation=synthetic_pairs(cfg.synthetic_validation_size, seed, split="validation"),
        num_labels=2,
        problem_type="classification",
        metric_names=_CLASSIFICATION_METRICS,
        label_names=("a_higher", "b_higher"),
        fingerprint=_fingerprint(
            "synthetic",
            _LOADER_VERSION,
            _SYNTHETIC_VERSION,
            seed,
            cfg.synthetic_train_size,
            cfg.synthetic_validation_size,
        ),
    )


# --- tokenisation ----------------------------------------------------------------------------


def _tokenizer_digest(tokenizer) -> str:
    """A hash of what decides the token ids: vocabulary plus normaliser and special tokens."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        state: object = sorted(tokenizer.get_vocab().items())
    else:
        state = json.loads(backend.to_str())
        # Truncation/padding are set on the backend by each call, not part of its identity.
        state.pop("truncation", None)
        state.pop("padding", None)
    return _fingerprint(type(tokenizer).__name__, state)


def _cache_key(task: TaskData, tokenizer, max_length: int) -> str:
    return _fingerprint(
        _TOKENIZE_VERSION,
        task.fingerprint,
        tokenizer.name_or_path,
        _tokenizer_digest(tokenizer),
        max_length,
    )[:32]


def _tokenize_splits(task: TaskData, tokenizer, max_length: int, key: str) -> datasets.DatasetDict:
    """Token ids of both splits, truncated but unpadded (the collator pads per batch)."""
    text_columns = list(task.text_columns)

    def encode(batch: dict[str, list]) -> dict[str, list]:
        return tokenizer(*(batch[c] for c in text_columns), truncation=True, max_length=max_length)

    splits = {}
    for name, split in (("train", task.train), ("validation", task.validation)):
        # An explicit fingerprint spares datasets from hashing the tokenizer (slow, noisy logs).
        encoded = split.map(
            encode, batched=True, remove_columns=text_columns, new_fingerprint=f"{key}-{name}"
        )
        splits[name] = encoded.rename_column("label", "labels")
    return datasets.DatasetDict(splits)


def tokenize_cached(
    task: TaskData, tokenizer, max_length: int, cache_dir: Path
) -> tuple[datasets.Dataset, datasets.Dataset]:
    """Tokenised (train, validation), built once per data, tokenizer and max_length.

    The result is saved under ``cache_dir/<key>``; later calls, from any process on the machine,
    memory-map it. A file lock makes concurrent workers wait for one build instead of repeating
    it, and the build is written to a temporary directory then renamed, so a crashed build never
    leaves a half-written entry behind.
    """
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    key = _cache_key(task, tokenizer, max_length)
    target = cache_dir / key
    if not target.is_dir():
        with FileLock(str(cache_dir / f"{key}.lock")):
            if not target.is_dir():  # another process may have built it while we waited
                staging = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=cache_dir))
                try:
                    _tokenize_splits(task, tokenizer, max_length, key).save_to_disk(staging)
                    staging.rename(target)
                finally:
                    shutil.rmtree(staging, ignore_errors=True)
    splits = datasets.load_from_disk(str(target))
    return splits["train"], splits["validation"]
