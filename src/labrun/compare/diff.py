"""Two runs side by side: the params, metrics, provenance and packages that differ."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from labrun.store.query import differing_params

PROVENANCE_TAGS = (
    "labrun.git_commit",
    "labrun.git_dirty",
    "labrun.seed",
    "labrun.threads",
    "labrun.device",
    "labrun.hostname",
    "labrun.version",
    "labrun.data_fingerprint",
)


def pair_diff(client: Any, a: Any, b: Any, metrics: Sequence[str], tmp: Path) -> dict[str, Any]:
    """Config, metric and provenance differences between two runs."""
    params = differing_params([a, b])
    prov = [
        (t, a.data.tags.get(t), b.data.tags.get(t))
        for t in PROVENANCE_TAGS
        if a.data.tags.get(t) != b.data.tags.get(t)
    ]
    packages = []
    try:
        freeze = [
            set(
                Path(
                    client.download_artifacts(
                        r.info.run_id, "provenance/requirements.txt", str(tmp / r.info.run_id)
                    )
                )
                .read_text()
                .split()
            )
            for r in (a, b)
        ]
        packages = sorted(freeze[0] ^ freeze[1])
    except Exception:  # a run recorded without provenance: nothing to diff
        packages = []
    return {
        "params": [(k, a.data.params.get(k), b.data.params.get(k)) for k in params],
        "metrics": [(m, a.data.metrics.get(m), b.data.metrics.get(m)) for m in metrics],
        "provenance": prov,
        "packages": packages,
    }
