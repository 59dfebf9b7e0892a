"""What every labrun DataModule shares: loaders per split, a resumable training order, and a
seeded, stratified cut of one split into two."""

from __future__ import annotations

import random
from collections import defaultdict
from typing import Any

import lightning as L
from torch.utils.data import DataLoader

from labrun.data.samplers import EpochBatchSampler


def stratified_cut(rows: list[tuple[str, Any]], fraction: float, seed: int) -> tuple[list, list]:
    """(kept, cut): `fraction` of each class (rows are `(label, ...)`), chosen by `seed`."""
    rng = random.Random(seed)
    by_class: dict[str, list[int]] = defaultdict(list)
    for i, (label, _) in enumerate(rows):
        by_class[label].append(i)
    cut: set[int] = set()
    for label in sorted(by_class):
        idx = by_class[label]
        rng.shuffle(idx)
        cut.update(idx[: round(len(idx) * fraction)])
    return [r for i, r in enumerate(rows) if i not in cut], [
        r for i, r in enumerate(rows) if i in cut
    ]


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
