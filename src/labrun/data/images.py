"""MNIST-style image datasets: torchvision's files and checksums, read without writing."""

from __future__ import annotations

import gzip
import hashlib
import logging
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import torch
from annotated_types import Gt
from torch.utils.data import DataLoader, Dataset, TensorDataset

from labrun.config.rules import NonNegative, Positive
from labrun.data.samplers import ShardSampler, ShuffledBatchSampler
from labrun.data.splits import SplitDataModule
from labrun.errors import DataError

log = logging.getLogger(__name__)
SPLIT_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
FOLDERS = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST"}
CLASS_NAMES = {
    "mnist": [str(i) for i in range(10)],
    "fashion_mnist": [
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    ],
}


def _torchvision_class(dataset: str) -> Any:
    from torchvision import datasets

    return {"mnist": datasets.MNIST, "fashion_mnist": datasets.FashionMNIST}[dataset]


def read_idx(path: Path) -> tuple[np.ndarray, str]:
    """An IDX file (MNIST's format), plain or gzipped, as a uint8 array, and the sha256 of the
    file's bytes (read once for both)."""
    try:
        raw = path.read_bytes()
        data = gzip.decompress(raw) if path.suffix == ".gz" else raw
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise DataError(f"{path}: cannot read ({exc}); delete it to download it again") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 8:
        raise DataError(f"{path}: not an IDX file of unsigned bytes (magic {data[:4].hex()})")
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    offset = 4 + 4 * ndim
    expected = int(np.prod(dims))
    if len(data) - offset != expected:
        raise DataError(
            f"{path}: {len(data) - offset} bytes of data, expected {expected} for {dims}"
        )
    array = np.frombuffer(data, dtype=np.uint8, offset=offset).reshape(dims)
    return array, hashlib.sha256(raw).hexdigest()


class AugmentedImages(Dataset):
    """uint8 images, augmented per sample (torchvision.transforms.v2), then normalised.

    Keys are `(index, seed)` from `ShuffledBatchSampler`: each sample's augmentation draws from
    its own seed, so it depends on (seed, epoch, index) only and a resumed run repeats it.
    """

    def __init__(
        self, images: torch.Tensor, labels: torch.Tensor, augment: Any, mean: float, std: float
    ) -> None:
        self.labels, self.augment = labels, augment
        self.mean, self.std = mean, std
        # Without augmentation, normalise once rather than per sample and epoch.
        self.images = images if augment is not None else self._normalise(images)

    def _normalise(self, x: torch.Tensor) -> torch.Tensor:
        return (x.float() / 255 - self.mean) / self.std

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        i, seed = key if isinstance(key, tuple) else (key, key)
        if self.augment is None:
            return self.images[i], self.labels[i]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            x = self.augment(self.images[i])
        return self._normalise(x), self.labels[i]


class ImageDataModule(SplitDataModule):
    """MNIST or Fashion-MNIST from `data_dir/<MNIST|FashionMNIST>/raw/`, torchvision's layout.

    Files already present (plain or `.gz`) are read in place, so a read-only folder works;
    missing ones are downloaded with torchvision's md5 check. Pixels become `(x/255 - mean)/std`
    (mean = std = 0.5 gives [-1, 1]); `augment` is a list of `torchvision.transforms.v2`
    transforms for the train split; val is a seeded cut of train.
    """

    def __init__(
        self,
        data_dir: str,
        dataset: Literal["mnist", "fashion_mnist"] = "mnist",
        val_size: Positive = 5000,
        split_seed: int = 0,
        shuffle_seed: int = 0,
        batch_size: Positive = 128,
        mean: float = 0.5,
        std: Annotated[float, Gt(0)] = 0.5,
        augment: list[Any] | None = None,
        download: bool = True,
        num_workers: NonNegative = 0,
    ) -> None:
        super().__init__()
        if dataset not in FOLDERS:
            raise DataError(f"unknown data.dataset '{dataset}'; use one of {', '.join(FOLDERS)}")
        self.data_dir = Path(data_dir)
        self.dataset = dataset
        self.val_size = val_size
        self.split_seed = split_seed
        self.shuffle_seed = shuffle_seed
        self.batch_size = batch_size
        self.mean, self.std = mean, std
        self.augment = list(augment or [])
        self.download = download
        self.num_workers = num_workers
        self.raw_dir = self.data_dir / FOLDERS[dataset] / "raw"
        self.class_names = CLASS_NAMES[dataset]
        self.fingerprint: dict[str, str] = {}
        self.stats: dict[str, int] = {}
        self.tensors: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def _find(self, name: str) -> Path | None:
        for candidate in (self.raw_dir / name, self.raw_dir / f"{name}.gz"):
            if candidate.is_file():
                return candidate
        return None

    def prepare_data(self) -> None:
        """Download the `.gz` files that are missing, checked against torchvision's md5."""
        from torchvision.datasets.utils import download_url

        cls = _torchvision_class(self.dataset)
        for filename, md5 in cls.resources:
            if self._find(filename.removesuffix(".gz")) is not None:
                continue
            if not self.download:
                raise DataError(
                    f"missing data file {self.raw_dir / filename}; point paths.data_dir (or "
                    "LABRUN_DATA_DIR) at a folder holding it, or set data.download=true"
                )
            from labrun.data.download import check_online, stall_timeout

            check_online(cls.mirrors[0] + filename, self.raw_dir / filename)
            errors = []
            for mirror in cls.mirrors:
                try:
                    with stall_timeout():
                        download_url(mirror + filename, str(self.raw_dir), filename, md5)
                    break
                except Exception as exc:  # next mirror
                    errors.append(f"{mirror}: {exc}")
            else:
                raise DataError(
                    f"missing data file {self.raw_dir / filename} and the download failed "
                    f"({'; '.join(errors)}); put it there or point paths.data_dir at a copy"
                )

    def _read(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        arrays = []
        for name in SPLIT_FILES[split]:
            path = self._find(name)
            if path is None:
                raise DataError(
                    f"missing data file {self.raw_dir / name}(.gz); point paths.data_dir (or "
                    "LABRUN_DATA_DIR) at a folder holding it"
                )
            array, digest = read_idx(path)
            self.fingerprint[str(path.relative_to(self.data_dir))] = digest
            arrays.append(array)
        images, labels = arrays
        if len(images) != len(labels):
            raise DataError(
                f"{self.raw_dir}: {len(images)} {split} images but {len(labels)} labels"
            )
        return torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(
            labels.astype(np.int64)
        )

    def setup(self, stage: str | None = None) -> None:
        if self.tensors:
            return
        x, y = self._read("train")
        if not 0 < self.val_size < len(x):
            raise DataError(
                f"data.val_size must be between 1 and {len(x) - 1}, got {self.val_size}"
            )
        perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(self.split_seed))
        val_idx, train_idx = (
            perm[: self.val_size].sort().values,
            perm[self.val_size :].sort().values,
        )
        self.tensors = {
            "train": (x[train_idx], y[train_idx]),
            "val": (x[val_idx], y[val_idx]),
            "test": self._read("test"),
        }
        self.stats = {f"{split}_rows": len(t[0]) for split, t in self.tensors.items()}
        log.info("data: %s %s", self.dataset, self.stats)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.tensors["train"][0].shape[1:])  # type: ignore[return-value]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def split_files(self) -> dict[str, list[str]]:
        """The idx files each split was read from: val is cut from the train files."""

        def of(source: str) -> list[str]:
            return sorted(
                k for k in self.fingerprint if Path(k).name.split(".")[0] in SPLIT_FILES[source]
            )

        return {"train": of("train"), "val": of("train"), "test": of("test")}

    def model_kwargs(self) -> dict[str, int]:
        channels, height, width = self.image_shape
        if height != width:
            raise DataError(
                f"images are {height}x{width}; labrun's image models need square images"
            )
        return {"channels": channels, "image_size": height, "num_classes": self.num_classes}

    def normalized(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        """A split as float tensors in the model's range, without augmentation."""
        x, y = self.tensors[split]
        return (x.float() / 255 - self.mean) / self.std, y

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        workers = {"num_workers": self.num_workers, "persistent_workers": self.num_workers > 0}
        if not shuffle:
            dataset = TensorDataset(*self.normalized(split))
            sampler = ShardSampler(len(dataset))
            return DataLoader(dataset, batch_size=self.batch_size, sampler=sampler, **workers)
        x, y = self.tensors[split]
        augment = None
        if self.augment:
            from torchvision.transforms import v2

            augment = v2.Compose(self.augment)
        return DataLoader(
            AugmentedImages(x, y, augment, self.mean, self.std),
            batch_sampler=ShuffledBatchSampler(len(x), self.batch_size, self.shuffle_seed),
            **workers,
        )
