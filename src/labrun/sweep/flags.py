"""labrun's own flags of `labrun train -m`. Hydra would refuse them, so the CLI takes them off
the command line and hands them on in the environment, where the sweep's callback and every
job (a SLURM job gets the submitter's environment) read them."""

ALLOW_DRIFT_ENV = "LABRUN_ALLOW_DRIFT"
DETACH_ENV = "LABRUN_DETACH"

SWEEP_FLAGS = {  # flag: (environment variable, what it does)
    "--allow-drift": (ALLOW_DRIFT_ENV, "continues a sweep although its code changed"),
    "--detach": (DETACH_ENV, "submits a sweep's jobs and exits"),
}
