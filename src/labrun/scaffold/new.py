"""`labrun new NAME`: write a small, working project (one model, one datamodule over a CSV,
one experiment, one test) and make it a git repository, so its first run records a commit."""

from __future__ import annotations

import keyword
import random
import re
import subprocess
from pathlib import Path

from labrun.errors import ConfigError

TEMPLATE = Path(__file__).resolve().parent / "template"


def check_name(name: str) -> None:
    if not re.fullmatch(r"[a-z_][a-z0-9_]*", name) or keyword.iskeyword(name):
        raise ConfigError(
            f"'{name}' cannot name a Python package; use lower-case letters, digits and '_', "
            "starting with a letter (e.g. mylab)"
        )


def example_csv(rows: int = 600, seed: int = 0) -> str:
    """Three classes of four-feature points around fixed centres: learnable in seconds."""
    rng = random.Random(seed)
    centres = {"a": (0, 0, 1, 0), "b": (2, 1, 0, 1), "c": (0, 2, 2, -1)}
    lines = ["x1,x2,x3,x4,label"]
    for i in range(rows):
        label = "abc"[i % 3]
        point = (c + rng.gauss(0, 0.8) for c in centres[label])
        lines.append(",".join(f"{v:.4f}" for v in point) + f",{label}")
    return "\n".join(lines) + "\n"


def new(name: str, into: Path) -> tuple[Path, bool]:
    """The project folder `into/name`, written from the template, and whether it was committed
    (git and a user identity are needed); refuses an existing folder."""
    check_name(name)
    project = into / name
    if project.exists():
        raise ConfigError(f"{project} already exists; choose another name or folder")
    for source in sorted(TEMPLATE.rglob("*.tmpl")):
        rel = source.relative_to(TEMPLATE).with_suffix("")
        rel = Path(*(name if part == "NAME" else part for part in rel.parts))
        if rel.name == "gitignore":
            rel = rel.with_name(".gitignore")
        target = project / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(source.read_text().replace("{{name}}", name))
    data = project / "data" / name / "example.csv"
    data.parent.mkdir(parents=True)
    data.write_text(example_csv())
    return project, commit(project)


def commit(project: Path) -> bool:
    """`git init` and a first commit with the user's identity; False where git cannot."""

    def git(*args: str) -> bool:
        try:
            done = subprocess.run(["git", "-C", str(project), *args], capture_output=True)
        except OSError:
            return False
        return done.returncode == 0

    return (
        git("init", "-q") and git("add", "-A") and git("commit", "-q", "-m", "New labrun project")
    )
