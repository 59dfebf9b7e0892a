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
import logging
import math
import os
import subprocess
import sys
import tempfile
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from labrun import drift
from labrun.errors import ConfigError, LabrunError

log = logging.getLogger(__name__)
LOCATION_OVERRIDES = ("paths.", "tracking.uri", "tracking.artifact_root", "hydra.", "+hydra.")


class DriftStop(LabrunError):
    """Drift found and not allowed."""

    exit_code = 3


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="labrun rerun",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("run_id")
    p.add_argument("overrides", nargs="*", help="key=value on top of the stored config: a variant")
    p.add_argument(
        "--at-commit",
        action="store_true",
        help="run the recorded commit plus its recorded diff, in a temporary git worktree",
    )
    p.add_argument("--allow-drift", action="store_true", help="run even if the environment drifted")
    p.add_argument(
        "--allow-target",
        action="append",
        default=[],
        help="a package the stored config may name in _target_ beyond the built-in allowlist",
    )
    p.add_argument("--rtol", type=float, default=1e-3, help="relative tolerance (non-exact runs)")
    p.add_argument("--atol", type=float, default=1e-6, help="absolute tolerance (non-exact runs)")
    p.add_argument("--tracking-uri", help="default: $MLFLOW_TRACKING_URI, else runs/mlflow.db")
    return p.parse_args(argv)


# -- what the store holds --------------------------------------------------------------------


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


def fetch(client: Any, run_id: str, allowed: list[str]) -> Recorded:
    from labrun.tracking import stored

    run = stored.get_run(client, run_id)
    task = run.data.tags.get("labrun.task", "")
    if task not in ("train", "eval"):
        raise LabrunError(
            f"run '{run_id}' is a {task or 'non-labrun'} run; rerun a train or eval run (a "
            "sweep's trials are runs of their own)"
        )
    with tempfile.TemporaryDirectory() as tmp:
        into = Path(tmp)
        config = stored.stored_config(client, run_id, into, allowed)
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
            provenance=stored.read_json(client, run_id, "provenance/provenance.json", into),
            git_diff=stored.read_text(client, run_id, "provenance/git.diff", into),
            requirements=requirements.split() if requirements is not None else None,
            fingerprint=stored.read_json(client, run_id, "provenance/data_fingerprint.json", into),
            final=final or {},
        )
    if not recorded.final and run.info.status == "FINISHED":
        log.warning("run %s stored no metrics/final.json: nothing to compare", run_id)
    return recorded


def task_overrides(recorded: Recorded) -> list[str]:
    """The run's own overrides, without where it ran."""
    return [o for o in recorded.overrides if not o.lstrip("~+").startswith(LOCATION_OVERRIDES)]


def compose_today(recorded: Recorded, extra: list[str]) -> tuple[DictConfig | None, str]:
    """The run's overrides composed with today's configs (None and the error if they fail)."""
    from labrun.compose import compose_task

    try:
        cfg = compose_task([*task_overrides(recorded), *extra], "rerun-compose", recorded.task)
    except LabrunError as exc:
        return None, str(exc)
    return cfg, ""


# -- the config to run -----------------------------------------------------------------------


def relocate(cfg: DictConfig, paths: DictConfig, output_dir: str, uri: str) -> DictConfig:
    """The stored config with the recorded machine's folders replaced by this machine's."""
    old = cfg.paths
    moves = sorted(
        (
            (str(old[k]), str(v))
            for k, v in {**paths, "output_dir": output_dir}.items()
            if old.get(k)
        ),
        key=lambda kv: len(kv[0]),
        reverse=True,
    )

    def move(value: Any) -> Any:
        if isinstance(value, str):
            for before, after in moves:
                if value == before or value.startswith(before.rstrip("/") + "/"):
                    return after + value[len(before) :]
        return value

    tree = _map_leaves(OmegaConf.to_container(cfg, resolve=False), move)
    moved = OmegaConf.create(tree)
    with open_dict(moved):
        moved.paths = {**OmegaConf.to_container(paths), "output_dir": output_dir}
        moved.tracking.uri = uri
        if "data_dir" in moved.get("data", {}):
            moved.data.data_dir = str(paths.data_dir)
    return moved


def _map_leaves(tree: Any, fn: Any) -> Any:
    if isinstance(tree, dict):
        return {k: _map_leaves(v, fn) for k, v in tree.items()}
    if isinstance(tree, list):
        return [_map_leaves(v, fn) for v in tree]
    return fn(tree)


def apply_overrides(cfg: DictConfig, overrides: list[str], recorded: Recorded) -> DictConfig:
    """Hydra overrides on a stored config: `key=value`, `+key=value`, `~key`, and config
    groups (`model/optimizer=sgd`), whose node comes from composing today's group."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from labrun.compose import config_dir

    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except Exception as exc:
        raise ConfigError(f"cannot parse overrides {overrides}: {exc}") from None
    groups = config_dir()
    for override in parsed:
        key = override.key_or_group
        with open_dict(cfg):
            if (groups / key).is_dir():
                fresh, error = compose_today(recorded, [override.input_line])
                if fresh is None:
                    raise ConfigError(error)
                node = key.replace("/", ".")
                OmegaConf.update(cfg, node, OmegaConf.select(fresh, node), merge=False)
            elif override.is_delete():
                parent, _, leaf = key.rpartition(".")
                container = OmegaConf.select(cfg, parent) if parent else cfg
                if container is None or leaf not in container:
                    raise ConfigError(f"cannot delete '{key}': the stored config has no such key")
                del container[leaf]
            else:
                if not override.is_add() and not _has_key(cfg, key):
                    raise ConfigError(
                        f"unknown config key '{key}' in the stored config; check the "
                        f"spelling, or add a new key with '+{key}=VALUE'"
                    )
                OmegaConf.update(cfg, key, override.value(), merge=False, force_add=True)
    return cfg


def _has_key(cfg: DictConfig, key: str) -> bool:
    parent, _, leaf = key.rpartition(".")
    container = OmegaConf.select(cfg, parent) if parent else cfg
    return isinstance(container, DictConfig) and leaf in container


# -- the verdict -----------------------------------------------------------------------------


def exact_expected(cfg: DictConfig) -> bool:
    """Deterministic CPU runs must reproduce bit for bit; others within a tolerance."""
    trainer = cfg.get("trainer") or {}
    return trainer.get("deterministic") is True and trainer.get("accelerator", "cpu") == "cpu"


def verdict(
    before: dict[str, float], after: dict[str, float], exact: bool, rtol: float, atol: float
) -> tuple[str, list[dict[str, Any]]]:
    """REPRODUCED when every recorded final metric matches, else DIFFERS; and the rows."""
    rows = []
    for key in sorted(before):
        a, b = before[key], after.get(key)
        if b is None:
            same = False
        elif exact:
            same = a == b or (math.isnan(a) and math.isnan(b))
        else:
            same = math.isclose(a, b, rel_tol=rtol, abs_tol=atol)
        rows.append(
            {
                "metric": key,
                "original": a,
                "rerun": b,
                "abs_diff": None if b is None else abs(b - a),
                "match": same,
            }
        )
    ok = bool(rows) and all(r["match"] for r in rows)
    return ("REPRODUCED" if ok else "DIFFERS"), rows


def tolerance_text(exact: bool, rtol: float, atol: float) -> str:
    if exact:
        return "exact: bit-identical (deterministic CPU run)"
    return f"|rerun - original| <= {atol:g} + {rtol:g} * |original|"


# -- running ---------------------------------------------------------------------------------


def new_output_dir(run_dir: str) -> str:
    stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S_%f")
    path = Path(run_dir) / "rerun" / stamp
    path.mkdir(parents=True, exist_ok=True)
    return str(path)


def run_here(cfg: DictConfig, task: str, tags: dict[str, str]) -> str:
    """Train (or evaluate) in this process; returns the new run's id."""
    if task == "train":
        from labrun.train import train

        return str(train(cfg, tags=tags)["run_id"])
    from labrun.eval import evaluate

    return str(evaluate(cfg, tags=tags)["run_id"])


def run_at_commit(recorded: Recorded, env_paths: DictConfig, uri: str, extra: list[str]) -> str:
    """Train with the recorded commit and diff, checked out in a temporary git worktree, and
    return the new run's id. The code there composes the run's own overrides."""
    from labrun.compose import project_root

    prov = recorded.provenance or {}
    commit = (prov.get("git") or {}).get("commit")
    if not commit:
        raise LabrunError(f"run '{recorded.run_id}' recorded no git commit; --at-commit needs one")
    repo = project_root()
    with tempfile.TemporaryDirectory(prefix="labrun-rerun-") as tmp:
        tree = Path(tmp) / "tree"
        added = subprocess.run(
            ["git", "-C", str(repo), "worktree", "add", "--detach", str(tree), commit],
            capture_output=True,
            text=True,
        )
        if added.returncode:
            raise LabrunError(
                f"cannot check out commit {commit[:12]} from {repo} "
                f"({added.stderr.strip().splitlines()[-1] if added.stderr.strip() else 'git'}); "
                "fetch it first (git fetch) or run without --at-commit"
            )
        try:
            if prov["git"].get("diff_redacted"):
                raise LabrunError(
                    "the recorded diff had secret values, which were not stored; commit the "
                    "change (without the secret) or rerun without --at-commit"
                )
            if recorded.git_diff:
                patch = Path(tmp) / "recorded.diff"
                patch.write_text(recorded.git_diff)
                applied = subprocess.run(
                    ["git", "-C", str(tree), "apply", "--whitespace=nowarn", str(patch)],
                    capture_output=True,
                    text=True,
                )
                if applied.returncode:
                    raise LabrunError(
                        f"the recorded diff does not apply to {commit[:12]}: "
                        f"{applied.stderr.strip().splitlines()[0]}"
                    )
            name = f"rerun-{uuid.uuid4().hex[:12]}"
            env = {
                **os.environ,
                "PYTHONPATH": os.pathsep.join(
                    [str(tree / "src"), os.environ.get("PYTHONPATH", "")]
                ),
                "LABRUN_ROOT": str(tree),
                "LABRUN_DATA_DIR": str(env_paths.data_dir),
                "LABRUN_RUN_DIR": str(env_paths.run_dir),
                "MLFLOW_TRACKING_URI": uri,
            }
            command = [
                sys.executable,
                "-m",
                "labrun",
                recorded.task,
                *task_overrides(recorded),
                *extra,
                f"tracking.run_name={name}",
            ]
            log.info("at commit %s: %s", commit[:12], " ".join(command[2:]))
            done = subprocess.run(command, cwd=tree, env=env)
            if done.returncode:
                raise LabrunError(
                    f"the run at commit {commit[:12]} failed (exit {done.returncode})"
                )
        finally:
            subprocess.run(
                ["git", "-C", str(repo), "worktree", "remove", "--force", str(tree)],
                capture_output=True,
            )
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(recorded.experiment)
    found = client.search_runs([exp.experiment_id], f"attributes.run_name = '{name}'")
    if not found:
        raise LabrunError(f"the run at commit {commit[:12]} left no run named {name}")
    return found[0].info.run_id


def rerun(args: argparse.Namespace) -> dict[str, Any]:
    from labrun.tracking import stored
    from labrun.tracking.secrets import redacted_keys

    client = stored.client_for(args.tracking_uri)
    uri = client.tracking_uri
    recorded = fetch(client, args.run_id, args.allow_target)
    variant = bool(args.overrides)
    secret_keys = redacted_keys(OmegaConf.to_container(recorded.config, resolve=False))
    given = {o.split("=", 1)[0].lstrip("+~") for o in args.overrides}
    missing = [k for k in secret_keys if k not in given]
    if missing:
        raise ConfigError(
            f"run '{args.run_id}' had secret values that were not stored ({', '.join(missing)}); "
            "give them as overrides: labrun rerun "
            + args.run_id
            + " "
            + " ".join(f"{k}=..." for k in missing)
        )
    variant = variant and bool(given - set(secret_keys))

    fresh, compose_error = compose_today(recorded, [])
    here = fresh.paths if fresh is not None else _default_paths()
    report = drift.check(
        recorded.provenance,
        recorded.git_diff,
        recorded.requirements,
        recorded.fingerprint,
        OmegaConf.to_container(recorded.config, resolve=False),
        OmegaConf.to_container(fresh, resolve=True) if fresh is not None else None,
        compose_error,
        Path(here.root_dir),
        Path(here.data_dir),
        skip_code=args.at_commit,
    )
    recorded_threads = ((recorded.provenance or {}).get("threads") or {}).get("intra_op")
    if recorded_threads is not None and recorded_threads != recorded.config.get("threads"):
        report.items.append(
            drift.Drift(
                "hardware",
                "torch threads",
                str(recorded_threads),
                str(recorded.config.get("threads")),
            )
        )
    print_drift(report, args.run_id)
    if report.items and not args.allow_drift:
        raise DriftStop(
            f"the environment drifted from run {args.run_id} ({', '.join(report.kinds)}); "
            "restore it, or rerun with --allow-drift to run anyway (the drift is recorded)"
        )

    link = "labrun.variant_of" if variant else "labrun.rerun_of"
    tags = {
        link: args.run_id,
        "labrun.drift": ",".join(report.kinds) or "none",
        "labrun.drift_check_s": f"{report.seconds:.3f}",
    }
    if args.at_commit:
        tags["labrun.at_commit"] = ((recorded.provenance or {}).get("git") or {}).get("commit", "")
        new_id = run_at_commit(recorded, here, uri, args.overrides)
        for key, value in tags.items():
            client.set_tag(new_id, key, value)
    else:
        cfg = relocate(recorded.config, here, new_output_dir(str(here.run_dir)), uri)
        with open_dict(cfg):
            cfg.tracking.experiment = recorded.experiment
            cfg.tracking.run_name = f"{recorded.name}-{'variant' if variant else 'rerun'}"
            cfg.allowed_targets = list(args.allow_target)
        for d in report.items:  # keys removed since (allowed drift): today's code rejects them
            if d.kind == "config" and d.now == "absent" and d.recorded == "present":
                parent, _, leaf = d.what.rpartition(".")
                node = OmegaConf.select(cfg, parent) if parent else cfg
                if isinstance(node, DictConfig) and leaf in node:
                    with open_dict(node):
                        del node[leaf]
        cfg = apply_overrides(cfg, args.overrides, recorded)
        new_id = run_here(cfg, recorded.task, tags)
    client.log_dict(new_id, report.as_dict(), "rerun/drift.json")
    result: dict[str, Any] = {"run_id": new_id, "drift": report.as_dict(), "variant": variant}
    if variant:
        print(f"variant of {args.run_id}: run {new_id} (no verdict: the config differs)")
        return result
    with tempfile.TemporaryDirectory() as tmp:
        after = stored.read_json(client, new_id, "metrics/final.json", Path(tmp)) or {}
    exact = exact_expected(recorded.config)
    outcome, rows = verdict(recorded.final, after, exact, args.rtol, args.atol)
    tolerance = tolerance_text(exact, args.rtol, args.atol)
    client.set_tag(new_id, "labrun.verdict", outcome)
    client.log_dict(
        new_id,
        {"verdict": outcome, "tolerance": tolerance, "original": args.run_id, "metrics": rows},
        "rerun/verdict.json",
    )
    print_verdict(outcome, rows, tolerance, args.run_id, new_id)
    result.update(verdict=outcome, rows=rows)
    return result


def _default_paths() -> DictConfig:
    from labrun.compose import compose_task

    return compose_task([], "rerun-compose").paths


# -- for the person ----------------------------------------------------------------------------


def print_drift(report: drift.Report, run_id: str) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    checked = ", ".join(report.checked)
    if not report.items:
        console.print(f"drift: none ({checked} checked in {report.seconds:.2f} s)")
        return
    table = Table(title=f"drift since run {run_id} ({report.seconds:.2f} s)")
    for col in ("kind", "what", "recorded", "now"):
        table.add_column(col, overflow="fold")
    for d in report.items:
        table.add_row(d.kind, d.what, d.recorded, d.now)
    console.print(table)


def print_verdict(
    outcome: str, rows: list[dict[str, Any]], tolerance: str, old: str, new: str
) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    shown = rows if outcome == "DIFFERS" else []
    if shown:
        table = Table(title="final metrics that differ" if outcome == "DIFFERS" else "")
        for col in ("metric", "original", "rerun", "|diff|"):
            table.add_column(col)
        for r in shown:
            if r["match"]:
                continue
            table.add_row(
                r["metric"],
                f"{r['original']!r}",
                "missing" if r["rerun"] is None else f"{r['rerun']!r}",
                "" if r["abs_diff"] is None else f"{r['abs_diff']:.3g}",
            )
        console.print(table)
    style = "bold green" if outcome == "REPRODUCED" else "bold red"
    matched = sum(r["match"] for r in rows)
    console.print(
        f"[{style}]{outcome}[/]: {matched}/{len(rows)} final metrics match ({tolerance}); "
        f"original {old}, rerun {new}"
    )


def run(argv: list[str]) -> None:
    result = rerun(parse(argv))
    if result.get("verdict") == "DIFFERS":
        raise SystemExit(1)
