"""Rerunning a stored run: fetch, drift report, overrides, the verdict, at the recorded commit.

`labrun.rerun(run_id)` calls `labrun.rerun.rerun.rerun_run`: the verdict as a dict.
"""

from labrun.callable import make_callable

make_callable(__name__, "labrun.rerun.rerun:rerun_run")
