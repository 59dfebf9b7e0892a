"""`labrun rerun RUN_ID [OVERRIDES]`: train a stored run again; a drift report, then
REPRODUCED, CONSISTENT or DIFFERS (exit 0, 0 or 1; 3 when drift stops it)."""

from __future__ import annotations

import argparse

from labrun.cli.common import Parser, add_config_dir_option, add_store_options
from labrun.rerun.rerun import __doc__ as rerun_doc
from labrun.rerun.rerun import rerun


def parse(argv: list[str]) -> argparse.Namespace:
    p = Parser(
        prog="labrun rerun",
        description=rerun_doc,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("run_id", help="a run's id, or a sweep's (its parent run id or sweep id)")
    p.add_argument("overrides", nargs="*", help="key=value on top of the stored config: a variant")
    p.add_argument(
        "--at-commit",
        action="store_true",
        help="run the recorded commit plus its recorded diff, in a temporary git worktree",
    )
    p.add_argument("--allow-drift", action="store_true", help="run even if the environment drifted")
    p.add_argument(
        "--seeds",
        type=seed_count,
        default=None,
        metavar="N",
        help="test the original against this config's runs under N seeds here (default: 5 "
        "when the machine drifted, none when the run must reproduce bit for bit)",
    )
    p.add_argument(
        "--trials",
        default=None,
        metavar="all|best|0,3,5",
        help="for a sweep: which trials to rerun (default: all that finished)",
    )
    p.add_argument(
        "--recorded-env",
        action="store_true",
        help="rerun inside the run's recorded packages (a virtualenv cached by the freeze's "
        "hash, layered over this one)",
    )
    p.add_argument(
        "--explain",
        action="store_true",
        help="print the first training step where the rerun parts from the original",
    )
    p.add_argument("--rtol", type=float, default=1e-3, help="relative tolerance (non-exact runs)")
    p.add_argument("--atol", type=float, default=1e-6, help="absolute tolerance (non-exact runs)")
    add_store_options(p)
    add_config_dir_option(p)
    return p.parse_intermixed_args(argv)  # options and overrides in any order


def seed_count(text: str) -> int:
    """`--seeds N`: a whole number of at least 2 (one seed gives no spread to test against)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"takes a whole number of seeds, not '{text}'") from None
    if value < 2:
        raise argparse.ArgumentTypeError(f"needs at least 2 seeds to test against, not {value}")
    return value


def rerun_run_or_sweep(args: argparse.Namespace) -> dict:
    """A sweep's id (its parent run's, or its `labrun.sweep_id`) reruns its trials
    (`sweep.rerun`); any other id is one run's rerun (`rerun.rerun`)."""
    from labrun.store.client import client_for
    from labrun.store.query import find_sweep_parent

    client = client_for(args.tracking_uri)
    parent = find_sweep_parent(client, args.run_id)
    if parent is None:
        return rerun(args, client)  # the store was checked once, here
    from labrun.sweep.rerun import rerun_sweep

    return rerun_sweep(args, client, parent)


def main(argv: list[str]) -> None:
    result = rerun_run_or_sweep(parse(argv))
    if "returncode" in result:  # the rerun ran in the recorded environment's own process
        raise SystemExit(result["returncode"])
    if result.get("verdict") == "DIFFERS" or result.get("counts", {}).get("DIFFERS"):
        raise SystemExit(1)
