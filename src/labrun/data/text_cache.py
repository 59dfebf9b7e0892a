"""Tensorised text splits kept on disk, keyed by everything that made them.

The key is the sha256 of the data files, every preprocessing setting and the source of every
module of `labrun.data` (the code that turns files into tensors: an edit to any of them means
another key, so a stale entry is never read). An entry is written whole or not at all, and a
damaged one costs a rebuild, never a wrong result.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import torch

from labrun.files import written_whole

log = logging.getLogger(__name__)
# The datamodule's settings that shape its tensors (the preprocessor's join them).
SETTINGS = (
    "format", "files", "class_files", "encoding", "labels", "fine_labels", "label_column",
    "text_columns", "val_fraction", "test_fraction", "split_seed", "drop_duplicates",
    "min_freq", "max_size",
)  # fmt: skip


@functools.cache
def code_digest() -> dict[str, str]:
    """sha256 of every module of `labrun.data`, by file name."""
    here = Path(__file__).parent
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(here.glob("*.py"))}


def path_for(cache_dir: Path, settings: dict[str, Any]) -> Path:
    key = hashlib.sha256(
        json.dumps({**settings, "code": code_digest()}, sort_keys=True).encode()
    ).hexdigest()
    return cache_dir / f"text-{key[:32]}.pt"


Splits = dict[str, tuple[list[torch.Tensor], torch.Tensor]]  # split -> (token ids, labels)


def load(path: Path) -> dict[str, Any] | None:
    """The entry at `path` (itos, classes, stats, splits), or None when absent or damaged."""
    if not path.is_file():
        return None
    try:
        saved = torch.load(path, weights_only=True)
        saved["splits"] = {
            split: (list(torch.split(part["ids"], part["lengths"].tolist())), part["labels"])
            for split, part in saved["splits"].items()
        }
    except Exception as exc:  # a damaged cache costs a rebuild, never a wrong result
        log.warning("ignoring the unreadable data cache %s (%s)", path, exc)
        return None
    return saved


def save(
    path: Path, itos: list[str], classes: list[str], stats: dict[str, Any], splits: Splits
) -> None:
    saved = {
        "itos": list(itos),
        "classes": list(classes),
        "stats": dict(stats),
        "splits": {
            split: {
                "ids": torch.cat(ids),
                "lengths": torch.tensor([len(x) for x in ids], dtype=torch.long),
                "labels": labels,
            }
            for split, (ids, labels) in splits.items()
        },
    }
    try:
        with written_whole(path) as partial:
            torch.save(saved, partial)
    except OSError as exc:
        log.warning("could not write the data cache %s (%s)", path, exc)
