"""Config keys that say where a run ran, not what ran: never a difference between two runs,
never carried from one machine to another by a rerun."""

from __future__ import annotations

LOCATION_KEYS = (
    "paths.",
    "hydra.",
    "tracking.uri",
    "tracking.artifact_root",
    "tracking.run_name",
    "trainer.default_root_dir",
)


def is_location(key: str) -> bool:
    """`key` (a dotted config key, or an override's, with any `+`/`~`/`++` prefix)."""
    key = key.lstrip("+~")
    return key.startswith(LOCATION_KEYS) or key.endswith(".dirpath")
