"""`labrun rerun RUN_ID`: train a stored run again and say whether it reproduced.

Everything comes from the tracking store (config, overrides, provenance, final metrics), never
from the original output folder, so a rerun works on another machine against a shared store.
Before training, a drift report (`labrun.drift`) says what differs from the recorded
environment; any drift stops the rerun unless `--allow-drift`. After training, every final
metric is compared: REPRODUCED or DIFFERS. Overrides make a variant: linked, no verdict.

Exit codes: 0 reproduced (or a variant ran), 1 differs, 2 bad input, 3 stopped by drift.
"""

from __future__ import annotations

import argparse
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from labrun.errors import ConfigError, LabrunError
from labrun.rerun import drift
from labrun.rerun.at_commit import run_at_commit
from labrun.rerun.fetch import Recorded, fetch
from labrun.rerun.locate import located
from labrun.rerun.overrides import apply_overrides, compose_today, relocate
from labrun.rerun.show import print_drift, print_verdict
from labrun.rerun.verdict import exact_expected, tolerance_text, verdict


class DriftStop(LabrunError):
    """Drift found and not allowed."""

    exit_code = 3


def new_output_dir(run_dir: str) -> str:
    stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S_%f")
    path = Path(run_dir) / "rerun" / stamp
    path.mkdir(parents=True, exist_ok=True)
    return str(path)


def run_here(cfg: DictConfig, task: str, tags: dict[str, str]) -> str:
    """Train (or evaluate) in this process; returns the new run's id."""
    if task == "train":
        from labrun.job.train import train

        return str(train(cfg, tags=tags)["run_id"])
    from labrun.job.eval import evaluate

    return str(evaluate(cfg, tags=tags)["run_id"])


def rerun(args: argparse.Namespace) -> dict[str, Any]:
    """`labrun rerun`'s whole path: fetch, drift report (stop on drift unless allowed), train
    here or at the recorded commit, then the verdict (none for a variant)."""
    from labrun.store.client import client_for

    client = client_for(args.tracking_uri)
    recorded = fetch(client, args.run_id, args.allow_target)
    with located(recorded, getattr(args, "config_dir", None) or []):
        return rerun_located(args, client, recorded)


def rerun_located(args: argparse.Namespace, client: Any, recorded: Recorded) -> dict[str, Any]:
    """The rerun, with the run's project and config folders found (`rerun.locate`)."""
    variant = is_variant(recorded, args.overrides)
    fresh, compose_error = compose_today(recorded, [])
    here = fresh.paths if fresh is not None else _default_paths()
    report = drift_report(recorded, fresh, compose_error, here, args.at_commit)
    print_drift(report, args.run_id)
    if report.items and not args.allow_drift:
        raise DriftStop(
            f"the environment drifted from run {args.run_id} ({', '.join(report.kinds)}); "
            "restore it, or rerun with --allow-drift to run anyway (the drift is recorded)"
        )
    tags = {
        "labrun.variant_of" if variant else "labrun.rerun_of": args.run_id,
        "labrun.drift": ",".join(report.kinds) or "none",
        "labrun.drift_check_s": f"{report.seconds:.3f}",
    }
    if args.at_commit:
        tags["labrun.at_commit"] = ((recorded.provenance or {}).get("git") or {}).get("commit", "")
        new_id = run_at_commit(recorded, here, client.tracking_uri, args.overrides)
        for key, value in tags.items():
            client.set_tag(new_id, key, value)
    else:
        cfg = runnable_config(recorded, report, here, client.tracking_uri, variant, args)
        new_id = run_here(cfg, recorded.task, tags)
    client.log_dict(new_id, report.as_dict(), "rerun/drift.json")
    result: dict[str, Any] = {"run_id": new_id, "drift": report.as_dict(), "variant": variant}
    if variant:
        print(f"variant of {args.run_id}: run {new_id} (no verdict: the config differs)")
        return result
    return {**result, **judge(client, recorded, new_id, args.rtol, args.atol)}


def is_variant(recorded: Recorded, overrides: list[str]) -> bool:
    """Whether `overrides` change the config; those that only give back redacted secrets do
    not. Refuses a rerun that lacks a secret the store never held."""
    from labrun.tracking.secrets import redacted_keys

    secret_keys = redacted_keys(OmegaConf.to_container(recorded.config, resolve=False))
    given = {o.split("=", 1)[0].lstrip("+~") for o in overrides}
    missing = [k for k in secret_keys if k not in given]
    if missing:
        raise ConfigError(
            f"run '{recorded.run_id}' had secret values that were not stored "
            f"({', '.join(missing)}); give them as overrides: labrun rerun {recorded.run_id} "
            + " ".join(f"{k}=..." for k in missing)
        )
    return bool(given - set(secret_keys))


def drift_report(
    recorded: Recorded, fresh: DictConfig | None, error: str, here: DictConfig, at_commit: bool
) -> drift.Report:
    report = drift.check(
        recorded.provenance,
        recorded.git_diff,
        recorded.requirements,
        recorded.fingerprint,
        OmegaConf.to_container(recorded.config, resolve=False),
        OmegaConf.to_container(fresh, resolve=True) if fresh is not None else None,
        error,
        Path(here.root_dir),
        Path(here.data_dir),
        skip_code=at_commit,
    )
    recorded_threads = ((recorded.provenance or {}).get("threads") or {}).get("intra_op")
    configured = recorded.config.get("threads")
    if recorded_threads is not None and recorded_threads != configured:
        report.items.append(
            drift.Drift("hardware", "torch threads", str(recorded_threads), str(configured))
        )
    return report


def runnable_config(
    recorded: Recorded,
    report: drift.Report,
    here: DictConfig,
    uri: str,
    variant: bool,
    args: argparse.Namespace,
) -> DictConfig:
    """The stored config moved to this machine, without keys removed since (an allowed
    config drift: today's code would refuse them), with the overrides on top."""
    cfg = relocate(recorded.config, here, new_output_dir(str(here.run_dir)), uri)
    with open_dict(cfg):
        cfg.tracking.experiment = recorded.experiment
        cfg.tracking.run_name = f"{recorded.name}-{'variant' if variant else 'rerun'}"
        cfg.allowed_targets = list(args.allow_target)
    for d in report.items:
        if d.kind == "config" and d.now == "absent" and d.recorded == "present":
            parent, _, leaf = d.what.rpartition(".")
            node = OmegaConf.select(cfg, parent) if parent else cfg
            if isinstance(node, DictConfig) and leaf in node:
                with open_dict(node):
                    del node[leaf]
    return apply_overrides(cfg, args.overrides, recorded)


def judge(client: Any, recorded: Recorded, new_id: str, rtol: float, atol: float) -> dict:
    """The verdict on the new run, tagged, stored and printed."""
    from labrun.store.artifacts import read_json

    with tempfile.TemporaryDirectory() as tmp:
        after = read_json(client, new_id, "metrics/final.json", Path(tmp)) or {}
    exact = exact_expected(recorded.config)
    outcome, rows = verdict(recorded.final, after, exact, rtol, atol)
    tolerance = tolerance_text(exact, rtol, atol)
    client.set_tag(new_id, "labrun.verdict", outcome)
    client.log_dict(
        new_id,
        {"verdict": outcome, "tolerance": tolerance, "original": recorded.run_id, "metrics": rows},
        "rerun/verdict.json",
    )
    print_verdict(outcome, rows, tolerance, recorded.run_id, new_id)
    return {"verdict": outcome, "rows": rows}


def _default_paths() -> DictConfig:
    from labrun.config.compose import compose_task

    return compose_task([], "rerun-compose").paths


def rerun_run(
    run_id: str,
    overrides: list[str] | tuple[str, ...] = (),
    *,
    at_commit: bool = False,
    allow_drift: bool = False,
    rtol: float = 1e-3,
    atol: float = 1e-6,
    tracking_uri: str | None = None,
    allow_target: list[str] | tuple[str, ...] = (),
    config_dir: list[str] | tuple[str, ...] = (),
) -> dict[str, Any]:
    """`labrun rerun` from Python (`labrun.rerun(run_id)`): the new run id, the drift report,
    and the verdict with its per-metric rows. Drift that stops the rerun raises DriftStop."""
    args = argparse.Namespace(
        run_id=run_id,
        overrides=list(overrides),
        at_commit=at_commit,
        allow_drift=allow_drift,
        rtol=rtol,
        atol=atol,
        tracking_uri=tracking_uri,
        allow_target=list(allow_target),
        config_dir=list(config_dir),
    )
    return rerun(args)
