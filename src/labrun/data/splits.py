"""What every labrun DataModule shares: loaders per split, and a resumable training order."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Sampler


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


class SplitDataModule(L.LightningDataModule):
    """Train is shuffled by an `EpochBatchSampler`; val and test keep a fixed order."""

    train_start: tuple[int, int] | None = None  # set by labrun's resume callback

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        raise NotImplementedError

    def resume_at(self, epoch: int, batch: int) -> None:
        """Start the next training pass at `batch` of `epoch` (a resumed run)."""
        self.train_start = (epoch, batch)

    def train_dataloader(self) -> DataLoader:
        loader = self._loader("train", shuffle=True)
        if self.train_start is not None and isinstance(loader.batch_sampler, EpochBatchSampler):
            loader.batch_sampler.resume_at(*self.train_start)
            self.train_start = None
        return loader

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
