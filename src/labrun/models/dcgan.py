"""The DCGAN nets (Radford et al. 2015), both with BatchNorm, and the sampler a run exports.

Their own module so that `labrun.models.gan` holds the training and `model.generator` /
`model.discriminator` name a class that is only a net.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from labrun.errors import ConfigError


def _upsamplings(image_size: int) -> tuple[int, int]:
    """(start side, number of stride-2 steps): 28 -> (7, 2), 32 -> (4, 3), 64 -> (4, 4)."""
    side, steps = image_size, 0
    while side % 2 == 0 and side > 4:
        side, steps = side // 2, steps + 1
    if steps < 2 or side > 8:
        raise ConfigError(
            f"image_size {image_size} cannot be built from a 4-8 pixel start by doubling; "
            "use a size such as 28, 32 or 64"
        )
    return side, steps


def _init_weights(module: nn.Module) -> None:
    """DCGAN's init: N(0, 0.02) convolutions, N(1, 0.02) BatchNorm scales."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


class DCGANGenerator(nn.Module):
    """z [B, latent_dim] -> images [B, channels, image_size, image_size] in [-1, 1]."""

    def __init__(self, latent_dim: int, channels: int, image_size: int, width: int = 64) -> None:
        super().__init__()
        side, steps = _upsamplings(image_size)
        self.latent_dim, self.side = latent_dim, side
        top = width * 2 ** (steps - 1)
        self.project = nn.Sequential(
            nn.Linear(latent_dim, top * side * side, bias=False),
            nn.BatchNorm1d(top * side * side),
            nn.ReLU(True),
        )
        layers: list[nn.Module] = []
        c = top
        for _ in range(steps - 1):
            layers += [
                nn.ConvTranspose2d(c, c // 2, 4, 2, 1, bias=False),
                nn.BatchNorm2d(c // 2),
                nn.ReLU(True),
            ]
            c //= 2
        layers += [nn.ConvTranspose2d(c, channels, 4, 2, 1), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        self.top = top
        self.apply(_init_weights)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(self.project(z).view(-1, self.top, self.side, self.side))


class DCGANDiscriminator(nn.Module):
    """images -> one logit each; no BatchNorm on the first layer, LeakyReLU(0.2).

    `norm`: `batch` (DCGAN's BatchNorm after each inner convolution) or `spectral` (no
    BatchNorm; every layer's weight divided by its largest singular value, Miyato et al.
    2018, which bounds how fast D's judgement can change instead of normalising batches)."""

    def __init__(
        self,
        channels: int,
        image_size: int,
        width: int = 64,
        dropout: float = 0.0,
        norm: Literal["batch", "spectral"] = "batch",
    ) -> None:
        super().__init__()
        side, steps = _upsamplings(image_size)
        layers: list[nn.Module] = [nn.Conv2d(channels, width, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        c = width
        for _ in range(steps - 1):
            conv = nn.Conv2d(c, c * 2, 4, 2, 1, bias=norm == "spectral")
            batch_norm = [nn.BatchNorm2d(c * 2)] if norm == "batch" else []
            layers += [conv, *batch_norm, nn.LeakyReLU(0.2, True)]
            c *= 2
        layers += [nn.Flatten(), nn.Dropout(dropout), nn.Linear(c * side * side, 1)]
        self.net = nn.Sequential(*layers)
        if norm == "batch":
            self.apply(_init_weights)
        else:  # PyTorch's init, as SN-GAN: Adam's steps would swing N(0, 0.02) weights around
            for layer in self.net:
                if isinstance(layer, (nn.Conv2d, nn.Linear)):
                    spectral_norm(layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(1)


class GeneratorSampler(nn.Module):
    """What users load from MLflow: `sample(n, seed)` gives images in [0, 1]."""

    def __init__(self, generator: nn.Module, latent_dim: int) -> None:
        super().__init__()
        self.generator = generator.eval()
        self.latent_dim = latent_dim
        # MLflow's input example: two latent vectors in, two images out (its signature)
        self.input_example = torch.randn(2, latent_dim, generator=torch.Generator().manual_seed(0))

    @torch.no_grad()
    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return (self.generator(z) + 1) / 2

    def sample(self, n: int, seed: int = 0) -> torch.Tensor:
        z = torch.randn(n, self.latent_dim, generator=torch.Generator().manual_seed(seed))
        return self(z.to(next(self.parameters()).device))
