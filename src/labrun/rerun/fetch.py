"""What the store holds of a run to rerun it: config, overrides, provenance, final metrics."""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from labrun.errors import LabrunError

log = logging.getLogger(__name__)


@dataclass
class Recorded:
    run_id: str
    name: str
    task: str
    experiment: str
    config: DictConfig
    overrides: list[str]
    provenance: dict[str, Any] | None
    git_diff: str | None
    requirements: list[str] | None
    fingerprint: dict[str, str] | None
    final: dict[str, float]
    code_diffs: dict[str, str] | None = None  # per package in a repository of its own
    numerics: dict[str, Any] | None = None  # `tracking.numerics`, where the run recorded it
    seed_group: str | None = None  # `labrun.seed_group`: its config under other seeds


def trusted(provenance: dict[str, Any] | None) -> list[str]:
    """What the run's own project, where found here through its package, trusts in `_target_`
    (its `[tool.labrun] allowed_targets`): a local file, not the stored config."""
    from labrun.config.search_path import trusted_targets
    from labrun.rerun.locate import package_project, user_packages

    found = []
    for name in user_packages(provenance):
        if (root := package_project(name)) is not None:
            found += trusted_targets(root)
    return found


def fetch(client: Any, run_id: str, allowed: list[str]) -> Recorded:
    from labrun.store import artifacts as stored
    from labrun.store.client import get_run

    run = get_run(client, run_id)
    task = run.data.tags.get("labrun.task", "")
    if task not in ("train", "eval"):
        raise LabrunError(
            f"run '{run_id}' is a {task or 'non-labrun'} run; rerun a train or eval run (a "
            "sweep's trials are runs of their own)"
        )
    with tempfile.TemporaryDirectory() as tmp:
        into = Path(tmp)
        provenance = stored.read_json(client, run_id, "provenance/provenance.json", into)
        config = stored.stored_config(client, run_id, into, [*allowed, *trusted(provenance)])
        overrides = stored.read_json(client, run_id, "config/overrides.json", into) or {}
        requirements = stored.read_text(client, run_id, "provenance/requirements.txt", into)
        final = stored.read_json(client, run_id, "metrics/final.json", into)
        recorded = Recorded(
            run_id=run_id,
            name=run.info.run_name or run_id[:8],
            task=task,
            experiment=client.get_experiment(run.info.experiment_id).name,
            config=config,
            overrides=[str(o) for o in overrides.get("overrides", [])],
            provenance=provenance,
            git_diff=stored.read_text(client, run_id, "provenance/git.diff", into),
            requirements=requirements.split() if requirements is not None else None,
            fingerprint=stored.read_json(client, run_id, "provenance/data_fingerprint.json", into),
            final=final or {},
            numerics=stored.read_json(client, run_id, "provenance/numerics.json", into),
            seed_group=run.data.tags.get("labrun.seed_group"),
        )
        recorded.code_diffs = {
            name: stored.read_text(client, run_id, f"provenance/code/{name}.diff", into) or ""
            for name, state in ((recorded.provenance or {}).get("code") or {}).items()
            if state.get("dirty")
        }
    if not recorded.final and run.info.status == "FINISHED":
        log.warning("run %s stored no metrics/final.json: nothing to compare", run_id)
    return recorded
