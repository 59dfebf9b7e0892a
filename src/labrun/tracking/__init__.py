from labrun.tracking.logger import RunLogger
from labrun.tracking.run import TrackedRun, flatten

__all__ = ["RunLogger", "TrackedRun", "flatten"]
