"""Tokenizers and sequence-classification models for one trial, from the hub or local assets."""

from __future__ import annotations

import hashlib
import heapq
import logging
import tempfile
from collections import Counter
from itertools import pairwise
from pathlib import Path

import torch
from filelock import FileLock
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BertConfig,
    BertTokenizerFast,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from contract.config import ModelConfig
from trainables.data import TaskData

log = logging.getLogger(__name__)

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
# Bump when the trained tokenizer changes, so that cached ones are not reused.
_WORDPIECE_VERSION = 2


def build_tokenizer(cfg: ModelConfig, task: TaskData, cache_dir: Path) -> PreTrainedTokenizerBase:
    """The model's own tokenizer, or a WordPiece one trained on the task (see ModelConfig)."""
    if cfg.tokenizer == "wordpiece":
        return _trained_wordpiece(task, cfg.wordpiece_vocab_size, cache_dir)
    source = cfg.source if cfg.tokenizer == "auto" else cfg.tokenizer
    try:
        return AutoTokenizer.from_pretrained(source)
    except OSError as err:
        if not (cfg.from_scratch and cfg.tokenizer == "auto"):
            first_line = str(err).strip().splitlines()[0]
            raise OSError(f"cannot load the tokenizer of {source!r}: {first_line}") from err
        log.warning("no tokenizer for %r (%s); training WordPiece on the task text", source, err)
        return _trained_wordpiece(task, cfg.wordpiece_vocab_size, cache_dir)


def _trained_wordpiece(task: TaskData, vocab_size: int, cache_dir: Path) -> BertTokenizerFast:
    """Train (once per data and vocab size, cached on disk) an uncased BERT WordPiece tokenizer."""
    key = hashlib.sha256(
        f"{task.fingerprint}|wordpiece|{_WORDPIECE_VERSION}|{vocab_size}".encode()
    ).hexdigest()[:16]
    target = cache_dir / "tokenizers" / key
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if not target.exists():
            normalizer = normalizers.BertNormalizer(lowercase=True)
            pre_tokenizer = pre_tokenizers.BertPreTokenizer()
            columns = task.text_columns
            words: Counter[str] = Counter()
            for row in task.train.select_columns(list(columns)):
                for column in columns:
                    text = normalizer.normalize_str(row[column])
                    words.update(word for word, _ in pre_tokenizer.pre_tokenize_str(text))
            vocab = wordpiece_vocabulary(words, vocab_size, SPECIAL_TOKENS)
            tokenizer = Tokenizer(
                models.WordPiece({token: i for i, token in enumerate(vocab)}, unk_token="[UNK]")
            )
            tokenizer.normalizer = normalizer
            tokenizer.pre_tokenizer = pre_tokenizer
            tokenizer.decoder = decoders.WordPiece()
            cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
            tokenizer.post_processor = processors.TemplateProcessing(
                single="[CLS] $A [SEP]",
                pair="[CLS] $A [SEP] $B:1 [SEP]:1",
                special_tokens=[("[CLS]", cls), ("[SEP]", sep)],
            )
            fast = BertTokenizerFast(tokenizer_object=tokenizer, do_lower_case=True)
            # Write beside the target and rename, so a reader never sees half a tokenizer.
            tmp = Path(tempfile.mkdtemp(dir=target.parent))
            fast.save_pretrained(tmp)
            tmp.rename(target)
    return BertTokenizerFast.from_pretrained(target)


def wordpiece_vocabulary(words: Counter[str], size: int, special: list[str]) -> list[str]:
    """A WordPiece vocabulary learnt from word counts by merging the most frequent adjacent
    pair of pieces, as the ``tokenizers`` WordPiece trainer does, but deterministically: ties
    go to the pair that sorts first. (``tokenizers`` 0.23 breaks ties by hash-map order, so two
    runs on the same text trained different vocabularies, and trials on two machines differed.)

    A word starts as its first character followed by ``##``-prefixed continuations; merging
    ``a`` and ``##b`` makes ``ab``, and ``##a`` and ``##b`` make ``##ab``. The vocabulary is the
    special tokens, every initial piece (sorted), then each merge in order, up to ``size``.
    """
    entries = [
        ([word[0], *(f"##{c}" for c in word[1:])], count) for word, count in sorted(words.items())
    ]
    vocab = list(special)
    vocab += sorted({piece for pieces, _ in entries for piece in pieces} - set(special))
    pairs: Counter[tuple[str, str]] = Counter()
    where: dict[tuple[str, str], set[int]] = {}
    for i, (pieces, count) in enumerate(entries):
        for pair in pairwise(pieces):
            pairs[pair] += count
            where.setdefault(pair, set()).add(i)
    # A heap of (-count, pair): popped entries whose count went stale are skipped.
    heap = [(-count, pair) for pair, count in pairs.items()]
    heapq.heapify(heap)
    while len(vocab) < size and heap:
        count, pair = heapq.heappop(heap)
        if -count != pairs.get(pair) or count == 0:
            continue
        merged = pair[0] + pair[1].removeprefix("##")
        vocab.append(merged)
        changed: set[tuple[str, str]] = set()
        for i in sorted(where.pop(pair)):
            pieces, word_count = entries[i]
            for old in pairwise(pieces):
                pairs[old] -= word_count
                changed.add(old)
            pieces = _merge(pieces, pair, merged)
            entries[i] = (pieces, word_count)
            for new in pairwise(pieces):
                pairs[new] += word_count
                where.setdefault(new, set()).add(i)
                changed.add(new)
        pairs.pop(pair, None)
        for changed_pair in changed - {pair}:
            if pairs[changed_pair] > 0:
                heapq.heappush(heap, (-pairs[changed_pair], changed_pair))
    return vocab


def _merge(pieces: list[str], pair: tuple[str, str], merged: str) -> list[str]:
    out, i = [], 0
    while i < len(pieces):
        if i + 1 < len(pieces) and (pieces[i], pieces[i + 1]) == pair:
            out.append(merged)
            i += 2
        else:
            out.append(pieces[i])
            i += 1
    return out


def build_model(
    cfg: ModelConfig, *, num_labels: int, problem_type: str, vocab_size: int, pad_token_id: int
) -> PreTrainedModel:
    """AutoModelForSequenceClassification: pretrained weights (optionally truncated), or random."""
    hf_problem_type = (
        "regression" if problem_type == "regression" else "single_label_classification"
    )
    labels = {"num_labels": num_labels, "problem_type": hf_problem_type}
    layers = {"num_hidden_layers": cfg.num_layers} if cfg.num_layers else {}
    try:
        if not cfg.from_scratch:
            # Extra kwargs update the checkpoint's config; with fewer layers the rest are dropped.
            return AutoModelForSequenceClassification.from_pretrained(
                cfg.source, **labels, **layers
            )
        config = None if cfg.ladder else AutoConfig.from_pretrained(cfg.source, **labels, **layers)
    except OSError as err:
        first_line = str(err).strip().splitlines()[0]
        raise OSError(f"cannot load model {cfg.source!r}: {first_line}") from err
    if cfg.ladder:
        config = BertConfig(
            vocab_size=vocab_size,
            hidden_size=cfg.ladder.hidden_size,
            num_hidden_layers=cfg.num_layers or cfg.ladder.num_layers,
            num_attention_heads=cfg.ladder.num_heads,
            intermediate_size=4 * cfg.ladder.hidden_size,
            pad_token_id=pad_token_id,
            **labels,
        )
    else:
        config.vocab_size = vocab_size
        config.pad_token_id = pad_token_id
    return AutoModelForSequenceClassification.from_config(config)


def count_parameters(model: torch.nn.Module) -> tuple[int, int]:
    """(total, non-embedding) parameter counts; non-embedding excludes token, position and
    segment embeddings (the convention of Kaplan et al. 2020 scaling laws)."""
    total = sum(p.numel() for p in model.parameters())
    embeddings = getattr(getattr(model, "base_model", model), "embeddings", None)
    if embeddings is None:
        embeddings = model.get_input_embeddings()
    embedding = sum(
        p.numel() for name, p in embeddings.named_parameters() if "LayerNorm" not in name
    )
    return total, total - embedding
