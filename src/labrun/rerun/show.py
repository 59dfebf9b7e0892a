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
