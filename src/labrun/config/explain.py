"""Hydra's and OmegaConf's composition errors as one line that names the key and the fix."""

from __future__ import annotations

from labrun.errors import ConfigError


def explain(exc: BaseException) -> str:
    """Turn a composition error into one line that names the key and the fix."""
    if isinstance(exc, ConfigError):
        return str(exc)
    text = str(exc)
    cause = exc.__cause__ or exc.__context__
    full = text + ("\n" + str(cause) if cause else "")
    key = _field(full, "full_key:")
    if "is not in struct" in full or ("Key '" in full and "not in" in full):
        return (
            f"unknown config key '{key or _quoted(text)}'; check the spelling, or add a new key "
            f"with '+{key or _quoted(text)}=VALUE'"
        )
    if "could not be converted" in full or ("Value '" in full and "of type" in full):
        first = next(
            (
                ln.strip()
                for ln in full.splitlines()
                if "could not be converted" in ln or "Value '" in ln
            ),
            full.splitlines()[0],
        )
        return f"wrong type for '{key}': {first}" if key else first
    if "is not Optional" in full:
        return f"'{key}' cannot be null; give it a value"
    # Anything else (an unknown group option, a parse error) as one line, without Hydra's
    # search-path listing.
    text = full.split("Config search path")[0]
    return " ".join(ln.strip() for ln in text.splitlines() if ln.strip()).removeprefix(
        "In 'train': "
    )


def _field(text: str, marker: str) -> str | None:
    for line in text.splitlines():
        if marker in line:
            return line.split(marker, 1)[1].strip()
    return None


def _quoted(text: str) -> str:
    return text.split("'")[1] if text.count("'") >= 2 else text
