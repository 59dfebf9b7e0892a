"""`labrun rerun SWEEP_ID [--trials all|best|0,3,5]`: every chosen trial of a sweep trained
again from its recorded config, one verdict each, under a new sweep parent linked to the
original; a summary of the verdicts and whether the best trial is still the best.

An Optuna search is replayed, not searched again: each trial's recorded config (its sampled
parameters in it) is rerun in trial order, and nothing is sampled.
"""

from __future__ import annotations

import argparse
import math
from datetime import datetime
from typing import Any

from labrun.errors import ConfigError, LabrunError
from labrun.rerun.fetch import fetch
from labrun.rerun.locate import located

VERDICTS = ("REPRODUCED", "CONSISTENT", "DIFFERS")


def choose(trials: list[Any], spec: str, best_run: str | None) -> list[Any]:
    """The trials `spec` names: all (the finished ones), best, or trial numbers."""
    finished = [t for t in trials if t.info.status == "FINISHED"]
    if spec == "all":
        return finished
    if spec == "best":
        chosen = [t for t in finished if t.info.run_id == best_run]
        if not chosen:
            raise LabrunError("the sweep has no best trial (none finished); name trials instead")
        return chosen
    try:
        wanted = [int(part) for part in spec.split(",")]
    except ValueError:
        raise ConfigError(
            f"--trials takes all, best or trial numbers like 0,3,5, not '{spec}'"
        ) from None
    by_number = {int(t.data.tags.get("labrun.trial", -1)): t for t in trials}
    missing = [n for n in wanted if n not in by_number]
    if missing:
        raise ConfigError(
            f"the sweep has no trial {', '.join(map(str, missing))}; its trials are "
            f"{', '.join(map(str, sorted(by_number)))}"
        )
    unfinished = [n for n in wanted if by_number[n].info.status != "FINISHED"]
    if unfinished:
        raise ConfigError(
            f"trial {', '.join(map(str, unfinished))} did not finish: there is no result to "
            "reproduce"
        )
    return [by_number[n] for n in wanted]


def rerun_sweep(args: argparse.Namespace, client: Any, parent: Any) -> dict[str, Any]:
    """Each chosen trial through the single-run rerun, as children of a new parent."""
    from labrun.rerun.rerun import rerun_located
    from labrun.sweep.parent import child_tags, open_parent, summarize, sweep_trials

    if args.overrides:
        raise ConfigError("a sweep is rerun as recorded: overrides make variants of one run")
    sweep_id = parent.data.tags["labrun.sweep_id"]
    trials = choose(
        sweep_trials(client, parent, sweep_id),
        args.trials or "all",
        parent.data.tags.get("labrun.best_run"),
    )
    experiment = client.get_experiment(parent.info.experiment_id).name
    new_sweep = f"{sweep_id}-rerun-{datetime.now():%m%d-%H%M%S}"
    new_parent = open_parent(
        client.tracking_uri,
        experiment,
        None,
        new_sweep,
        "rerun",
        f"# rerun of sweep {sweep_id} (parent run {parent.info.run_id})\n",
        {"labrun.rerun_of": parent.info.run_id, "labrun.rerun_of_sweep": sweep_id},
    )
    results = []
    try:
        for trial in trials:
            number = int(trial.data.tags.get("labrun.trial", -1))
            print(f"--- trial {number}: run {trial.info.run_id}")
            recorded = fetch(client, trial.info.run_id, args.allow_target)
            tags = child_tags(new_parent, new_sweep, number)
            one = argparse.Namespace(**{**vars(args), "run_id": trial.info.run_id})
            with located(recorded, getattr(args, "config_dir", None) or []):
                result = rerun_located(one, client, recorded, tags)
            results.append({"trial": number, "original": trial.info.run_id, **result})
    except BaseException:
        client.set_tag(
            new_parent, "labrun.error", "the sweep rerun stopped before its trials ended"
        )
        client.set_terminated(new_parent, "FAILED")
        raise
    metric = str(recorded.config.objective.metric)
    direction = str(recorded.config.objective.direction)
    summarize(client.tracking_uri, new_parent, new_sweep, metric, direction)
    summary = sweep_summary(client, results, trials, metric, direction)
    client.log_dict(new_parent, summary, "rerun/sweep_verdicts.json")
    client.set_tag(new_parent, "labrun.verdicts", summary["line"])
    print_summary(summary, sweep_id, new_parent)
    return {"run_id": new_parent, **summary}


def sweep_summary(
    client: Any, results: list[dict[str, Any]], trials: list[Any], metric: str, direction: str
) -> dict[str, Any]:
    """Verdict counts, and the best trial by the original values against the rerun values."""
    counts = {v: sum(r.get("verdict") == v for r in results) for v in VERDICTS}
    sign = 1 if direction == "maximize" else -1

    def best(values: dict[int, float]) -> int | None:
        scored = {k: v for k, v in values.items() if v is not None and not math.isnan(v)}
        return max(scored, key=lambda k: sign * scored[k]) if scored else None

    before = {r["trial"]: t.data.metrics.get(metric) for r, t in zip(results, trials, strict=True)}
    after = {r["trial"]: client.get_run(r["run_id"]).data.metrics.get(metric) for r in results}
    line = ", ".join(f"{counts[v]} {v.lower()}" for v in VERDICTS)
    return {
        "counts": counts,
        "line": line,
        "metric": metric,
        "best_before": best(before),
        "best_after": best(after),
        "best_still_best": best(before) == best(after),
        "trials": [
            {
                "trial": r["trial"],
                "original": r["original"],
                "rerun": r["run_id"],
                "verdict": r.get("verdict"),
                "before": before[r["trial"]],
                "after": after[r["trial"]],
            }
            for r in results
        ],
    }


def print_summary(summary: dict[str, Any], sweep_id: str, new_parent: str) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    metric = summary["metric"]
    table = Table(title=f"sweep {sweep_id} rerun (parent run {new_parent})")
    for col in ("trial", "verdict", f"{metric} before", f"{metric} rerun"):
        table.add_column(col)
    for t in summary["trials"]:
        table.add_row(str(t["trial"]), str(t["verdict"]), f"{t['before']}", f"{t['after']}")
    console.print(table)
    still = "still the best" if summary["best_still_best"] else "no longer the best"
    console.print(
        f"{summary['line']}; the best trial ({summary['best_before']}) is {still}"
        + ("" if summary["best_still_best"] else f": now trial {summary['best_after']}")
    )
