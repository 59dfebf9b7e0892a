"""DCGAN: a conv-transpose generator and a conv discriminator, both with BatchNorm.

FID and KID are measured in an offline feature space (`labrun.metrics.features`); mode
coverage is the class histogram of generated images under that space's classifier.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from functools import partial
from typing import Annotated, Any

import lightning as L
import torch
import torch.nn.functional as F
from annotated_types import Gt, Interval
from torch import nn

from labrun.config.rules import Positive, Probability
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
    """images -> one logit each; no BatchNorm on the first layer, LeakyReLU(0.2)."""

    def __init__(
        self, channels: int, image_size: int, width: int = 64, dropout: float = 0.0
    ) -> None:
        super().__init__()
        side, steps = _upsamplings(image_size)
        layers: list[nn.Module] = [nn.Conv2d(channels, width, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        c = width
        for _ in range(steps - 1):
            layers += [
                nn.Conv2d(c, c * 2, 4, 2, 1, bias=False),
                nn.BatchNorm2d(c * 2),
                nn.LeakyReLU(0.2, True),
            ]
            c *= 2
        layers += [nn.Flatten(), nn.Dropout(dropout), nn.Linear(c * side * side, 1)]
        self.net = nn.Sequential(*layers)
        self.apply(_init_weights)

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


def _build(factory: Callable[..., nn.Module], **shape: int) -> nn.Module:
    """Call a net's partial with the data's shape, unless its config pins a value itself."""
    pinned = factory.keywords if isinstance(factory, partial) else {}
    return factory(**{k: v for k, v in shape.items() if k not in pinned})


class GAN(L.LightningModule):
    """DCGAN training with manual optimisation: one discriminator then one generator step.

    `generator` and `discriminator` are partials from config; channels and image size come
    from the data. Both get `gradient_clip_val` through `clip_gradients`; `label_smoothing` is
    one-sided (real targets 1 - s). Noise for sample grids, validation and test comes from
    fixed seeds, never from the global RNG, so measuring never changes training.

    `ema_decay` (e.g. 0.999) keeps an exponential moving average of the generator's weights
    (its BatchNorm statistics copied) after every generator step; the average is then what
    samples, what FID/KID/coverage measure and what is exported. Unset, nothing changes.
    """

    validation_metrics = ("val/fid",)  # labrun.contracts.DeclaresMetrics

    def __init__(
        self,
        channels: int,
        image_size: int,
        num_classes: int,
        generator: Callable[..., nn.Module],
        discriminator: Callable[..., nn.Module],
        g_optimizer: Callable[..., torch.optim.Optimizer],
        d_optimizer: Callable[..., torch.optim.Optimizer],
        latent_dim: Positive = 100,
        label_smoothing: Probability = 0.0,
        gradient_clip_val: Annotated[float, Gt(0)] | None = None,
        n_eval: Positive = 10000,
        grid_size: Positive = 64,
        eval_seed: int = 1234,
        features: dict[str, Any] | None = None,
        ema_decay: Annotated[float, Interval(ge=0, lt=1)] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(
            ignore=["generator", "discriminator", "g_optimizer", "d_optimizer"]
        )
        self.automatic_optimization = False
        self.generator = _build(
            generator, latent_dim=latent_dim, channels=channels, image_size=image_size
        )
        self.discriminator = _build(discriminator, channels=channels, image_size=image_size)
        # registered only when asked for: a run without it has the checkpoints it always had
        self.generator_ema = (
            copy.deepcopy(self.generator).requires_grad_(False) if ema_decay is not None else None
        )
        self.g_optimizer_factory, self.d_optimizer_factory = g_optimizer, d_optimizer
        self.check_shapes((channels, image_size, image_size))
        noise = torch.Generator().manual_seed(eval_seed)
        self.register_buffer("fixed_noise", torch.randn(grid_size, latent_dim, generator=noise))
        self.features_config = dict(features or {})
        self._metrics: dict[str, Any] = {}  # not registered: kept out of checkpoints and .train()
        self.test_results: dict[str, Any] = {}

    def check_shapes(self, data_shape: tuple[int, int, int]) -> None:
        """Fail before training when the nets and the data disagree on image shape."""
        latent = self.hparams.latent_dim
        with torch.no_grad():
            was = self.generator.training
            made = tuple(self.generator.eval()(torch.zeros(2, latent)).shape[1:])
            self.generator.train(was)
            if made != data_shape:
                raise ConfigError(
                    f"model.generator makes {'x'.join(map(str, made))} images but the data has "
                    f"{'x'.join(map(str, data_shape))}; remove the size pinned in model.generator "
                    "or change the data"
                )
            try:
                self.discriminator.eval()(torch.zeros(2, *data_shape))
            except RuntimeError as exc:
                raise ConfigError(
                    f"model.discriminator cannot take {'x'.join(map(str, data_shape))} images "
                    f"({str(exc).splitlines()[0]}); remove the size pinned in model.discriminator"
                ) from None
            finally:
                self.discriminator.train()

    # -- metrics ---------------------------------------------------------------------------

    def prepare(self, datamodule: Any, run_dir: str) -> dict[str, float]:
        """Load or train the feature space; returns its accuracy and real-vs-real floor."""
        from torchmetrics.image.fid import FrechetInceptionDistance
        from torchmetrics.image.kid import KernelInceptionDistance

        from labrun.metrics.features import load_or_train

        settings = {"cache_dir": f"{run_dir}/cache", **self.features_config}
        kind = settings.pop("kind", "lenet")
        weights = settings.pop("inception_weights", None)
        space = load_or_train(datamodule, **settings)
        self.feature_kind = kind
        n_test = min(self.hparams.n_eval, len(datamodule.tensors["test"][0]))
        self._metrics = {
            "space": space,
            "val_fid": FrechetInceptionDistance(feature=space.extractor(kind, weights)),
            "fid": FrechetInceptionDistance(feature=space.extractor(kind, weights)),
            "kid": KernelInceptionDistance(
                feature=space.extractor(kind, weights), subset_size=min(1000, n_test)
            ),
        }
        self.n_test = n_test
        return space.metrics()

    def _metric(self, name: str) -> Any:
        if not self._metrics:
            raise RuntimeError(
                "GAN.prepare(datamodule, run_dir) must run before validation or test"
            )
        return self._metrics[name].to(self.device)

    def _noise(self, n: int, offset: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.hparams.eval_seed + 1 + offset)
        return torch.randn(n, self.hparams.latent_dim, generator=g).to(self.device)

    @property
    def sampler(self) -> nn.Module:
        """The generator that samples: its moving average where `ema_decay` is set."""
        return self.generator if self.generator_ema is None else self.generator_ema

    @torch.no_grad()
    def update_ema(self) -> None:
        decay, ema, now = self.hparams.ema_decay, self.generator_ema, self.generator
        for a, b in zip(ema.parameters(), now.parameters(), strict=True):
            a.lerp_(b, 1.0 - decay)
        for a, b in zip(ema.buffers(), now.buffers(), strict=True):
            a.copy_(b)

    @torch.no_grad()
    def sample_grid(self) -> torch.Tensor:
        """The fixed-noise grid in [0, 1]; the same noise every epoch."""
        sampler = self.sampler
        was = sampler.training
        sampler.eval()
        try:
            return (sampler(self.fixed_noise) + 1) / 2
        finally:
            sampler.train(was)

    # -- training --------------------------------------------------------------------------

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.generator(z)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        real, _ = batch
        g_opt, d_opt = self.optimizers()
        n = len(real)
        z = torch.randn(n, self.hparams.latent_dim, device=self.device)
        fake = self.generator(z)
        clip = self.hparams.gradient_clip_val

        real_logits = self.discriminator(real)
        fake_logits = self.discriminator(fake.detach())
        target_real = torch.full_like(real_logits, 1.0 - self.hparams.label_smoothing)
        d_loss = F.binary_cross_entropy_with_logits(
            real_logits, target_real
        ) + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))
        d_opt.zero_grad(set_to_none=True)
        self.manual_backward(d_loss)
        if clip:
            self.clip_gradients(d_opt, gradient_clip_val=clip, gradient_clip_algorithm="norm")
        d_opt.step()

        gen_logits = self.discriminator(fake)
        g_loss = F.binary_cross_entropy_with_logits(gen_logits, torch.ones_like(gen_logits))
        g_opt.zero_grad(set_to_none=True)
        self.manual_backward(g_loss)
        if clip:
            self.clip_gradients(g_opt, gradient_clip_val=clip, gradient_clip_algorithm="norm")
        g_opt.step()
        if self.generator_ema is not None:
            self.update_ema()

        self.log_dict(
            {
                "train/g_loss": g_loss,
                "train/d_loss": d_loss,
                "train/d_real": torch.sigmoid(real_logits).mean(),
                "train/d_fake": torch.sigmoid(fake_logits).mean(),
            },
            prog_bar=True,
            on_step=True,
            on_epoch=True,
            batch_size=n,
            sync_dist=True,
        )

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        return [
            self.g_optimizer_factory(params=self.generator.parameters()),
            self.d_optimizer_factory(params=self.discriminator.parameters()),
        ]

    # -- validation and test: FID in the feature space, from fixed noise ---------------------

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        real, _ = batch
        fid = self._metric("val_fid")
        fid.update(real, real=True)
        fid.update(self.sampler(self._noise(len(real), batch_idx)), real=False)

    def on_validation_epoch_end(self) -> None:
        fid = self._metric("val_fid")
        self.log("val/fid", fid.compute(), prog_bar=True)
        fid.reset()

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        real, labels = batch
        seen = batch_idx * self.trainer.test_dataloaders.batch_size
        n = min(len(real), self.n_test - seen)
        if n <= 0:
            return
        real, labels = real[:n], labels[:n]
        fake = self.sampler(self._noise(n, 100_000 + batch_idx))
        for name in ("fid", "kid"):
            self._metric(name).update(real, real=True)
            self._metric(name).update(fake, real=False)
        classify = self._metrics["space"].net.to(self.device)
        self.test_results.setdefault("gen_labels", []).append(classify(fake).argmax(-1).cpu())
        self.test_results.setdefault("real_labels", []).append(labels.cpu())

    def on_test_epoch_start(self) -> None:
        self.test_results = {}

    def on_test_epoch_end(self) -> None:
        from labrun.metrics.features import mode_coverage

        generated = torch.cat(self.test_results.pop("gen_labels"))
        kid = self._metric("kid")
        kid.subset_size = min(1000, len(generated))  # fewer test batches than planned (limit_*)
        kid_mean, kid_std = kid.compute()
        coverage = mode_coverage(
            generated,
            torch.cat(self.test_results.pop("real_labels")),
            self.hparams.num_classes,
        )
        scores = {
            "test/fid": self._metric("fid").compute(),
            "test/kid": kid_mean,
            "test/kid_std": kid_std,
            "test/coverage_kl": coverage["kl"],
            "test/classes_covered": float(coverage["classes_covered"]),
            "test/n_samples": float(len(generated)),
        }
        if self.feature_kind == "lenet":  # the floor was measured in the LeNet space
            scores["test/fid_floor"] = self._metrics["space"].floor_fid
        self.log_dict(scores, sync_dist=True)
        self._metric("fid").reset()
        self._metric("kid").reset()
        self.test_results = {"samples": self.sample_grid().cpu(), "coverage": coverage}

    def export(self, datamodule: Any) -> nn.Module:
        return GeneratorSampler(copy.deepcopy(self.sampler).cpu(), self.hparams.latent_dim)
