"""Seed and thread count, applied before any work, and every training batch reseeded from its
position: what makes two runs of one config bit-identical on CPU."""

from __future__ import annotations

import logging
import os
import random
from typing import Any

import lightning as L
import numpy as np
import torch

log = logging.getLogger(__name__)


def apply(seed: int, threads: int) -> None:
    """Seed python, numpy, torch and dataloader workers; fix the torch thread pools.

    1 and 2 intra-op threads give different float sums, so the count is config, not machine.
    """
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS on GPUs
    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(threads)
    except RuntimeError:  # already fixed in this process (a second task in one interpreter)
        if torch.get_num_interop_threads() != threads:
            log.warning(
                "inter-op threads stay %d (set once per process)", torch.get_num_interop_threads()
            )
    L.seed_everything(seed, workers=True, verbose=False)


def batch_seed(seed: int, epoch: int, batch: int) -> int:
    """A well-mixed 63-bit seed for one training batch (splitmix64 over the three numbers)."""
    x = (seed * 1_000_003 + epoch) * 1_000_003 + batch
    x = (x + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return (x ^ (x >> 31)) >> 1


def reseed(seed: int) -> None:
    """python, numpy and torch (CPU, and CUDA once started) from one 63-bit seed.

    The same streams as `torch.manual_seed`, at a hundredth of its cost: that call also queues
    a lazy CUDA seeding, capturing a stack trace each time (~0.1 ms, paid on every batch).
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.default_generator.manual_seed(seed)
    if torch.cuda.is_initialized():
        torch.cuda.manual_seed_all(seed)
    elif torch.backends.mps.is_available():
        torch.mps.manual_seed(seed)


class ReseedEachBatch(L.Callback):
    """Reseeds python, numpy and torch from (seed, epoch, batch) before every training batch.

    Dropout, noise and augmentation then never depend on what ran before: not on a crash and
    resume, not on a validation pass, not on how many processes share a machine. DDP ranks draw
    different masks; rank 0 keeps the single-process stream.
    """

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        reseed(batch_seed(self.seed + 7919 * trainer.global_rank, trainer.current_epoch, batch_idx))
