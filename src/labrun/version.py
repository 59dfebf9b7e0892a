"""labrun's version: the installed distribution's, or a marker for an uninstalled tree."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("labrun")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"
