"""Fetch a missing data file once, checked against its published sha256; present files stay."""

from __future__ import annotations

import logging
import os
import shutil
import socket
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from labrun.errors import DataError
from labrun.files import sha256_file, written_whole

log = logging.getLogger(__name__)
STALL_S = 10.0  # no byte for this long: no network (per read, so a slow link still streams)
OFFLINE_ENV = "LABRUN_OFFLINE"  # set: data files are never fetched from beyond this machine


def check_online(url: str, path: Path) -> None:
    """With `$LABRUN_OFFLINE` set, a download from anywhere but this machine is refused in one
    line, at once: a cluster node without network, or a test, must not hang on a fetch."""
    host = urllib.parse.urlsplit(url).hostname or ""
    if os.environ.get(OFFLINE_ENV) and host not in ("127.0.0.1", "localhost", "::1"):
        raise DataError(
            f"missing data file {path}; {OFFLINE_ENV} is set, so it is not downloaded from {url}: "
            "put it there or point paths.data_dir (or LABRUN_DATA_DIR) at a folder that has it"
        )


@contextmanager
def stall_timeout(seconds: float = STALL_S) -> Iterator[None]:
    """Sockets opened inside give up after `seconds` of silence (torchvision's downloads set no
    timeout of their own: a black-holed network would hang each mirror for minutes)."""
    before = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(before)


def ensure_file(
    path: Path,
    url: str | None = None,
    sha256: str | None = None,
    member: str | None = None,
    timeout_s: float = STALL_S,
) -> Path:
    """Return `path`, downloading it first when it is missing and a `url` is known.

    The download lands in a temporary file beside the target and is renamed into place only
    after its checksum matches, so a failed or partial download never looks like data.
    `member` names the file to take out of a zip archive at `url`.
    """
    if path.is_dir():
        raise DataError(f"{path} is a folder, not a data file; point data.files at a file")
    if path.is_file():
        return path
    if not url:
        raise DataError(
            f"missing data file {path}; put it there or point paths.data_dir "
            "(or LABRUN_DATA_DIR) at a folder that has it"
        )
    check_online(url, path)
    log.info("downloading %s -> %s", url, path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"missing data file {path}, and cannot create its folder ({exc})") from None
    try:
        with written_whole(path) as partial:
            with open(partial, "wb") as out, urllib.request.urlopen(url, timeout=timeout_s) as resp:
                shutil.copyfileobj(resp, out)
            if member is not None:
                with zipfile.ZipFile(partial) as archive, archive.open(member) as src:
                    extracted = src.read()
                partial.write_bytes(extracted)
            if sha256 is not None and (got := sha256_file(partial)) != sha256:
                raise DataError(
                    f"checksum mismatch for {url}: expected sha256 {sha256}, got {got}; "
                    "the source changed or the download is corrupt"
                )
    except DataError:
        raise
    except (OSError, zipfile.BadZipFile, KeyError) as exc:
        raise DataError(
            f"missing data file {path} and the download from {url} failed ({exc}); "
            "put the file there or point paths.data_dir (or LABRUN_DATA_DIR) at a copy"
        ) from None
    return path
