"""Errors that reach the user as one line: what is wrong and how to fix it."""


class LabrunError(Exception):
    """A problem with the user's input or environment, reported without a traceback."""

    exit_code = 2


class ConfigError(LabrunError):
    """A config key is unknown, mistyped or missing."""


class DataError(LabrunError):
    """A data file is missing, corrupt or malformed."""


class TrackingError(LabrunError):
    """The tracking store cannot be reached or used."""


class SweepFailed(LabrunError):
    """A sweep whose trials or workers failed; its parent run lists them."""

    exit_code = 1
