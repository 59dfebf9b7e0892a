"""The GAN's two losses, by name: `bce` (the DCGAN paper's non-saturating loss) and `hinge`."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def discriminator_loss(
    kind: str, real: torch.Tensor, fake: torch.Tensor, label_smoothing: float = 0.0
) -> torch.Tensor:
    """bce: -log D(x) - log(1 - D(G(z))), real targets 1 - label_smoothing; hinge: the mean
    of max(0, 1 - D(x)) + max(0, 1 + D(G(z))), zero once reals score >= 1 and fakes <= -1."""
    if kind == "hinge":
        return F.relu(1.0 - real).mean() + F.relu(1.0 + fake).mean()
    target = torch.full_like(real, 1.0 - label_smoothing)
    return F.binary_cross_entropy_with_logits(real, target) + F.binary_cross_entropy_with_logits(
        fake, torch.zeros_like(fake)
    )


def generator_loss(kind: str, fake: torch.Tensor, keep: float = 1.0) -> torch.Tensor:
    """bce: the non-saturating -log D(G(z)); hinge: -D(G(z)), the logit itself. `keep` < 1:
    only that share of the fakes, those D rates most real, count (top-k training)."""
    if keep < 1.0:
        fake = fake.flatten().topk(max(1, math.ceil(keep * fake.numel()))).values
    if kind == "hinge":
        return -fake.mean()
    return F.binary_cross_entropy_with_logits(fake, torch.ones_like(fake))
