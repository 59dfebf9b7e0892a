"""Keep secrets out of the tracking store: a shared store is read by everyone on the team.

Three kinds are redacted from every param, tag and text artifact labrun writes: values under
keys that name a secret (`password`, `api_key`, `token`, ...), values of environment variables
whose names do, and passwords inside URIs (`postgresql://user:pw@host`). A redacted value is
stored as the `REDACTED` marker, so a rerun knows to ask for it instead of using the marker.
"""

from __future__ import annotations

import functools
import itertools
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

REDACTED = "***redacted***"
# Whole name segments (split on `_ . -` and case changes) that make a key a secret.
SECRET_WORDS = {
    "password",
    "passwd",
    "secret",
    "token",
    "apikey",
    "credential",
    "credentials",
    "passphrase",
}
SECRET_PAIRS = {("api", "key"), ("access", "key"), ("private", "key"), ("secret", "key")}
MIN_ENV_SECRET = 6  # shorter environment values would redact ordinary words
_URI_PASSWORD = re.compile(r"(?P<scheme>[a-zA-Z][\w+.-]*://)(?P<user>[^:/@\s]+):[^@/\s]+@")
# `key=value` or `key: value`, not a pin such as `name==1.0`
_ASSIGNMENT = re.compile(r"(?P<key>[\w.+~-]+)(?P<sep>\s*[=:](?![=:])\s*)(?P<value>[^\s,}\]]+)")


def _segments(name: str) -> list[str]:
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name)
    return [s for s in re.split(r"[_.\-\s/]+", spaced.lower()) if s]


@functools.lru_cache(maxsize=4096)
def is_secret_key(name: str) -> bool:
    """Whether a config key or environment variable name names a secret."""
    parts = _segments(str(name))
    if any(p in SECRET_WORDS for p in parts):
        return True
    return any(pair in SECRET_PAIRS for pair in itertools.pairwise(parts))


def environment_secrets(environ: Mapping[str, str] | None = None) -> list[str]:
    """Values of secret-named environment variables, longest first."""
    env = os.environ if environ is None else environ
    values = set()
    for key in list(env):  # another thread (MLflow's telemetry) may change the environment
        value = env.get(key)
        if value and len(value) >= MIN_ENV_SECRET and is_secret_key(key):
            values.add(value)
    return sorted(values, key=len, reverse=True)


def scrub_text(
    text: str,
    environ: Mapping[str, str] | None = None,
    assignments: bool = True,
    secrets: Sequence[str] | None = None,
) -> str:
    """Text with secret environment values, URI passwords and `secret_key=value` redacted.

    Source code (a git diff, `assignments=False`) loses only the environment's secret values:
    rewriting its assignments or example URIs would make the diff apply into broken code.
    `secrets`: the environment's secret values when the caller has read them already.
    """
    for value in environment_secrets(environ) if secrets is None else secrets:
        text = text.replace(value, REDACTED)
    if not assignments:
        return text
    text = _URI_PASSWORD.sub(lambda m: f"{m['scheme']}{m['user']}:{REDACTED}@", text)
    return _ASSIGNMENT.sub(
        lambda m: (
            f"{m['key']}{m['sep']}{REDACTED}"
            if is_secret_key(m["key"].split(".")[-1].lstrip("+~")) and m["value"] != REDACTED
            else m[0]
        ),
        text,
    )


def redact(tree: Any, environ: Mapping[str, str] | None = None) -> Any:
    """A copy of a config tree (dicts, lists, scalars) with every secret redacted."""
    return _redact(tree, environment_secrets(environ))  # the environment read once per tree


def _redact(tree: Any, secrets: list[str]) -> Any:
    if isinstance(tree, Mapping):
        return {
            k: (REDACTED if is_secret_key(str(k)) and v is not None else _redact(v, secrets))
            for k, v in tree.items()
        }
    if isinstance(tree, (list, tuple)):
        return [_redact(v, secrets) for v in tree]
    if isinstance(tree, str):
        return scrub_text(tree, secrets=secrets)
    return tree


def redacted_keys(tree: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose stored value is the redaction marker."""
    found: list[str] = []
    if isinstance(tree, Mapping):
        for k, v in tree.items():
            found += redacted_keys(v, f"{prefix}{k}.")
    elif isinstance(tree, (list, tuple)):
        for i, v in enumerate(tree):
            found += redacted_keys(v, f"{prefix}{i}.")
    elif isinstance(tree, str) and REDACTED in tree:
        found.append(prefix.rstrip("."))
    return found
