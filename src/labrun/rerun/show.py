"""The drift report and the verdict, printed for the person."""

from __future__ import annotations

from typing import Any

from labrun.rerun import drift


def print_drift(report: drift.Report, run_id: str) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    checked = ", ".join(report.checked)
    if not report.items:
        console.print(f"drift: none ({checked} checked in {report.seconds:.2f} s)")
        return
    table = Table(title=f"drift since run {run_id} ({report.seconds:.2f} s)")
    table.add_column("kind", no_wrap=True)
    table.add_column("what", overflow="fold", min_width=24)  # names stay whole: tests grep them
    table.add_column("recorded", overflow="fold")
    table.add_column("now", overflow="fold")
    table.add_column("affects", no_wrap=True)  # can it change results?
    for d in report.items:
        table.add_row(d.kind, d.what, d.recorded, d.now, "yes" if d.affects else "no")
    console.print(table)
    if report.stopping:
        console.print("drift of the experiment (code, data, config) stops a rerun unless allowed")
    elif report.machine:
        console.print("drift of the machine that can change results: bit-identity is not expected")


def print_verdict(
    outcome: str,
    rows: list[dict[str, Any]],
    tolerance: str,
    old: str,
    new: str,
    rule: str = "",
    tested: list[dict[str, Any]] | None = None,
    pool: list[dict[str, Any]] | None = None,
) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if tested:
        table = Table(title=f"original against {len(pool or [])} seeds here")
        for col in ("metric", "original", "mean ± std", "95% prediction interval", "p", ""):
            table.add_column(col)
        for r in tested:
            if r.get("inside") is None:
                table.add_row(r["metric"], f"{r['original']:.4g}", f"n={r['n']}", "-", "-", "")
                continue
            mark = ("in" if r["inside"] else "OUT") + (" (decides)" if r["decides"] else "")
            table.add_row(
                r["metric"],
                f"{r['original']:.4f}",
                f"{r['mean']:.4f} ± {r['std']:.4f}",
                f"[{r['low']:.4f}, {r['high']:.4f}]",
                f"{r['p']:.3f}",
                mark,
            )
        console.print(table)
    elif outcome == "DIFFERS":
        table = Table(title="final metrics that differ")
        for col in ("metric", "original", "rerun", "|diff|"):
            table.add_column(col)
        for r in rows:
            if r["match"]:
                continue
            table.add_row(
                r["metric"],
                f"{r['original']!r}",
                "missing" if r["rerun"] is None else f"{r['rerun']!r}",
                "" if r["abs_diff"] is None else f"{r['abs_diff']:.3g}",
            )
        console.print(table)
    style = {"REPRODUCED": "bold green", "CONSISTENT": "bold yellow"}.get(outcome, "bold red")
    if tested:
        inside = sum(bool(r.get("inside")) for r in tested)
        summary = f"{inside}/{len(tested)} final metrics inside their interval"
    else:
        summary = f"{sum(r['match'] for r in rows)}/{len(rows)} final metrics match ({tolerance})"
    console.print(f"[{style}]{outcome}[/]: {summary}; original {old}, rerun {new}")
    if rule:
        console.print(f"rule: {rule}", soft_wrap=True)
