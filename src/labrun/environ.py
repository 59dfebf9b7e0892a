"""Environment variables set for a while and put back: the config path for `--config-dir`, the
project root for a rerun, the DDP variables a finished job leaves behind."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator

# The environment as the process began, before Lightning and others set variables of their
# own: what the user gave the run (`tracking.numerics` records its numeric part).
AT_START = dict(os.environ)


@contextlib.contextmanager
def restored(names: Iterable[str]) -> Iterator[None]:
    """`names` as they are now, put back (or unset) at the end, whatever happens meanwhile."""
    saved = {name: os.environ.get(name) for name in names}
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextlib.contextmanager
def environ(values: dict[str, str]) -> Iterator[None]:
    """`values` in the environment for the duration."""
    with restored(values):
        os.environ.update(values)
        yield
