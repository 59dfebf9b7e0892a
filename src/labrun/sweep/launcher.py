"""SLURM submission for sweeps: the executor built from `conf/hydra/launcher/slurm.yaml` and
the code frozen at submission. The launcher itself is a Hydra plugin
(`hydra_plugins.labrun_slurm`: Hydra takes launchers from that package only)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
from omegaconf import DictConfig, OmegaConf

LAUNCHER = "hydra_plugins.labrun_slurm.LabrunSlurmLauncher"  # conf/hydra/launcher/slurm.yaml


def slurm_executor(params: dict[str, Any], setup: list[str]) -> Any:
    """A submitit SLURM executor from the launcher's config (`conf/hydra/launcher/slurm.yaml`),
    `setup` lines run first in every job."""
    import submitit

    params = {k: v for k, v in params.items() if k != "_target_"}
    init = {"folder": params.pop("submitit_folder")}
    if "max_num_timeout" in params:
        init["slurm_max_num_timeout"] = params.pop("max_num_timeout")
    executor = submitit.AutoExecutor(cluster="slurm", **init)
    params["setup"] = [*(params.get("setup") or []), *setup]
    base = set(OmegaConf.structured(BaseQueueConf).keys())
    executor.update_parameters(**{k if k in base else f"slurm_{k}": v for k, v in params.items()})
    return executor


def freeze_code(sweep_dir: Path, configs: list[DictConfig]) -> list[str]:
    """The sweep's code copied into its folder (`labrun.sweep.snapshot`), recorded on its
    parent; the job setup lines that make the jobs import it."""
    import shlex

    from mlflow.tracking import MlflowClient

    from labrun.sweep.parent import read_parent_file
    from labrun.sweep.snapshot import take
    from labrun.tracking.code import SNAPSHOT_ENV

    frozen = take(sweep_dir, configs)
    if info := read_parent_file(sweep_dir):
        client = MlflowClient(info["uri"])
        client.log_dict(info["run_id"], frozen, "snapshot/code.json")
        client.set_tag(info["run_id"], "labrun.snapshot", str(sweep_dir / "code"))
    if not frozen["pythonpath"]:
        return []
    path = shlex.quote(":".join(frozen["pythonpath"]))
    return [
        f"export PYTHONPATH={path}${{PYTHONPATH:+:$PYTHONPATH}}",
        f"export {SNAPSHOT_ENV}={shlex.quote(str(sweep_dir / 'code'))}",
    ]
