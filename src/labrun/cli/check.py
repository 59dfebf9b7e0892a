"""`labrun check [OVERRIDES]`: the model and data contract (labrun.contracts) checked without
training: one line per piece, exit 1 when a required one is missing."""

from __future__ import annotations

import tempfile

from rich.console import Console


def main(argv: list[str]) -> None:
    from labrun.cli.common import fail
    from labrun.config.compose import compose_task, preflight
    from labrun.job.check import check_contract

    if flags := [a for a in argv if a.startswith("-")]:
        fail(f"labrun check takes overrides only (and --config-dir DIR), not {flags[0]}")
    overrides = argv
    preflight("train", overrides)
    with tempfile.TemporaryDirectory(prefix="labrun-check-") as tmp:
        cfg = compose_task(overrides, tmp)
        found = check_contract(cfg)
    console = Console(highlight=False)
    style = {"ok": "green", "missing": "bold red", "note": "yellow"}
    for status, line in found:
        console.print(f"[{style[status]}]{status:>7}[/] {line}", soft_wrap=True)
    if any(status == "missing" for status, _ in found):
        raise SystemExit(1)
