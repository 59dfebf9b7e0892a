"""One DataModule for text classification, whatever the on-disk format."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from pathlib import Path
from typing import Annotated, Any, Literal

import torch
from torch.utils.data import DataLoader, Dataset

from labrun.config.rules import Codec, Distinct, Fraction, NonNegative, Positive, Together
from labrun.data import text_cache
from labrun.data.download import ensure_file
from labrun.data.formats import READERS, Row, normalise_bytes, read_lines_as
from labrun.data.preprocess import TextPreprocessor
from labrun.data.samplers import BucketBatchSampler
from labrun.data.splits import SplitDataModule, stratified_cut
from labrun.errors import DataError

log = logging.getLogger(__name__)
SPLITS = ("train", "val", "test")


class EncodedTexts(Dataset):
    def __init__(self, ids: list[torch.Tensor], labels: list[int] | torch.Tensor) -> None:
        self.ids = ids
        self.labels = torch.as_tensor(labels, dtype=torch.long)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.ids[i], self.labels[i]


def pad_batch(items: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, ...]:
    """(token ids [B, T] padded with 0, lengths [B], labels [B])."""
    seqs, labels = zip(*items, strict=True)
    lengths = torch.tensor([len(s) for s in seqs], dtype=torch.long)
    ids = torch.nn.utils.rnn.pad_sequence(list(seqs), batch_first=True, padding_value=0)
    return ids, lengths, torch.stack(labels)


class TextClassificationData(SplitDataModule):
    """Reads, cleans, splits and batches a text-classification corpus.

    `format` picks the reader: `prefixed` (`<label> <text>`), `tsv` (`<label>\\t<text>`), `trec`
    (`COARSE:fine <text>`), `csv` (quoted, no header) or `per_class` (one file per class in
    `class_files`, a sentence per line). `files` maps split names to paths under `data_dir`; a
    missing val or test split is cut from train, stratified and seeded by `split_seed`.
    `sources` lists `{path, url, sha256[, member]}` for files that can be downloaded.

    With `cache_dir`, the tensorised splits, vocabulary and classes are kept there under a key
    made of the files' sha256, every preprocessing setting and the preprocessing code itself,
    so a second run on the same data skips reading, cleaning, tokenising and the vocabulary.
    """

    config_rules = (
        Together(
            ("val_fraction", "test_fraction"),
            lambda val_fraction, test_fraction: val_fraction + test_fraction < 1,
            "val_fraction + test_fraction < 1 (train keeps the rest)",
        ),
        Together(
            ("labels", "label_names"),
            lambda labels, label_names: (
                not labels or not label_names or len(labels) == len(label_names)
            ),
            "one label_names entry per entry of labels",
        ),
    )

    def __init__(
        self,
        data_dir: str,
        format: Literal["prefixed", "tsv", "trec", "csv", "per_class"],
        files: dict[str, str] | None = None,
        class_files: dict[str, str] | None = None,
        sources: list[dict[str, Any]] | None = None,
        download: bool = True,
        encoding: Annotated[str, Codec()] = "utf-8",
        labels: Annotated[list[str | int] | None, Distinct()] = None,
        label_names: list[str | int] | None = None,
        fine_labels: bool = False,
        label_column: int = 0,
        text_columns: list[int] | None = None,
        val_fraction: Fraction = 0.1,
        test_fraction: Fraction = 0.1,
        split_seed: int = 0,
        lowercase: bool = True,
        unicode_form: Literal["NFC", "NFD", "NFKC", "NFKD"] | None = "NFKC",
        unescape: bool = False,
        drop_duplicates: bool = True,
        tokenizer: Literal["basic", "whitespace"] = "basic",
        max_length: Positive = 64,
        min_freq: Positive = 1,
        max_size: Positive | None = None,
        batch_size: Positive = 64,
        shuffle_seed: int = 0,
        num_workers: NonNegative = 0,
        cache_dir: str | None = None,
    ) -> None:
        """Long because every argument is a config key (`conf/data/`), checked and kept as is."""
        super().__init__()
        if format not in (*READERS, "per_class"):
            raise DataError(
                f"unknown data.format '{format}'; use one of {', '.join([*READERS, 'per_class'])}"
            )
        if format == "per_class" and not class_files:
            raise DataError("data.format=per_class needs data.class_files (class -> file)")
        if format != "per_class" and not (files and "train" in files):
            raise DataError(f"data.format={format} needs data.files.train")
        self.data_dir = Path(data_dir)
        self.format = format
        self.files = dict(files or {})
        self.class_files = dict(class_files or {})
        self.sources = {s["path"]: dict(s) for s in (sources or [])}
        self.download = download
        self.encoding = encoding
        # Labels are strings wherever they come from: `data.labels=[0,1]` on a command line
        # gives ints, and the files' labels are text.
        self.labels = [str(label) for label in labels] if labels else None
        self.label_names = [str(name) for name in label_names] if label_names else None
        self.fine_labels = fine_labels
        self.label_column = label_column
        self.text_columns = tuple(text_columns or [1])
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.split_seed = split_seed
        self.drop_duplicates = drop_duplicates
        self.min_freq = min_freq
        self.max_size = max_size
        self.batch_size = batch_size
        self.shuffle_seed = shuffle_seed
        self.num_workers = num_workers
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.cache_hit: bool | None = None  # None: no cache configured
        self._bytes: dict[str, bytes] = {}
        self.preprocessor = TextPreprocessor(
            lowercase=lowercase,
            unicode_form=unicode_form,
            unescape=unescape,
            tokenizer=tokenizer,
            max_length=max_length,
        )
        self.classes: list[str] = []
        self.fingerprint: dict[str, str] = {}
        self.stats: dict[str, int] = {}
        self.datasets: dict[str, EncodedTexts] = {}
        self._restored = False

    # -- files ---------------------------------------------------------------------------

    def _relpaths(self) -> list[str]:
        return (
            list(self.class_files.values())
            if self.format == "per_class"
            else list(self.files.values())
        )

    def prepare_data(self) -> None:
        """Download what is missing (rank 0 only under DDP); files already present are kept."""
        for rel in self._relpaths():
            src = self.sources.get(rel, {}) if self.download else {}
            ensure_file(self.data_dir / rel, src.get("url"), src.get("sha256"), src.get("member"))

    def _load(self, rel: str) -> tuple[Path, bytes]:
        """A data file's bytes, read once: fingerprinted here, parsed by the reader."""
        path = self.data_dir / rel
        if rel in self._bytes:
            return path, self._bytes[rel]
        if path.is_dir():
            raise DataError(f"{path} is a folder, not a data file; point data.files at a file")
        if not path.is_file():
            ensure_file(path)  # raises the one-line missing-file error
        raw = path.read_bytes()
        digest = hashlib.sha256(raw).hexdigest()  # of the file as it is on disk
        raw, normalised = normalise_bytes(path, raw)
        for key, count in normalised.items():
            self.stats[key] = self.stats.get(key, 0) + count
        self._bytes[rel] = raw
        self.fingerprint[rel] = digest
        expected = self.sources.get(rel, {}).get("sha256")
        if expected and expected != digest:
            log.warning(
                "%s differs from the published file (sha256 %s, expected %s)",
                path,
                digest,
                expected,
            )
        return path, raw

    def _read(self, rel: str, label: str | None = None) -> list[Row]:
        path, raw = self._load(rel)
        if label is not None:
            return list(read_lines_as(label)(path, raw, self.encoding))
        reader = READERS[self.format]
        if self.format == "trec":
            return list(reader(path, raw, self.encoding, fine=self.fine_labels))
        if self.format == "csv":
            return list(reader(path, raw, self.encoding, self.label_column, self.text_columns))
        return list(reader(path, raw, self.encoding))

    # -- splits --------------------------------------------------------------------------

    def _clean(self, split: str, rows: list[Row], rel: str) -> list[tuple[str, str]]:
        """Clean text; drop and count empty rows and duplicates; reject unknown labels."""
        out: list[tuple[str, str]] = []
        seen: set[tuple[str, str]] = set()
        empty = duplicates = 0
        for number, label, text in rows:
            cleaned = self.preprocessor.clean(text)
            if not cleaned:
                empty += 1
                continue
            if self.labels is not None and label not in self.labels:
                raise DataError(
                    f"{self.data_dir / rel}:{number}: unknown label {label!r}; "
                    f"data.labels allows {self.labels}"
                )
            if self.drop_duplicates and (label, cleaned) in seen:
                duplicates += 1
                continue
            seen.add((label, cleaned))
            out.append((label, cleaned))
        self.stats[f"{split}_empty_dropped"] = empty
        self.stats[f"{split}_duplicates_dropped"] = duplicates
        if empty or duplicates:
            log.info("%s: dropped %d empty and %d duplicate rows", split, empty, duplicates)
        return out

    def _load_splits(self) -> dict[str, list[tuple[str, str]]]:
        if self.format == "per_class":
            rows: list[Row] = []
            for label, rel in sorted(self.class_files.items()):
                rows += self._read(rel, label=label)
            raw = {"train": rows}
        else:
            raw = {split: self._read(rel) for split, rel in self.files.items()}
        unknown = set(raw) - set(SPLITS)
        if unknown:
            raise DataError(
                f"unknown split(s) {sorted(unknown)} in data.files; use train, val, test"
            )
        rel_of = self.files if self.format != "per_class" else {}
        splits = {s: self._clean(s, rows, rel_of.get(s, "")) for s, rows in raw.items()}
        if "test" not in splits:
            splits["train"], splits["test"] = stratified_cut(
                splits["train"], self.test_fraction, self.split_seed * 1000 + 1
            )
        if "val" not in splits:
            splits["train"], splits["val"] = stratified_cut(
                splits["train"], self.val_fraction, self.split_seed * 1000 + 2
            )
        for split in SPLITS:
            self.stats.setdefault(f"{split}_empty_dropped", 0)  # a split cut from train
            self.stats.setdefault(f"{split}_duplicates_dropped", 0)
            if not splits[split]:
                raise DataError(
                    f"the {split} split is empty after cleaning; check data.files and their lines"
                )
            self.stats[f"{split}_rows"] = len(splits[split])
        return splits

    # -- Lightning hooks -----------------------------------------------------------------

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        try:
            cache = self._cache_path()
            if cache is not None and self._read_cache(cache):
                return
            self._build()
            if cache is not None:
                self._write_cache(cache)
        finally:
            self._bytes = {}
        log.info(
            "data: %s, vocabulary %d",
            {s: len(d) for s, d in self.datasets.items()},
            self.vocab_size,
        )

    def _build(self) -> None:
        """Read, clean, split, build the vocabulary (unless a checkpoint gave one), encode."""
        splits = self._load_splits()
        if not self._restored:
            present = sorted({label for label, _ in splits["train"]})
            self.classes = list(self.labels) if self.labels else present
            self.preprocessor.build_vocab(
                (t for _, t in splits["train"]), self.min_freq, self.max_size
            )
        index = {c: i for i, c in enumerate(self.classes)}
        for split in SPLITS:
            missing = {label for label, _ in splits[split]} - set(index)
            if missing:
                raise DataError(
                    f"labels {sorted(missing)} in the {split} split never occur in train"
                )
            ids = [
                torch.tensor(self.preprocessor.encode(t), dtype=torch.long)
                for _, t in splits[split]
            ]
            self.datasets[split] = EncodedTexts(ids, [index[label] for label, _ in splits[split]])
        self.stats["vocab_size"] = self.vocab_size

    # -- the tensorised-data cache (`labrun.data.text_cache`) ------------------------------

    def _cache_path(self) -> Path | None:
        if self.cache_dir is None:
            return None
        for rel in self._relpaths():  # fingerprints every file: the data is part of the key
            self._load(rel)
        settings: dict[str, Any] = {name: getattr(self, name) for name in text_cache.SETTINGS}
        settings["preprocessor"] = dataclasses.asdict(self.preprocessor)  # with a restored vocab
        settings["classes"] = self.classes if self._restored else None
        settings["fingerprint"] = self.fingerprint
        return text_cache.path_for(self.cache_dir, settings)

    def _read_cache(self, path: Path) -> bool:
        self.cache_hit = False
        saved = text_cache.load(path)
        if saved is None:
            return False
        self.preprocessor.itos = list(saved["itos"])
        self.classes = list(saved["classes"])
        self.stats = dict(saved["stats"])
        self.datasets = {
            split: EncodedTexts(ids, labels) for split, (ids, labels) in saved["splits"].items()
        }
        self.cache_hit = True
        log.info("data: tensorised splits from the cache %s", path)
        return True

    def _write_cache(self, path: Path) -> None:
        splits = {split: (data.ids, data.labels) for split, data in self.datasets.items()}
        text_cache.save(path, self.preprocessor.itos, self.classes, self.stats, splits)

    @property
    def vocab_size(self) -> int:
        return len(self.preprocessor.itos)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def split_files(self) -> dict[str, list[str]]:
        """The file(s) each split was read from: a split cut from train names train's."""
        if self.format == "per_class":
            return {split: sorted(self.class_files.values()) for split in SPLITS}
        return {split: [self.files.get(split, self.files["train"])] for split in SPLITS}

    def model_kwargs(self) -> dict[str, int]:
        """What a model needs to know about this data to be built."""
        return {"vocab_size": self.vocab_size, "num_classes": self.num_classes}

    @property
    def class_names(self) -> list[str]:
        return self.label_names if self.label_names else list(self.classes)

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        data = self.datasets[split]
        sampler = BucketBatchSampler(
            [len(x) for x in data.ids], self.batch_size, seed=self.shuffle_seed, shuffle=shuffle
        )
        return DataLoader(
            data,
            batch_sampler=sampler,
            collate_fn=pad_batch,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def state_dict(self) -> dict[str, Any]:
        """The vocabulary and classes travel inside every checkpoint, so it evaluates alone."""
        return {"itos": list(self.preprocessor.itos), "classes": list(self.classes)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        same = state["itos"] == self.preprocessor.itos and state["classes"] == self.classes
        self.preprocessor.itos = list(state["itos"])
        self.classes = list(state["classes"])
        self._restored = True
        if self.datasets and not same:  # built before the checkpoint was read: rebuild
            self.datasets = {}
            self.setup()
