"""Checkpoint files written straight to disk, whole or not at all."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO


class FileCheckpointIO(TorchCheckpointIO):
    """Saves to `<file>.partial` and renames it into place.

    Lightning's own writer serialises the whole checkpoint into memory and copies it out before
    writing, so a save briefly holds the checkpoint twice over (the text model's is 37 MB with
    its Adam state). Streaming to a partial file keeps peak memory flat; the rename keeps the
    guarantee that a killed save never leaves a cut-short file under the real name. Remote
    paths (`s3://...`) go to Lightning's writer.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None or "://" in str(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f"{target.name}.{os.getpid()}.partial")
        try:
            torch.save(checkpoint, partial)
            os.replace(partial, target)
        finally:
            partial.unlink(missing_ok=True)
