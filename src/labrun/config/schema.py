"""The root of every task config as a structured config: unknown top-level keys and wrong
types fail while Hydra composes, naming the key.

Nodes below the root that have a `_target_` are checked against the signature of the class they
build (`labrun.config.targets`): a config group mirrors a class, so the class's constructor *is*
the schema and there is no second copy to drift.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional  # noqa: UP035 - OmegaConf needs typing generics

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf


@dataclass
class PathsConfig:
    root_dir: str = MISSING
    data_dir: str = MISSING
    run_dir: str = MISSING
    output_dir: str = MISSING


@dataclass
class TrackingConfig:
    uri: str = MISSING
    artifact_root: Optional[str] = None  # noqa: UP045
    experiment: str = MISSING
    run_name: Optional[str] = None  # noqa: UP045
    tags: Dict[str, str] = field(default_factory=dict)  # noqa: UP006
    log_model: bool = True
    connect_timeout_s: float = 10.0
    fingerprint_every: int = 50  # parameter checksum every N training steps (0: at start only)
    system_metrics_s: float = 10.0  # CPU/memory/GPU sampled every N s while training (0: off)
    register_as: Optional[str] = None  # noqa: UP045 - registered model for the run (a sweep: its best)


@dataclass
class ObjectiveConfig:
    metric: str = "val/acc"
    direction: str = "maximize"


@dataclass
class TaskConfig:
    """Keys every task shares."""

    task_name: str = MISSING
    seed: int = 42
    threads: int = 1
    paths: PathsConfig = field(default_factory=PathsConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    tags: List[str] = field(default_factory=list)  # noqa: UP006
    allowed_targets: List[str] = field(default_factory=list)  # noqa: UP006
    data: Any = None
    model: Any = None
    trainer: Any = None
    callbacks: Any = None
    logger: Any = None
    # What the recipe optimises: sweeps rank by it, the callbacks and a plateau scheduler
    # watch it. Eval has it too: the model configs name it.
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)


@dataclass
class TrainConfig(TaskConfig):
    test: bool = True
    ckpt_path: Optional[str] = None  # noqa: UP045
    hparams_search: Any = None


@dataclass
class EvalConfig(TaskConfig):
    run_id: Optional[str] = None  # noqa: UP045
    ckpt_path: Optional[str] = None  # noqa: UP045


def register_schemas() -> None:
    cs = ConfigStore.instance()
    cs.store(name="train_schema", node=TrainConfig)
    cs.store(name="eval_schema", node=EvalConfig)


_STORED: dict[Path, int] = {}  # recipe file -> the mtime it was stored at


def register_recipes(folder: Path) -> None:
    """Every `<folder>/*.yaml` as an option of the `experiment` group (`experiment=NAME`).

    Recipes live in the project's `experiments/`, apart from the building blocks in `conf/`,
    and are read as data: each is a small diff over the defaults, merged at the root (its
    `# @package _global_` header) with its own defaults list (`override /data: trec`).
    Called on every compose: a file is parsed again only when it changed (parsing all eight
    took 53 ms per compose here), so an edited recipe is still seen in a long process.
    """
    cs = ConfigStore.instance()
    for path in sorted(folder.glob("*.yaml")):
        mtime = path.stat().st_mtime_ns
        if _STORED.get(path) == mtime:
            continue
        node = OmegaConf.load(path)
        cs.store(group="experiment", name=path.stem, node=node, package="_global_")
        _STORED[path] = mtime
