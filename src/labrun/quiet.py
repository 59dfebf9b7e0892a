"""What a labrun command prints is what concerns its user: dependencies' advertising tips,
their deprecation notes about their own internals and MLflow's database set-up lines are left
out; every warning about the user's run (too few batches to log, a file that differs from the
published one, ...) stays. Lightning's messages go through the task's logging (its console
and its log file) once, instead of through a second handler of Lightning's own."""

from __future__ import annotations

import logging
import sys
import warnings

# Lightning's info lines that say nothing about this run
DROPPED_LINES = ("💡 Tip:", "GPU available: False", "TPU available:", "HPU available:")
# loggers whose INFO lines are set-up chatter: the embedded store creating its tables
QUIET_LOGGERS = ("mlflow.store.db.utils", "alembic.runtime.migration", "alembic")
# loggers that print through a stderr handler of their own beside the task's logging
OWN_HANDLERS = (
    "lightning",
    "lightning.pytorch",
    "lightning.fabric",
    "pytorch_lightning",  # the same package under its old name, when something imports that
    "lightning_fabric",
    "torchmetrics",
)
RANK_ZERO = tuple(
    f"{package}.utilities.rank_zero"
    for package in (
        "lightning.pytorch",
        "lightning.fabric",
        "pytorch_lightning",
        "lightning_fabric",
    )
)
DEPENDENCIES = r"(lightning|torch|torchmetrics|torchvision|mlflow|hydra|omegaconf|optuna)(\.|$)"
WARNINGS_DROPPED = (
    # labrun runs its own SLURM jobs (srun is how they start, not how Lightning is told)
    r".*The `srun` command is available on your system but is not used.*",
    # torchmetrics' KID keeps its features in memory: labrun bounds them (model.n_eval)
    r".*Kernel Inception Distance. will save all extracted features in buffer.*",
    # joblib's idle workers timing out between jobs; a job that really dies fails its trial
    r".*A worker stopped while some jobs were given to the executor.*",
)


class DropLines(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(DROPPED_LINES)


def quiet() -> None:
    """Apply the rules above; idempotent, and it imports nothing heavy."""
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    for category in (DeprecationWarning, FutureWarning, PendingDeprecationWarning):
        warnings.filterwarnings("ignore", category=category, module=DEPENDENCIES)
    for message in WARNINGS_DROPPED:
        warnings.filterwarnings("ignore", message=message)
    if "lightning.pytorch" in sys.modules:
        from lightning.fabric.utilities.rank_zero import LightningDeprecationWarning

        warnings.filterwarnings("ignore", category=LightningDeprecationWarning)
    for name in OWN_HANDLERS:
        logger = logging.getLogger(name)
        if name in sys.modules:  # the stderr handler they add at import: a second copy
            logger.handlers.clear()
            logger.propagate = True
    for name in RANK_ZERO:
        logger = logging.getLogger(name)
        if not any(isinstance(f, DropLines) for f in logger.filters):
            logger.addFilter(DropLines())
