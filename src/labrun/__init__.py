"""labrun: reproducible experiments from Hydra configs, Lightning training and MLflow records."""

from importlib.metadata import PackageNotFoundError, version

from labrun import moved

try:
    __version__ = version("labrun")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

moved.install()  # runs recorded before the rooms were laid out name the old import paths
