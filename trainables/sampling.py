"""Length-grouped batches: little padding, still a random order, the same for the same seed.

Dynamic padding pads each batch to its longest sequence, so a batch of similar lengths wastes
little work. Per epoch, ``LengthGroupedSampler`` shuffles the examples (seeded by seed and
epoch), cuts the order into mega-batches of ``mega_batches`` global batches, sorts each
mega-batch by length, cuts it into global batches (a micro-batch per rank) and shuffles the
order of those batches. Rank ``r`` takes every ``world``-th example of each global batch: the
ranks get disjoint shards of similar lengths (none waits on a longer one at the gradient
all-reduce) and the same number of batches, as DDP needs.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import datasets
import numpy as np
import pyarrow.compute as pc
from torch.utils.data import Sampler

__all__ = ["LengthGroupedSampler", "longest_first", "sequence_lengths"]


def sequence_lengths(dataset: datasets.Dataset, column: str = "input_ids") -> np.ndarray:
    """Token count of every row, read from Arrow (no Python lists: QQP has 364k rows)."""
    return pc.list_value_length(dataset.with_format("arrow")[column]).to_numpy()


def longest_first(dataset: datasets.Dataset) -> datasets.Dataset:
    """The rows sorted by length, longest first: consecutive rows pad to similar lengths.
    For evaluation, whose scores do not depend on the order of the examples."""
    return dataset.select(np.argsort(-sequence_lengths(dataset), kind="stable"))


class LengthGroupedSampler(Sampler[int]):
    """This rank's example indices, in length-grouped micro-batches of ``batch_size``.

    Use with ``DataLoader(batch_size=batch_size, sampler=...)`` and call ``set_epoch`` before
    each epoch, as with ``DistributedSampler``. Every example comes once per epoch, on one
    rank; only when the last step would leave a rank with nothing (fewer than ``num_replicas``
    examples left over) are a few repeated, so every rank takes the same number of steps.
    """

    def __init__(
        self,
        lengths: Sequence[int] | np.ndarray,
        batch_size: int,
        *,
        num_replicas: int = 1,
        rank: int = 0,
        seed: int = 0,
        mega_batches: int = 50,
    ) -> None:
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} is not in [0, {num_replicas})")
        self.lengths = np.asarray(lengths)
        self.batch_size = batch_size
        self.num_replicas = num_replicas
        self.rank = rank
        self.seed = seed
        self.mega_batches = mega_batches
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def global_batches(self) -> list[np.ndarray]:
        """This epoch's global batches (all ranks' examples), in training order."""
        world, size = self.num_replicas, self.batch_size * self.num_replicas
        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(len(self.lengths))
        batches = []
        step = size * self.mega_batches
        for start in range(0, len(order), step):
            mega = order[start : start + step]
            # Stable, so equal lengths keep their shuffled order.
            mega = mega[np.argsort(-self.lengths[mega], kind="stable")]
            batches += [mega[i : i + size] for i in range(0, len(mega), size)]
        # Only the very last batch can be short; it stays last, the full ones are shuffled.
        last = [batches.pop()] if batches and len(batches[-1]) < size else []
        batches = [batches[i] for i in rng.permutation(len(batches))] + last
        if last and len(last[0]) < world:
            batches[-1] = np.concatenate([last[0], order[: world - len(last[0])]])
        return batches

    def __iter__(self) -> Iterator[int]:
        for batch in self.global_batches():
            yield from batch[self.rank :: self.num_replicas].tolist()

    def __len__(self) -> int:
        size = self.batch_size * self.num_replicas
        full, rest = divmod(len(self.lengths), size)
        if rest:
            rest = max(rest, self.num_replicas)
        return full * self.batch_size + len(range(self.rank, rest, self.num_replicas))
