"""Length-grouped sampling: every example once per epoch, deterministic, disjoint across ranks."""

from __future__ import annotations

import datasets
import numpy as np
import pytest
from torch.utils.data import DataLoader

from contract.config import TrialConfig
from trainables.data import load_task_data, tokenize_cached
from trainables.loop import FineTuneRecipe
from trainables.sampling import LengthGroupedSampler, sequence_lengths

LENGTHS = np.random.default_rng(0).integers(5, 120, size=437)


def shards(n: int, batch: int, world: int, *, epoch: int = 1, seed: int = 0) -> list[list[int]]:
    """Each rank's indices for one epoch, as the DataLoader would batch them."""
    out = []
    for rank in range(world):
        sampler = LengthGroupedSampler(
            LENGTHS[:n], batch, num_replicas=world, rank=rank, seed=seed, mega_batches=4
        )
        sampler.set_epoch(epoch)
        out.append(list(sampler))
        assert len(sampler) == len(out[-1])
    return out


@pytest.mark.parametrize("world", [1, 2, 3])
@pytest.mark.parametrize("n", [437, 400, 96])
def test_every_example_once_per_epoch_on_one_rank(n, world):
    ranks = shards(n, 8, world)
    seen = [i for shard in ranks for i in shard]
    assert sorted(seen) == list(range(n))


@pytest.mark.parametrize("world", [2, 3])
def test_ranks_take_the_same_number_of_batches(world):
    for n in (437, 400, 97, 2):
        counts = {
            len(DataLoader(range(n), batch_size=8, sampler=_sampler(n, world, rank)))
            for rank in range(world)
        }
        assert len(counts) == 1
        # No rank is ever handed an empty batch.
        for rank in range(world):
            assert all(len(b) for b in DataLoader(range(n), 8, sampler=_sampler(n, world, rank)))


def _sampler(n: int, world: int, rank: int) -> LengthGroupedSampler:
    return LengthGroupedSampler(LENGTHS[:n], 8, num_replicas=world, rank=rank)


def test_a_tiny_remainder_repeats_only_what_keeps_every_rank_busy():
    # 2 examples left over for 3 ranks: one repeat, so the third rank also takes the step.
    ranks = shards(8 * 3 + 2, 8, 3)
    seen = [i for shard in ranks for i in shard]
    assert set(seen) == set(range(26)) and len(seen) == 27


def test_deterministic_per_seed_and_epoch():
    assert shards(437, 8, 2, epoch=3) == shards(437, 8, 2, epoch=3)
    assert shards(437, 8, 2, epoch=3) != shards(437, 8, 2, epoch=4)
    assert shards(437, 8, 2, seed=1) != shards(437, 8, 2, seed=2)


def test_batches_are_grouped_by_length():
    """Padding to each batch's longest sequence wastes far less than with random batches."""
    sampler = LengthGroupedSampler(LENGTHS, 8, mega_batches=4)
    grouped = [LENGTHS[list(b)] for b in DataLoader(range(len(LENGTHS)), 8, sampler=sampler)]
    shuffled = np.random.default_rng(0).permutation(LENGTHS)
    random = [shuffled[i : i + 8] for i in range(0, len(shuffled), 8)]

    def padded(batches):
        return sum(len(b) * b.max() for b in batches)

    assert padded(grouped) < 0.75 * padded(random)
    # Ranks share each global batch's lengths: their batches are alike, none waits long.
    a, b = (list(LengthGroupedSampler(LENGTHS, 8, num_replicas=2, rank=r)) for r in (0, 1))
    assert np.abs(LENGTHS[a[:8]].max() - LENGTHS[b[:8]].max()) <= 5


def test_batch_order_is_shuffled_not_sorted():
    sampler = LengthGroupedSampler(LENGTHS, 8, mega_batches=100)  # one mega-batch: all sorted
    maxima = [LENGTHS[list(b)].max() for b in DataLoader(range(len(LENGTHS)), 8, sampler=sampler)]
    assert maxima != sorted(maxima, reverse=True)


def test_sequence_lengths_follow_a_selection():
    dataset = datasets.Dataset.from_dict({"input_ids": [[1] * k for k in (3, 1, 4, 1, 5)]})
    assert sequence_lengths(dataset).tolist() == [3, 1, 4, 1, 5]
    assert sequence_lengths(dataset.select([4, 0])).tolist() == [5, 3]


def test_sorting_the_validation_set_leaves_the_scores_unchanged(tmp_path):
    """build_dataloaders sorts each eval shard by length (less padding): same scores."""
    trial = TrialConfig.model_validate(
        {
            "model": {"from_scratch": True, "tokenizer": "wordpiece", "wordpiece_vocab_size": 400},
            "data": {"synthetic_train_size": 40, "synthetic_validation_size": 150},
        }
    )
    recipe = FineTuneRecipe(trial, cache_dir=tmp_path)
    recipe.setup()
    by_length = recipe.evaluate()
    _, validation = tokenize_cached(
        load_task_data(trial.data), recipe.tokenizer, trial.data.max_length, tmp_path
    )
    loader = recipe.eval_loader
    assert sequence_lengths(loader.dataset).tolist() != sequence_lengths(validation).tolist()
    recipe.eval_loader = DataLoader(
        validation, batch_size=loader.batch_size, collate_fn=loader.collate_fn
    )
    in_file_order = recipe.evaluate()
    assert by_length["eval_accuracy"] == in_file_order["eval_accuracy"]
    assert by_length["eval_f1"] == in_file_order["eval_f1"]
    assert by_length["eval_loss"] == pytest.approx(in_file_order["eval_loss"], rel=1e-5)
