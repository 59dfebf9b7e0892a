"""Where a user's own configs live, found without Hydra flags.

In order, each after labrun's own `conf/` on Hydra's search path (labrun's groups win a name
clash, so a recipe means the same thing in every project):

1. `$LABRUN_CONFIG_PATH`: folders separated by `os.pathsep` (`--config-dir` of any labrun
   command puts its folder here, so child processes and reruns see it too);
2. `[tool.labrun] config_dirs` in the project's `pyproject.toml`, relative to it;
3. else the project's `conf/` folder, when it is not labrun's own.

The project is the nearest folder above the working directory with a `pyproject.toml` or
`.git` (`labrun.config.compose.project_root`). Hydra reads this list through the search-path
plugin in `hydra_plugins/labrun_searchpath`, so `@hydra.main`, `compose` and every sweep
worker see the same folders.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ENV = "LABRUN_CONFIG_PATH"


def from_env() -> list[Path]:
    return [Path(p).expanduser().resolve() for p in os.environ.get(ENV, "").split(os.pathsep) if p]


def labrun_table(root: Path, key: str) -> list[str] | None:
    """`[tool.labrun] <key>` of `root/pyproject.toml`: a list of strings, or None if unset."""
    from labrun.errors import ConfigError

    pyproject = root / "pyproject.toml"
    if not pyproject.is_file():
        return None
    try:
        table = tomllib.loads(pyproject.read_text(encoding="utf-8")).get("tool", {})
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{pyproject} is not valid TOML ({exc}); fix it") from None
    value = table.get("labrun", {}).get(key)
    if value is not None and (
        not isinstance(value, list) or not all(isinstance(v, str) for v in value)
    ):
        raise ConfigError(
            f"[tool.labrun] {key} in {pyproject} must be a list of strings, not {value!r}"
        )
    return value


def trusted_targets(root: Path | None = None) -> list[str]:
    """Packages this machine trusts in `_target_` beyond labrun's allowlist: `[tool.labrun]
    allowed_targets` of the project, and `$LABRUN_ALLOWED_TARGETS` (comma-separated). Local
    settings, so a config read back from a store never allows itself."""
    from labrun.config.folders import project_root

    given = [t.strip() for t in os.environ.get("LABRUN_ALLOWED_TARGETS", "").split(",")]
    try:
        listed = labrun_table(root or project_root(), "allowed_targets") or []
    except Exception:  # a broken pyproject.toml: the preflight names it
        listed = []
    return [t for t in (*given, *listed) if t]


def from_project(root: Path) -> list[Path]:
    """`[tool.labrun] config_dirs` of `root/pyproject.toml`, else `root/conf`."""
    from labrun.config.folders import config_dir

    dirs = labrun_table(root, "config_dirs")
    if dirs is not None:
        return [(root / d).resolve() for d in dirs]
    conf = (root / "conf").resolve()
    return [conf] if conf.is_dir() and conf != config_dir().resolve() else []


def config_dirs(check: bool = False) -> list[Path]:
    """The user's config folders, in search order, without repeats or labrun's own. With
    `check`, a named folder that does not exist is a one-line ConfigError."""
    from labrun.config.folders import config_dir, project_root
    from labrun.errors import ConfigError

    own = config_dir().resolve()
    found: list[Path] = []
    for source, dirs in ((f"${ENV}", from_env()), ("the project", from_project(project_root()))):
        for d in dirs:
            if check and not d.is_dir():
                raise ConfigError(
                    f"{source} names the config folder {d}, which does not exist; create it "
                    "or fix the path"
                )
            if d != own and d not in found and d.is_dir():
                found.append(d)
    return found


def in_use() -> list[Path]:
    """The user's config folders of the running task: Hydra's file sources beyond labrun's
    own (`--config-dir`, `hydra.searchpath`, this module's), else `config_dirs()`."""
    from hydra.core.hydra_config import HydraConfig

    from labrun.config.folders import config_dir

    if not HydraConfig.initialized():
        return config_dirs()
    own = config_dir().resolve()
    found: list[Path] = []
    for source in HydraConfig.get().runtime.config_sources:
        if source.schema != "file" or source.provider == "main":
            continue
        folder = Path(source.path).resolve()
        if folder != own and folder not in found:
            found.append(folder)
    return found


@contextlib.contextmanager
def extra_config_dirs(dirs: list[str | os.PathLike[str]]) -> Iterator[None]:
    """`dirs` first on `$LABRUN_CONFIG_PATH` for the duration (the `--config-dir` options)."""
    from labrun.environ import environ

    before = os.environ.get(ENV)
    given = [str(Path(d).expanduser().resolve()) for d in dirs]
    with environ({ENV: os.pathsep.join([*given, *([before] if before else [])])}):
        yield


def relative(dirs: list[Path], root: Path) -> list[str]:
    """Folders as recorded: relative to the project root where they lie under it, so a rerun
    from another checkout of the project finds its own copy."""
    out = []
    for d in dirs:
        try:
            out.append(str(d.relative_to(root)))
        except ValueError:
            out.append(str(d))
    return out
