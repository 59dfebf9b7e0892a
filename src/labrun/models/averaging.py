"""An exponential moving average of a module's weights, shared by the GAN's generator and the
text nets (and `make bench`'s plain loops, so they average exactly as labrun does)."""

from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def average_into(average: nn.Module, net: nn.Module, decay: float) -> None:
    """average <- decay * average + (1 - decay) * net; buffers (BatchNorm statistics) copied."""
    for a, b in zip(average.parameters(), net.parameters(), strict=True):
        a.lerp_(b, 1.0 - decay)
    for a, b in zip(average.buffers(), net.buffers(), strict=True):
        a.copy_(b)
