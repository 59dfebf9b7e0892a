"""Files written whole or not at all, their hashes, and the plotting backend: one copy each."""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def written_whole(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a partial file beside `path`; rename it into place only when the block succeeds.

    A killed or failed write leaves the old file (or none) and no partial under the real name,
    so a cut-short checkpoint, cache entry or download never looks whole. The partial's name
    carries the process id: two processes writing one target never share a partial.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f"{target.name}.{os.getpid()}.partial")
    try:
        yield partial
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def pyplot() -> Any:
    """matplotlib's pyplot on the file-only Agg backend: plots are written, never shown (a
    cluster node or a CI machine has no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
