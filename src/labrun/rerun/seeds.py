"""The seeds a statistical verdict tests the original against: the rerun under the original's
seed, the store's sibling runs (the same config under other seeds, `labrun.seed_group`), and as
many new runs under new seeds as are still missing."""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from labrun.config.locations import SEED_GROUP_TAG
from labrun.rerun.fetch import Recorded

log = logging.getLogger(__name__)
DEFAULT_SEEDS = 5  # when exactness cannot be expected and --seeds is not given
SEED_OF_TAG = "labrun.rerun_seed_of"  # a run trained to test that run under another seed


def final_metrics(client: Any, run_id: str) -> dict[str, float]:
    from labrun.store.artifacts import read_json

    with tempfile.TemporaryDirectory() as tmp:
        return read_json(client, run_id, "metrics/final.json", Path(tmp)) or {}


def siblings(client: Any, recorded: Recorded, exclude: set[str]) -> dict[int, str]:
    """Seed -> run id of FINISHED runs of the original's config under other seeds."""
    if not recorded.seed_group:
        return {}
    experiment = client.get_experiment_by_name(recorded.experiment)
    runs = client.search_runs(
        [experiment.experiment_id],
        f"tags.`{SEED_GROUP_TAG}` = '{recorded.seed_group}' and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"],  # the newest run of each seed
    )
    found: dict[int, str] = {}
    for run in runs:
        seed = run.data.params.get("seed")
        if run.info.run_id in exclude or seed is None or not seed.lstrip("-").isdigit():
            continue
        found.setdefault(int(seed), run.info.run_id)
    return found


def pool(
    client: Any,
    recorded: Recorded,
    rerun_id: str,
    n: int,
    train_seed: Callable[[int], str],
) -> list[dict[str, Any]]:
    """`n` runs of the config, each under its own seed: the rerun first, then siblings, then
    new runs (`train_seed(seed)` trains one and returns its id) under unused seeds."""
    seed = int(recorded.config.seed)
    chosen: dict[int, tuple[str, str]] = {seed: (rerun_id, "rerun")}
    for other, run_id in siblings(client, recorded, {recorded.run_id, rerun_id}).items():
        if len(chosen) < n and other not in chosen:
            chosen[other] = (run_id, "stored")
    candidate = seed + 1
    while len(chosen) < n:
        if candidate not in chosen:
            log.info("training seed %d (%d of %d)", candidate, len(chosen) + 1, n)
            chosen[candidate] = (train_seed(candidate), "new")
        candidate += 1
    return [
        {"seed": s, "run_id": run_id, "source": source, "final": final_metrics(client, run_id)}
        for s, (run_id, source) in chosen.items()
    ]
