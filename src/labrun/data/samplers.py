"""Training orders that depend on (seed, epoch) only and can start part-way, sharded by rank."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import Sampler


class _EpochHook:
    """Lightning calls `set_epoch` on `batch_sampler.sampler`, never on the batch sampler
    itself: without this hook every epoch would repeat the first epoch's order."""

    def __init__(self, owner: EpochBatchSampler) -> None:
        self.owner = owner

    def set_epoch(self, epoch: int) -> None:
        self.owner.set_epoch(epoch)


def world() -> tuple[int, int]:
    """(number of ranks, this rank) of the running distributed job; (1, 0) outside one."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_world_size(), torch.distributed.get_rank()
    return 1, 0


class EpochBatchSampler(Sampler[list[Any]]):
    """Batches in an order that depends on (seed, epoch) only, startable part-way through.

    Nothing carries over from one epoch to the next, so a run resumed from a checkpoint sees
    exactly the order an uninterrupted one would: Lightning sets the epoch before each pass,
    and `resume_at(epoch, batch)` (from the checkpoint) makes the next pass start at that batch.

    Under DDP each rank takes every world-th batch of the same order; a shuffled (training)
    order is padded from its start so that every rank steps the same number of times.
    """

    def __init__(self, seed: int, shuffle: bool = True) -> None:
        self.seed = seed
        self.shuffle = shuffle
        self.epoch = 0
        self._start: tuple[int, int] | None = None
        self.sampler = _EpochHook(self)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def resume_at(self, epoch: int, batch: int) -> None:
        self._start = (epoch, batch)

    def generator(self, epoch: int) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed * 100_003 + epoch)

    def batches(self, epoch: int) -> list[list[Any]]:
        raise NotImplementedError

    def count(self) -> int:
        """Batches in one epoch, before sharding."""
        raise NotImplementedError

    def shard(self, batches: list[list[Any]]) -> list[list[Any]]:
        size, rank = world()
        if size == 1:
            return batches
        if self.shuffle and len(batches) % size:
            batches = batches + batches[: size - len(batches) % size]
        return batches[rank::size]

    def __iter__(self) -> Iterator[list[Any]]:
        epoch, skip = self.epoch, 0
        if self._start is not None:
            (epoch, skip), self._start = self._start, None
            self.epoch = epoch
        return iter(self.shard(self.batches(epoch))[skip:])

    def __len__(self) -> int:
        size, rank = world()
        n = self.count()
        if self.shuffle:
            return -(-n // size)
        return len(range(rank, n, size))


class ShuffledBatchSampler(EpochBatchSampler):
    """Fixed-size batches of a seeded permutation; each index comes with a per-sample seed
    `(i, seed)`, so random augmentation depends on (seed, epoch, i), not on process history."""

    def __init__(self, n: int, batch_size: int, seed: int) -> None:
        super().__init__(seed)
        self.n = n
        self.batch_size = batch_size

    def batches(self, epoch: int) -> list[list[Any]]:
        g = self.generator(epoch)
        perm = torch.randperm(self.n, generator=g).tolist()
        seeds = torch.randint(0, 2**62, (self.n,), generator=g).tolist()
        keyed = [(i, s) for i, s in zip(perm, seeds, strict=True)]
        return [keyed[i : i + self.batch_size] for i in range(0, self.n, self.batch_size)]

    def count(self) -> int:
        return (self.n + self.batch_size - 1) // self.batch_size


class ShardSampler(Sampler[int]):
    """Every world-th index, in order: an evaluation split divided between DDP ranks (metrics
    are then synced across ranks), without the repeats of a padded DistributedSampler."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __iter__(self) -> Iterator[int]:
        size, rank = world()
        return iter(range(rank, self.n, size))

    def __len__(self) -> int:
        size, rank = world()
        return len(range(rank, self.n, size))


class BucketBatchSampler(EpochBatchSampler):
    """Batches of similar length, so padding stays small; order seeded by (seed, epoch).

    Indices are shuffled, cut into pools of `pool_batches` batches, sorted by length inside each
    pool and batched; the batches are then shuffled. Without `shuffle`, batches go in length
    order (val and test).
    """

    def __init__(
        self,
        lengths: list[int],
        batch_size: int,
        seed: int,
        shuffle: bool = True,
        pool_batches: int = 50,
    ) -> None:
        super().__init__(seed, shuffle)
        self.lengths = lengths
        self.batch_size = batch_size
        self.pool = batch_size * pool_batches

    def batches(self, epoch: int) -> list[list[int]]:
        n = len(self.lengths)
        if not self.shuffle:
            order = sorted(range(n), key=lambda i: (self.lengths[i], i))
            return [order[i : i + self.batch_size] for i in range(0, n, self.batch_size)]
        g = self.generator(epoch)
        perm = torch.randperm(n, generator=g).tolist()
        batches = []
        for start in range(0, n, self.pool):
            pool = sorted(perm[start : start + self.pool], key=lambda i: (self.lengths[i], i))
            batches += [pool[i : i + self.batch_size] for i in range(0, len(pool), self.batch_size)]
        order = torch.randperm(len(batches), generator=g).tolist()
        return [batches[i] for i in order]

    def count(self) -> int:
        return (len(self.lengths) + self.batch_size - 1) // self.batch_size
