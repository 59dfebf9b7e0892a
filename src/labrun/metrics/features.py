"""An offline feature space for FID and KID: a LeNet trained on the dataset's own train split.

torchmetrics' Inception weights come from the internet; this classifier needs nothing but the
data. It is trained once per (data fingerprint, training settings) and cached, and its test
accuracy and the real-vs-real FID floor are reported beside every GAN score measured in it.
KID here is on a different scale from Inception's: compare it only within one feature space.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from labrun.errors import ConfigError
from labrun.files import written_whole

log = logging.getLogger(__name__)
VERSION = 2  # bump when LeNet or its training changes, to invalidate caches


class LeNet(nn.Module):
    """conv5-pool-conv5-pool-fc: 99%+ on MNIST in a few CPU minutes; `features` is 128-d."""

    def __init__(
        self,
        channels: int,
        image_size: int,
        num_classes: int,
        width: int = 32,
        num_features: int = 128,
        dropout: float = 0.3,
    ) -> None:
        super().__init__()
        self.num_features = num_features
        self.conv = nn.Sequential(
            nn.Conv2d(channels, width, 5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        side = image_size // 4
        self.embed = nn.Sequential(
            nn.Flatten(), nn.Linear(2 * width * side * side, num_features), nn.ReLU()
        )
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(num_features, num_classes))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.embed(self.conv(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class FrozenFeatures(nn.Module):
    """LeNet's 128-d features for torchmetrics: always in eval mode, never trained.

    `num_features` lets torchmetrics skip its 299x299 probe image.
    """

    def __init__(self, net: LeNet) -> None:
        super().__init__()
        self.net = net.eval()
        self.num_features = net.num_features
        for p in self.net.parameters():
            p.requires_grad_(False)

    def train(self, mode: bool = True) -> FrozenFeatures:
        return super().train(False)  # dropout would make FID noisy

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.features(x)


class InceptionFeatures(nn.Module):
    """torchmetrics' FID Inception (2048-d pool features) from weights already on disk.

    Takes images in [-1, 1]; grayscale is repeated to RGB. Needs the `torch-fidelity` package
    and the `pt_inception-2015-12-05` weights file, which labrun never downloads.
    """

    def __init__(self, weights_path: str) -> None:
        super().__init__()
        if not Path(weights_path).is_file():
            raise ConfigError(
                f"Inception weights not found at {weights_path}; put the FID Inception weights "
                "there or use model.features.kind=lenet"
            )
        try:
            from torchmetrics.image.fid import NoTrainInceptionV3
        except ImportError:
            raise ConfigError(
                "model.features.kind=inception needs torch-fidelity: pip install torch-fidelity"
            ) from None
        self.net = NoTrainInceptionV3(
            name="inception-v3-compat",
            features_list=["2048"],
            feature_extractor_weights_path=weights_path,
        )
        self.num_features = 2048

    def train(self, mode: bool = True) -> InceptionFeatures:
        return super().train(False)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        return self.net(x.repeat(1, 3, 1, 1) if x.shape[1] == 1 else x)


@dataclass
class FeatureSpace:
    net: LeNet
    key: str
    test_acc: float
    floor_fid: float
    floor_kid: float

    def extractor(self, kind: str = "lenet", inception_weights: str | None = None) -> nn.Module:
        """The network FID and KID use: this space's LeNet, or Inception from local weights."""
        if kind == "lenet":
            return FrozenFeatures(self.net)
        if kind == "inception":
            return InceptionFeatures(inception_weights or "")
        raise ConfigError(f"unknown model.features.kind '{kind}'; use lenet or inception")

    def metrics(self) -> dict[str, float]:
        return {
            "features/test_acc": self.test_acc,
            "features/floor_fid": self.floor_fid,
            "features/floor_kid": self.floor_kid,
        }


def _fid_kid(
    net: LeNet, real: torch.Tensor, fake: torch.Tensor, batch: int = 500
) -> tuple[float, float]:
    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.kid import KernelInceptionDistance

    fid = FrechetInceptionDistance(feature=FrozenFeatures(net))
    kid = KernelInceptionDistance(
        feature=FrozenFeatures(net), subset_size=min(1000, len(real), len(fake))
    )
    for i in range(0, len(real), batch):
        fid.update(real[i : i + batch], real=True)
        kid.update(real[i : i + batch], real=True)
    for i in range(0, len(fake), batch):
        fid.update(fake[i : i + batch], real=False)
        kid.update(fake[i : i + batch], real=False)
    return float(fid.compute()), float(kid.compute()[0])


def train_net(
    net: LeNet,
    x: torch.Tensor,
    y: torch.Tensor,
    max_epochs: int,
    lr: float,
    batch_size: int,
    seed: int,
) -> LeNet:
    """Adam with a decaying rate and cross-entropy; the task that asked for it records it."""
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    decay = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=0.6)  # 99.2% vs 99.0% flat
    loader = DataLoader(
        TensorDataset(x, y),
        batch_size=batch_size,
        shuffle=True,
        generator=torch.Generator().manual_seed(seed),
    )
    net.train()
    for epoch in range(max_epochs):
        total = 0.0
        for xb, yb in loader:
            loss = nn.functional.cross_entropy(net(xb), yb)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(xb)
        decay.step()
        log.info("feature classifier epoch %d: loss %.4f", epoch, total / len(x))
    return net.eval()


def load_or_train(
    dm: Any,
    cache_dir: str | Path,
    max_epochs: int = 3,
    lr: float = 1e-3,
    batch_size: int = 128,
    seed: int = 0,
    n_floor: int = 10000,
    train_rows: int | None = None,
) -> FeatureSpace:
    """The cached feature space for `dm`'s data, trained first if it is not cached yet;
    `train_rows` trains it on the first rows of the train split only (a quick space for
    debugging and tests: fewer rows, a weaker space).

    Training runs under its own seed in a forked RNG, so a GAN run draws the same random numbers
    whether the feature net came from the cache or was trained just now.
    """
    channels, size, _ = dm.image_shape
    settings = {
        "fingerprint": dm.fingerprint,
        "max_epochs": max_epochs,
        "lr": lr,
        "batch_size": batch_size,
        "seed": seed,
        "n_floor": n_floor,
        "mean": dm.mean,
        "std": dm.std,
        "shape": [channels, size],
        "version": VERSION,
    }
    if train_rows is not None:  # absent otherwise: the spaces cached before keep their keys
        settings["train_rows"] = train_rows
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
    path = Path(cache_dir) / "features" / f"{dm.dataset}-{key}.pt"
    net = LeNet(channels, size, dm.num_classes)
    if path.is_file():
        saved = torch.load(path, map_location="cpu", weights_only=True)
        net.load_state_dict(saved["state_dict"])
        log.info("feature space %s from cache: test accuracy %.4f", key, saved["test_acc"])
        return FeatureSpace(
            net.eval(), key, saved["test_acc"], saved["floor_fid"], saved["floor_kid"]
        )

    log.info("training the feature classifier for %s (cached at %s)", dm.dataset, path)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = LeNet(channels, size, dm.num_classes)
        space = _train_space(net, dm, key, max_epochs, lr, batch_size, seed, n_floor, train_rows)
    with written_whole(path) as partial:  # whole or absent, never half-written
        torch.save(
            {
                "state_dict": net.state_dict(),
                "test_acc": space.test_acc,
                "floor_fid": space.floor_fid,
                "floor_kid": space.floor_kid,
                "settings": json.dumps(settings),
            },
            partial,
        )
    return space


def _train_space(
    net: LeNet,
    dm: Any,
    key: str,
    max_epochs: int,
    lr: float,
    batch_size: int,
    seed: int,
    n_floor: int,
    train_rows: int | None = None,
) -> FeatureSpace:
    """Train `net` on the train split; measure its test accuracy and the real-vs-real floor."""
    x, y = dm.normalized("train")
    rows = slice(None, train_rows)
    train_net(net, x[rows], y[rows], max_epochs, lr, batch_size, seed)
    x_test, y_test = dm.normalized("test")
    with torch.no_grad():
        pred = torch.cat(
            [net(x_test[i : i + 1000]).argmax(-1) for i in range(0, len(x_test), 1000)]
        )
    test_acc = (pred == y_test).float().mean().item()
    n = min(n_floor, len(x_test), len(x))
    pick = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:n]
    floor_fid, floor_kid = _fid_kid(net, x[pick], x_test[:n])
    log.info("feature classifier: test accuracy %.4f, real-vs-real FID %.3f", test_acc, floor_fid)
    return FeatureSpace(net, key, test_acc, floor_fid, floor_kid)


def mode_coverage(
    generated: torch.Tensor, real: torch.Tensor, num_classes: int, eps: float = 1e-6
) -> dict[str, Any]:
    """Class histograms of generated and real labels; KL(p_real || p_generated) in nats.

    KL in this direction grows when the generator drops a class (a missing mode), which is
    what coverage is about; `classes_covered` counts classes generated at >= 25% of their
    real share.
    """
    p_gen = torch.bincount(generated, minlength=num_classes).double()
    p_real = torch.bincount(real, minlength=num_classes).double()
    p_gen, p_real = p_gen / p_gen.sum(), p_real / p_real.sum()
    kl = (p_real * ((p_real + eps) / (p_gen + eps)).log()).sum().item()
    covered = int((p_gen >= 0.25 * p_real).sum().item())
    return {
        "kl": kl,
        "classes_covered": covered,
        "generated": p_gen.tolist(),
        "real": p_real.tolist(),
    }


CONFIDENT = 0.9  # a sample counts as recognisable when the classifier gives it p >= this


def confident_share(confidence: torch.Tensor) -> float:
    """Share of images the feature classifier labels with p >= CONFIDENT: how many samples
    are recognisable, which FID, one distance between whole sets, does not say."""
    return (confidence >= CONFIDENT).float().mean().item()


def confident_by_class(
    confidence: torch.Tensor, labels: torch.Tensor, num_classes: int
) -> list[float | None]:
    """`confident_share` per predicted class (None for a class with no sample): it names the
    classes a generator draws badly."""
    return [
        confident_share(confidence[labels == c]) if bool((labels == c).any()) else None
        for c in range(num_classes)
    ]
