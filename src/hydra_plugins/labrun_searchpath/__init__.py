"""Hydra plugin: the user's config folders (`labrun.config.search_path`) after labrun's own."""

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin


class LabrunSearchPath(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        try:
            from labrun.config.search_path import config_dirs
        except ImportError:  # another interpreter's hydra_plugins on the path
            return
        try:
            folders = config_dirs()
        except Exception:  # a broken pyproject.toml: the preflight says so in one line
            return
        for folder in folders:
            search_path.append(provider="labrun-project", path=f"file://{folder}")
