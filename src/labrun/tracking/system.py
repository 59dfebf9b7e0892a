"""CPU, memory, disk, network and (where present) GPU use, sampled while a run trains:
MLflow's own system metrics (`system/*`, the run page's "System metrics" tab)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


def every_s(cfg: Any, leader: bool = True) -> float:
    """`tracking.system_metrics_s` of a run's leading process (the other ranks sample nothing)."""
    return float(cfg.tracking.get("system_metrics_s", 0)) if leader else 0.0


@contextmanager
def sampling(run_id: str, uri: str, every_s: float) -> Iterator[None]:
    """Sample every `every_s` seconds inside the block (0: not at all). A resumed run's
    samples go on from its last step."""
    if not every_s or every_s <= 0:
        yield
        return
    from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

    logging.getLogger("mlflow.system_metrics").setLevel(logging.WARNING)  # start/stop lines
    monitor = SystemMetricsMonitor(
        run_id, sampling_interval=every_s, resume_logging=True, tracking_uri=uri
    )
    monitor.start()
    try:
        yield
    finally:
        monitor.finish()
