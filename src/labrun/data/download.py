"""Fetch a data file once, check it against its published sha256, and fingerprint what is read."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import urllib.request
import zipfile
from pathlib import Path

from labrun.errors import DataError

log = logging.getLogger(__name__)


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def ensure_file(
    path: Path,
    url: str | None = None,
    sha256: str | None = None,
    member: str | None = None,
    timeout_s: float = 30.0,
) -> Path:
    """Return `path`, downloading it first when it is missing and a `url` is known.

    The download lands in a temporary file beside the target and is renamed into place only
    after its checksum matches, so a failed or partial download never looks like data.
    `member` names the file to take out of a zip archive at `url`.
    """
    if path.is_file():
        return path
    if not url:
        raise DataError(
            f"missing data file {path}; put it there or point paths.data_dir "
            "(or LABRUN_DATA_DIR) at a folder that has it"
        )
    log.info("downloading %s -> %s", url, path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"missing data file {path}, and cannot create its folder ({exc})") from None
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout_s) as resp:
            shutil.copyfileobj(resp, out)
        if member is not None:
            extracted = tmp.with_suffix(".member")
            with zipfile.ZipFile(tmp) as archive, archive.open(member) as src:
                extracted.write_bytes(src.read())
            tmp.unlink()
            extracted.rename(tmp)
        if sha256 is not None and (got := sha256_file(tmp)) != sha256:
            raise DataError(
                f"checksum mismatch for {url}: expected sha256 {sha256}, got {got}; "
                "the source changed or the download is corrupt"
            )
        tmp.replace(path)
    except DataError:
        raise
    except (OSError, zipfile.BadZipFile, KeyError) as exc:
        raise DataError(
            f"missing data file {path} and the download from {url} failed ({exc}); "
            "put the file there or point paths.data_dir (or LABRUN_DATA_DIR) at a copy"
        ) from None
    finally:
        for leftover in (tmp, tmp.with_suffix(".member")):
            leftover.unlink(missing_ok=True)
    return path
