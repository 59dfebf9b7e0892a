"""Seed and thread count, applied before any work: the two things that change the last bits."""

from __future__ import annotations

import logging
import os

import lightning as L
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
