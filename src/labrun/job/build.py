"""Objects from config nodes: `build` for any `_target_`, `build_trainer` for the Trainer with
its callbacks, loggers and checkpoint writer. The train and eval tasks share both."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig

if TYPE_CHECKING:
    import lightning as L


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

    from labrun.job.checks import MonitoredMetrics, monitored
    from labrun.tracking.logger import RunLogger

    callbacks = [build(c) for c in (cfg.callbacks or {}).values() if c is not None]
    callbacks += extra_callbacks or []
    # First, so a metric nobody logs is named before EarlyStopping's own error.
    callbacks.insert(0, MonitoredMetrics(monitored(cfg, callbacks)))
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
        from labrun.resume.checkpoints import FileCheckpointIO

        extra["plugins"] = [FileCheckpointIO()]
    from labrun.resume.requeue import in_slurm_job

    if in_slurm_job() and not cfg.trainer.get("plugins"):
        from lightning.pytorch.plugins.environments import SLURMEnvironment

        # labrun.resume.requeue owns the requeue: Lightning's own would fight it for the job
        extra.setdefault("plugins", []).append(SLURMEnvironment(auto_requeue=False))
    if "enable_progress_bar" not in cfg.trainer:
        # The callbacks group decides: without `callbacks.progress_bar` Lightning would add its
        # own bar, which a sweep or a cluster log does not want and every step pays for.
        from lightning.pytorch.callbacks import ProgressBar

        extra["enable_progress_bar"] = any(isinstance(c, ProgressBar) for c in callbacks)
    return build(cfg.trainer, callbacks=callbacks, logger=loggers or False, **extra)
