"""Where the configs live and the resolvers they use; the first step of the loop."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, OmegaConf

if TYPE_CHECKING:
    import lightning as L

PACKAGE_DIR = Path(__file__).resolve().parent
ROOT_MARKERS = ("pyproject.toml", ".git")


def config_dir() -> Path:
    """The config folder: the one shipped in the wheel, else the source checkout's `conf/`."""
    packaged = PACKAGE_DIR / "conf"
    if packaged.is_dir():
        return packaged
    return PACKAGE_DIR.parent.parent / "conf"


def project_root(start: str | os.PathLike[str] | None = None) -> Path:
    """`$LABRUN_ROOT`, else the nearest folder above `start` (the cwd) holding a project marker.

    A user running from a sub-folder of their project gets the project's run folder, and one
    running outside any project gets the current directory.
    """
    if env := os.environ.get("LABRUN_ROOT"):
        return Path(env).resolve()
    here = Path(start or os.getcwd()).resolve()
    for folder in (here, *here.parents):
        if any((folder / marker).exists() for marker in ROOT_MARKERS):
            return folder
    return here


def register_resolvers() -> None:
    """Resolvers used by the configs; safe to call more than once."""
    if not OmegaConf.has_resolver("labrun.root"):
        OmegaConf.register_new_resolver("labrun.root", lambda: str(project_root()))
    if not OmegaConf.has_resolver("labrun.abspath"):
        OmegaConf.register_new_resolver("labrun.abspath", lambda p: str(Path(p).resolve()))


def compose_task(overrides: list[str], output_dir: str, config_name: str = "train") -> DictConfig:
    """A task's config composed outside `@hydra.main` (sweep trials, tests), fully resolved.

    `output_dir` stands in for the run folder Hydra would have made; Hydra's own node is
    dropped once the `${hydra:...}` values it feeds are resolved.
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    from labrun import schema
    from labrun.errors import ConfigError

    register_resolvers()
    schema.register_schemas()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
            cfg = compose(
                config_name=config_name,
                overrides=[f"paths.output_dir={output_dir}", *overrides],
                return_hydra_config=True,
            )
    except Exception as exc:  # Hydra's and OmegaConf's errors, as one line naming the key
        raise ConfigError(schema.explain(exc)) from None
    finally:
        GlobalHydra.instance().clear()
    HydraConfig.instance().set_config(cfg)
    OmegaConf.set_readonly(cfg.hydra, False)
    with open_dict(cfg):
        cfg.tracking.experiment = cfg.hydra.runtime.choices.experiment
    OmegaConf.resolve(cfg)
    with open_dict(cfg):
        del cfg.hydra
    return cfg


def build(node: Any, **kwargs: Any) -> Any:
    """`hydra.utils.instantiate`, but a LabrunError raised by a constructor stays itself
    (one line for the user) instead of becoming Hydra's InstantiationException."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    from labrun.errors import LabrunError

    try:
        return instantiate(node, **kwargs)
    except InstantiationException as exc:
        cause = exc.__cause__
        while cause is not None and not isinstance(cause, LabrunError):
            cause = cause.__cause__
        if cause is not None:
            raise cause from None
        raise


def build_trainer(
    cfg: DictConfig,
    run_id: str | None,
    extra_callbacks: list | None = None,
    logged_through: dict[str, int] | None = None,
) -> L.Trainer:
    """Callbacks and loggers from their groups; the MLflow logger writes into run `run_id`
    (skipping steps up to `logged_through`, for a resumed run)."""
    from hydra.utils import get_class

    from labrun.tracking.logger import RunLogger

    callbacks = [build(c) for c in (cfg.callbacks or {}).values() if c is not None]
    callbacks += extra_callbacks or []
    loggers = []
    for conf in (cfg.logger or {}).values():
        if conf is None:
            continue
        if issubclass(get_class(conf._target_), RunLogger):  # writes into labrun's run
            loggers.append(build(conf, run_id=run_id, logged_through=logged_through))
        else:
            loggers.append(build(conf))
    extra: dict[str, Any] = {}
    strategy = str(cfg.trainer.get("strategy", ""))
    if "fsdp" not in strategy and not cfg.trainer.get("plugins"):  # FSDP shards write their own
        from labrun.checkpoint_io import FileCheckpointIO

        extra["plugins"] = [FileCheckpointIO()]
    if "enable_progress_bar" not in cfg.trainer:
        # The callbacks group decides: without `callbacks.progress_bar` Lightning would add its
        # own bar, which a sweep or a cluster log does not want and every step pays for.
        from lightning.pytorch.callbacks import ProgressBar

        extra["enable_progress_bar"] = any(isinstance(c, ProgressBar) for c in callbacks)
    return build(cfg.trainer, callbacks=callbacks, logger=loggers or False, **extra)
