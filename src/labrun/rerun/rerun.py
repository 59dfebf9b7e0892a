"""`labrun rerun RUN_ID`: train a stored run again and say whether it reproduced.

Everything comes from the tracking store (config, overrides, provenance, final metrics), never
from the original output folder, so a rerun works on another machine against a shared store.
Before training, a drift report (`rerun.drift`) says what differs from the recorded
environment. Drift of the experiment (code, data, config) stops the rerun unless
`--allow-drift`; drift of the machine (packages, hardware, numerics) only means bit-identity
cannot be expected. The rerun trains under the original's seed, then:

  REPRODUCED  every final metric bit-identical (deterministic CPU runs) or within --rtol/--atol
  CONSISTENT  not identical, but the original's objective lies in the 95% prediction interval
              of this config's runs here under N seeds (--seeds N; 5 by default when the
              machine drifted; sibling runs of the config in the store count among them)
  DIFFERS     outside that; or not identical where exactness was expected and no --seeds

Every verdict but REPRODUCED (and --explain) compares the runs' trajectory fingerprints and
says at which step they first part and what can explain it. Overrides make a variant: linked,
no verdict.

Exit codes: 0 reproduced or consistent (or a variant ran), 1 differs, 2 bad input, 3 stopped
by drift.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from labrun.errors import ConfigError, LabrunError
from labrun.rerun import drift, explain, seeds
from labrun.rerun import recorded_env as recorded_packages
from labrun.rerun.at_commit import run_at_commit
from labrun.rerun.fetch import Recorded, fetch
from labrun.rerun.locate import located
from labrun.rerun.overrides import apply_overrides, compose_today, relocate
from labrun.rerun.show import print_drift, print_verdict
from labrun.rerun.verdict import (
    PREDICTION_NOTE,
    exact_expected,
    statistical,
    tolerance_text,
    verdict,
)
from labrun.store.artifacts import read_json
from labrun.tracking.numerics import ARTIFACT as NUMERICS_ARTIFACT


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


def rerun(args: argparse.Namespace, client: Any = None) -> dict[str, Any]:
    """`labrun rerun`'s whole path: fetch, drift report (stop on drift unless allowed), train
    here or at the recorded commit, then the verdict (none for a variant). `client`: one
    already checked to answer (else one is made for `args.tracking_uri`)."""
    from labrun.store.client import client_for

    client = client or client_for(args.tracking_uri)
    if getattr(args, "trials", None):  # a sweep's are rerun by `sweep.rerun` (see cli/rerun.py)
        raise ConfigError(f"--trials is for a sweep, and '{args.run_id}' is not a sweep's run")
    recorded = fetch(client, args.run_id, args.allow_target)
    if getattr(args, "recorded_env", False):
        return recorded_packages.rerun_inside(args, client, recorded.requirements)
    with located(recorded, getattr(args, "config_dir", None) or []):
        return rerun_located(args, client, recorded)


def rerun_located(
    args: argparse.Namespace,
    client: Any,
    recorded: Recorded,
    extra_tags: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The rerun, with the run's project and config folders found (`rerun.locate`);
    `extra_tags` mark the new run (a trial of a sweep's rerun)."""
    variant = is_variant(recorded, args.overrides)
    fresh, compose_error = compose_today(recorded, [])
    here = fresh.paths if fresh is not None else _default_paths()
    report = drift_report(recorded, fresh, compose_error, here, args.at_commit)
    print_drift(report, args.run_id)
    if report.stopping and not args.allow_drift:
        kinds = [k for k in drift.EXPERIMENT_KINDS if any(d.kind == k for d in report.stopping)]
        raise DriftStop(
            f"the experiment drifted from run {args.run_id} ({', '.join(kinds)}); "
            "restore it, or rerun with --allow-drift to run anyway (the drift is recorded)"
        )
    tags = {
        "labrun.variant_of" if variant else "labrun.rerun_of": args.run_id,
        "labrun.drift": ",".join(report.kinds) or "none",
        "labrun.drift_check_s": f"{report.seconds:.3f}",
        **(extra_tags or {}),
    }
    if key := os.environ.get(recorded_packages.INSIDE_ENV):
        tags[recorded_packages.ENV_TAG] = key
    if args.at_commit:
        tags["labrun.at_commit"] = ((recorded.provenance or {}).get("git") or {}).get("commit", "")

    def train_one(extra: list[str], run_tags: dict[str, str]) -> str:
        """One run of the recorded config (plus `extra` overrides) here or at its commit."""
        overrides = [*args.overrides, *extra]
        if args.at_commit:
            run_id = run_at_commit(recorded, here, client.tracking_uri, overrides)
            for key, value in run_tags.items():
                client.set_tag(run_id, key, value)
            return run_id
        given = argparse.Namespace(**{**vars(args), "overrides": overrides})
        cfg = runnable_config(recorded, report, here, client.tracking_uri, variant, given)
        return run_here(cfg, recorded.task, run_tags)

    new_id = train_one([], tags)
    report.items += precision_drift(client, recorded, new_id)
    client.log_dict(new_id, report.as_dict(), "rerun/drift.json")
    result: dict[str, Any] = {"run_id": new_id, "drift": report.as_dict(), "variant": variant}
    if variant:
        print(f"variant of {args.run_id}: run {new_id} (no verdict: the config differs)")
        if args.explain:
            result["explain"] = explain_runs(
                client, recorded.run_id, new_id, report, args.overrides
            )
        return result

    def train_seed(seed: int) -> str:
        return train_one([f"seed={seed}"], {seeds.SEED_OF_TAG: args.run_id})

    return {**result, **judge(client, recorded, new_id, report, args, train_seed)}


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
        recorded_numerics=recorded.numerics,
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


def precision_drift(client: Any, recorded: Recorded, new_id: str) -> list[drift.Drift]:
    """The precision switches of the original against the rerun's, both read after their
    Trainer was built (`drift.numerics`)."""
    if recorded.numerics is None:
        return []
    with tempfile.TemporaryDirectory() as tmp:
        now = read_json(client, new_id, NUMERICS_ARTIFACT, Path(tmp))
    if now is None:
        return []
    return [d for d in drift.numerics(recorded.numerics, now) if d.what.startswith(drift.PRECISION)]


def judge(
    client: Any,
    recorded: Recorded,
    new_id: str,
    report: drift.Report,
    args: argparse.Namespace,
    train_seed: Any,
) -> dict[str, Any]:
    """The verdict on the new run, with its rule and evidence: tagged, stored and printed."""
    after = seeds.final_metrics(client, new_id)
    exact = exact_expected(recorded.config) and not report.machine
    outcome, rows = verdict(recorded.final, after, exact, args.rtol, args.atol)
    tolerance = tolerance_text(exact, args.rtol, args.atol)
    n = args.seeds if args.seeds is not None else (0 if exact else seeds.DEFAULT_SEEDS)
    why_not = report.why_not_exact()
    if exact:
        rule = "exact: deterministic CPU run, no drift of the machine that can change results"
    elif why_not:
        rule = f"not exact: {why_not}"
    else:
        rule = f"not exact (not a deterministic CPU run): {tolerance}"
    tested: list[dict[str, Any]] = []
    pool_runs: list[dict[str, Any]] = []
    if n >= 2 and (outcome != "REPRODUCED" or args.seeds is not None):
        pool_runs = seeds.pool(client, recorded, new_id, n, train_seed)
        decides = str(recorded.config.get("objective", {}).get("metric", ""))
        stat, tested = statistical(recorded.final, [p["final"] for p in pool_runs], decides)
        rule += f"; statistical over {len(pool_runs)} seeds ({PREDICTION_NOTE})"
        if outcome != "REPRODUCED":
            outcome = stat
    elif outcome != "REPRODUCED" and exact:
        rule += "; the final metrics differ where exactness was expected (--seeds N tests "
        rule += "whether the result holds)"
    divergence = None
    if outcome != "REPRODUCED" or args.explain:
        divergence = explain_runs(client, recorded.run_id, new_id, report)
    client.set_tag(new_id, "labrun.verdict", outcome)
    client.set_tag(new_id, "labrun.verdict_rule", rule[:5000])
    record = {
        "verdict": outcome,
        "rule": rule,
        "tolerance": tolerance,
        "original": recorded.run_id,
        "metrics": rows,
        "seeds": [{k: p[k] for k in ("seed", "run_id", "source")} for p in pool_runs],
        "tested": tested,
        "explain": divergence,
    }
    client.log_dict(new_id, record, "rerun/verdict.json")
    print_verdict(outcome, rows, tolerance, recorded.run_id, new_id, rule, tested, pool_runs)
    return {"verdict": outcome, "rows": rows, "rule": rule, "tested": tested, "explain": divergence}


def explain_runs(
    client: Any,
    original: str,
    new_id: str,
    report: drift.Report | None,
    overrides: list[str] | tuple[str, ...] = (),
) -> dict[str, Any]:
    """The first step where the two runs' fingerprints part, printed and returned."""
    from labrun.tracking.trajectory import ARTIFACT

    with tempfile.TemporaryDirectory() as tmp:
        a = read_json(client, original, ARTIFACT, Path(tmp) / "a")
        b = read_json(client, new_id, ARTIFACT, Path(tmp) / "b")
    if a is None or b is None:
        missing = original if a is None else new_id
        line = f"trajectories: run {missing} has no fingerprint ({ARTIFACT}); nothing to compare"
        print(line)
        return {"divergence": None, "suspects": [], "text": line}
    found = explain.explanation(explain.first_divergence(a, b), report, list(overrides))
    found["text"] = explain.text(found["divergence"], found["suspects"])
    print(found["text"])
    return found


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
    seeds: int | None = None,
    explain: bool = False,
    trials: str | None = None,
    recorded_env: bool = False,
) -> dict[str, Any]:
    """`labrun rerun` from Python (`labrun.rerun(run_id)`): the new run id, the drift report,
    and the verdict with its per-metric rows (for a sweep's id: the new parent and the verdict
    counts). Drift that stops the rerun raises DriftStop."""
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
        seeds=seeds,
        explain=explain,
        trials=trials,
        recorded_env=recorded_env,
    )
    return rerun(args)
