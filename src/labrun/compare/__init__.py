"""Comparing runs: selection, pooled statistics, pair diffs, plots, rendering.

`labrun.compare(...)` calls `labrun.compare.frames.compare`: the comparison as a DataFrame.
"""

from labrun.callable import make_callable

make_callable(__name__, "labrun.compare.frames:compare")
