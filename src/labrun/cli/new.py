"""`labrun new NAME [--into DIR]`: a small working project of your own (see its README)."""

from __future__ import annotations

from pathlib import Path

from labrun.cli.common import Parser


def main(argv: list[str]) -> None:
    from labrun.scaffold.new import new

    p = Parser(prog="labrun new", description=__doc__)
    p.add_argument("name", help="the project's folder and Python package (e.g. mylab)")
    p.add_argument("--into", default=".", help="the folder to create it in (default: here)")
    args = p.parse_args(argv)
    project, committed = new(args.name, Path(args.into).resolve())
    print(f"created {project}: cd {project} && make train (then make test)")
    if not committed:
        print("  not committed: run git init, git add -A and git commit there before training")
