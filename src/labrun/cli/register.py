"""`labrun register RUN_ID|SWEEP_ID --name NAME [--alias best]`: the run's model (or the
sweep's best trial's) in MLflow's model registry, loadable as `models:/NAME@ALIAS`."""

from __future__ import annotations

import argparse

from labrun.cli.common import Parser, add_store_options


def parse(argv: list[str]) -> argparse.Namespace:
    p = Parser(prog="labrun register", description=__doc__.splitlines()[0])
    p.add_argument("run_id", help="a run id, or a sweep's id (its best trial is registered)")
    p.add_argument("--name", required=True, help="the registered model's name")
    p.add_argument("--alias", default="best", help="the alias pointed at it (default: best)")
    add_store_options(p, allow_target=False)
    return p.parse_args(argv)


def main(argv: list[str]) -> None:
    from labrun.store.client import client_for
    from labrun.store.registry import register

    args = parse(argv)
    client = client_for(args.tracking_uri)
    version = register(client, args.run_id, args.name, args.alias)
    print(
        f"registered {args.name} version {version.version} (run {version.run_id}); "
        f"load it with mlflow.pytorch.load_model('models:/{args.name}@{args.alias}')"
    )
