"""DCGAN training: the two nets (`labrun.models.dcgan`) stepped in turn on their losses
(`labrun.models.gan_losses`); DiffAugment is in `labrun.models.diff_augment`. FID and KID are
measured in an offline feature space (`labrun.metrics.features`); mode coverage is the class
histogram of generated images under that space's classifier.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from functools import partial
from typing import Annotated, Any, Literal

import lightning as L
import torch
from annotated_types import Gt, Interval
from torch import nn

from labrun.config.rules import Decay, Positive, Probability, Together
from labrun.errors import ConfigError
from labrun.metrics import confident_by_class, confident_share, mode_coverage
from labrun.models.averaging import average_into

# Runs pickled before the nets moved to dcgan.py name them here: keep them importable.
from labrun.models.dcgan import DCGANDiscriminator, DCGANGenerator, GeneratorSampler
from labrun.models.diff_augment import diff_augment
from labrun.models.gan_losses import discriminator_loss, generator_loss

BN_BATCH = 128  # noise vectors per batch when `recompute_bn` measures BatchNorm statistics

__all__ = ["GAN", "DCGANDiscriminator", "DCGANGenerator", "GeneratorSampler"]


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

    `ema_decay` (e.g. 0.999): an exponential moving average of G's weights (BatchNorm
    statistics copied) after every G step samples, is measured and is exported. `ema_warmup`:
    step t's decay is min(ema_decay, (1 + t) / (10 + t)), forgetting the untrained first Gs.

    `loss`: `bce`, the non-saturating loss of the DCGAN paper, or `hinge` (Lim & Ye 2017; the
    SN-GAN and BigGAN loss). `d_augment` lists DiffAugment transforms (`translation`,
    `cutout`) that both real and generated images pass through before the discriminator.

    `recompute_bn` (e.g. 100): before sampling for a grid, validation, test or export, the
    sampler's BatchNorm statistics are measured on it over that many batches of fixed noise
    (Brock et al. 2019): running statistics trail the weights, and an average has none.

    `lr_decay_start` (e.g. 0.5): from that fraction of training on (`progress`), both learning
    rates fall linearly towards 0 at the last step (manual optimisation has no scheduler hook).
    `g_top_k` (e.g. 0.5): G's loss counts only the fakes D rates most real, a share falling
    linearly from all to `g_top_k` at the last step (top-k training, Sinha et al. 2020).
    """

    validation_metrics = ("val/fid", "val/confident")  # labrun.contracts.DeclaresMetrics
    config_rules = (
        Together(
            ("ema_warmup", "ema_decay"),
            lambda ema_warmup, ema_decay: not ema_warmup or ema_decay is not None,
            "ema_decay set (e.g. 0.999) when ema_warmup is true",
        ),
        Together(
            ("loss", "label_smoothing"),
            lambda loss, label_smoothing: loss == "bce" or not label_smoothing,
            "label_smoothing 0 with loss=hinge (smoothing is a bce target)",
        ),
    )

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
        ema_decay: Decay | None = None,
        ema_warmup: bool = False,
        loss: Literal["bce", "hinge"] = "bce",
        d_augment: list[Literal["translation", "cutout"]] | None = None,
        recompute_bn: Positive | None = None,
        lr_decay_start: Annotated[float, Interval(ge=0, lt=1)] | None = None,
        g_top_k: Annotated[float, Interval(gt=0, le=1)] | None = None,
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
        if ema_warmup:  # counted in the checkpoint, so a resumed run does not warm up again
            self.register_buffer("ema_updates", torch.zeros((), dtype=torch.long))
        self.augment_policy = tuple(d_augment or ())
        self.g_optimizer_factory, self.d_optimizer_factory = g_optimizer, d_optimizer
        self.check_shapes((channels, image_size, image_size))
        noise = torch.Generator().manual_seed(eval_seed)
        self.register_buffer("fixed_noise", torch.randn(grid_size, latent_dim, generator=noise))
        self.features_config = dict(features or {})
        self._metrics: dict[str, Any] = {}  # not registered: kept out of checkpoints and .train()
        self.test_results: dict[str, Any] = {}
        self._bn_measured = False  # recompute_bn's statistics are the sampler's current ones

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
            raise RuntimeError("GAN.prepare(datamodule, run_dir) must run before val or test")
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
        if self.hparams.ema_warmup:
            t = float(self.ema_updates)
            decay = min(decay, (1.0 + t) / (10.0 + t))
            self.ema_updates += 1
        average_into(ema, now, decay)

    @torch.no_grad()
    def recompute_bn_stats(self) -> None:
        """`recompute_bn` batches of fixed noise through the sampler in train mode, each
        BatchNorm averaging them all (momentum None); a no-op when unset. The noise has its own
        seeds: the global RNG, and so training, is untouched."""
        batches, sampler = self.hparams.recompute_bn, self.sampler
        norms = [m for m in sampler.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        if not batches or not norms or self._bn_measured:
            return
        momenta = [m.momentum for m in norms]
        was = sampler.training
        for m in norms:
            m.reset_running_stats()
            m.momentum = None
        sampler.train()
        try:
            for i in range(batches):
                sampler(self._noise(BN_BATCH, 200_000 + i))
        finally:
            for m, momentum in zip(norms, momenta, strict=True):
                m.momentum = momentum
            sampler.train(was)
        self._bn_measured = True  # until a training step or a load changes the sampler

    def load_state_dict(self, *args: Any, **kwargs: Any) -> Any:
        self._bn_measured = False
        return super().load_state_dict(*args, **kwargs)

    @torch.no_grad()
    def sample_grid(self) -> torch.Tensor:
        """The fixed-noise grid in [0, 1]; the same noise every epoch."""
        self.recompute_bn_stats()
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

    def judge(self, images: torch.Tensor) -> torch.Tensor:
        """The discriminator's logits, after `d_augment`'s transforms when it has any."""
        if self.augment_policy:
            images = diff_augment(images, self.augment_policy)
        return self.discriminator(images)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        real, _ = batch
        g_opt, d_opt = self.optimizers()
        self.decay_lr(batch_idx, (g_opt.optimizer, d_opt.optimizer))
        n = len(real)
        z = torch.randn(n, self.hparams.latent_dim, device=self.device)
        fake = self.generator(z)
        clip = self.hparams.gradient_clip_val

        real_logits = self.judge(real)
        fake_logits = self.judge(fake.detach())
        d_loss = discriminator_loss(
            self.hparams.loss, real_logits, fake_logits, self.hparams.label_smoothing
        )
        d_opt.zero_grad(set_to_none=True)
        self.manual_backward(d_loss)
        if clip:
            self.clip_gradients(d_opt, gradient_clip_val=clip, gradient_clip_algorithm="norm")
        d_opt.step()

        gen_logits = self.judge(fake)
        keep = self.hparams.get("g_top_k")  # None: every fake counts, as before the option
        keep = 1.0 if keep is None else 1.0 - (1.0 - keep) * self.progress(batch_idx, "g_top_k")
        g_loss = generator_loss(self.hparams.loss, gen_logits, keep)
        g_opt.zero_grad(set_to_none=True)
        self.manual_backward(g_loss)
        if clip:
            self.clip_gradients(g_opt, gradient_clip_val=clip, gradient_clip_algorithm="norm")
        g_opt.step()
        if self.generator_ema is not None:
            self.update_ema()
        self._bn_measured = False

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

    def progress(self, batch_idx: int, option: str) -> float:
        """How far training is (0-1) by whichever of max_epochs and max_steps ends it first."""
        t = self.trainer
        done = [t.global_step / t.max_steps] if t.max_steps > 0 else []
        if (t.max_epochs or -1) > 0:
            done.append((t.current_epoch + batch_idx / t.num_training_batches) / t.max_epochs)
        if not done:
            raise ConfigError(
                f"model.{option} is scheduled over trainer.max_epochs or max_steps, and neither "
                f"is set; set one or model.{option}=null"
            )
        return min(1.0, max(done))

    def decay_lr(self, batch_idx: int, optimizers: tuple[torch.optim.Optimizer, ...]) -> None:
        """Set each learning rate from where training is, so a resumed run continues it."""
        if (start := self.hparams.lr_decay_start) is None:
            return
        scale = min(1.0, (1.0 - self.progress(batch_idx, "lr_decay_start")) / (1.0 - start))
        for group in (g for opt in optimizers for g in opt.param_groups):
            group["lr"] = group.setdefault("initial_lr", group["lr"]) * scale

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        return [
            self.g_optimizer_factory(params=self.generator.parameters()),
            self.d_optimizer_factory(params=self.discriminator.parameters()),
        ]

    # -- validation and test: FID in the feature space, from fixed noise ---------------------

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        real, _ = batch
        fid, fake = self._metric("val_fid"), self.sampler(self._noise(len(real), batch_idx))
        fid.update(real, real=True)
        fid.update(fake, real=False)
        sure = self._metrics["space"].net.to(self.device)(fake).softmax(-1).amax(-1)
        self.log("val/confident", confident_share(sure), batch_size=len(real), sync_dist=True)

    def on_validation_epoch_start(self) -> None:
        self.recompute_bn_stats()

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
        gen_p, real_p = classify(fake).softmax(-1), classify(real).softmax(-1)
        for key, value in (
            ("gen_labels", gen_p.argmax(-1)),
            ("gen_conf", gen_p.amax(-1)),
            ("real_conf", real_p.amax(-1)),
            ("real_labels", labels),
        ):
            self.test_results.setdefault(key, []).append(value.cpu())

    def on_test_epoch_start(self) -> None:
        self.test_results = {}
        self.recompute_bn_stats()

    def on_test_epoch_end(self) -> None:
        results = {k: torch.cat(v) for k, v in self.test_results.items()}
        generated = results["gen_labels"]
        kid = self._metric("kid")
        kid.subset_size = min(1000, len(generated))  # fewer test batches than planned (limit_*)
        kid_mean, kid_std = kid.compute()
        coverage = mode_coverage(generated, results["real_labels"], self.hparams.num_classes)
        coverage["confident_by_class"] = confident_by_class(
            results["gen_conf"], generated, self.hparams.num_classes
        )
        scores = {
            "test/fid": self._metric("fid").compute(),
            "test/kid": kid_mean,
            "test/kid_std": kid_std,
            "test/coverage_kl": coverage["kl"],
            "test/classes_covered": float(coverage["classes_covered"]),
            "test/confident": confident_share(results["gen_conf"]),
            "test/confident_real": confident_share(results["real_conf"]),
            "test/n_samples": float(len(generated)),
        }
        if self.feature_kind == "lenet":  # the floor was measured in the LeNet space
            scores["test/fid_floor"] = self._metrics["space"].floor_fid
        self.log_dict(scores, sync_dist=True)
        self._metric("fid").reset()
        self._metric("kid").reset()
        self.test_results = {"samples": self.sample_grid().cpu(), "coverage": coverage}

    def export(self, datamodule: Any) -> nn.Module:
        self.recompute_bn_stats()
        return GeneratorSampler(copy.deepcopy(self.sampler).cpu(), self.hparams.latent_dim)
