"""The numeric environment a run records, and the drift a rerun reads from it: what the user
chose counts, what the stack sets for itself at import does not."""

from __future__ import annotations

from labrun.rerun.drift import numerics as numerics_drift
from labrun.tracking.numerics import capture, numeric_env

STACK_SET = {"KMP_DUPLICATE_LIB_OK": "True", "KMP_INIT_AT_FORK": "FALSE"}  # sklearn, joblib


def test_only_the_users_numeric_variables_are_recorded() -> None:
    env = {"OMP_NUM_THREADS": "1", "MKL_CBWR": "COMPATIBLE", "HOME": "/root", **STACK_SET}
    assert numeric_env(env) == {"MKL_CBWR": "COMPATIBLE", "OMP_NUM_THREADS": "1"}


def test_variables_the_stack_sets_are_no_drift_in_runs_recorded_with_them() -> None:
    now = capture()
    recorded = {**now, "env": {**now["env"], **STACK_SET}}
    assert numerics_drift(recorded, now) == []
    chosen = {**now, "env": {**now["env"], "OMP_NUM_THREADS": "7"}}
    (drift,) = numerics_drift(chosen, now)
    assert (drift.what, drift.recorded) == ("env.OMP_NUM_THREADS", "7")
