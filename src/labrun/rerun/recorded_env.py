"""`labrun rerun RUN_ID --recorded-env`: the rerun inside the packages the run recorded.

The environment is a virtualenv built once per recorded freeze (cached by its hash under
`LABRUN_ENV_CACHE`, default `~/.cache/labrun/envs`) and layered over this one: every
distribution whose recorded version differs from this environment's (or that is gone) is
installed into it at the recorded version, and shadows this environment's; all the others are
this environment's own files, read through a `.pth` line. A freeze of ~150 packages with a few
at other versions builds in seconds instead of copying gigabytes of torch and CUDA wheels.
Distributions installed since the run stay importable (the drift report lists them as added).
Editable installs (labrun, a user's project) are not reinstalled: their code is compared by the
code drift check.

A build is complete or absent: it is marked complete last, and an unmarked one is rebuilt.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import venv
from importlib.metadata import distributions
from pathlib import Path
from typing import Any

from labrun.errors import LabrunError

CACHE_ENV = "LABRUN_ENV_CACHE"
INSIDE_ENV = "LABRUN_RECORDED_ENV"  # set for the rerun inside: the env's key, tagged on the run
ENV_TAG = "labrun.recorded_env"
COMPLETE = "labrun_env.json"


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "labrun" / "envs")


def editable() -> set[str]:
    """Distributions installed from a local folder here (`pip install -e`)."""
    found = set()
    for dist in distributions():
        text = dist.read_text("direct_url.json")
        if text and json.loads(text).get("dir_info", {}).get("editable"):
            found.add(str(dist.metadata["Name"]).lower())
    return found


def to_install(recorded: list[str]) -> list[str]:
    """`name==version` of every recorded distribution this environment lacks at that version."""
    from labrun.tracking.provenance import pip_freeze

    now = {line.split("==")[0].lower(): line for line in pip_freeze()}
    local = editable()
    wanted = []
    for line in recorded:
        name = line.split("==")[0].strip().lower()
        if "==" in line and name not in local and now.get(name, "").lower() != line.lower():
            wanted.append(line.strip())
    return sorted(wanted)


def key_of(recorded: list[str]) -> str:
    """The freeze, this Python and the environment it layers over, hashed."""
    text = "\n".join(sorted(recorded)) + f"\n{sys.version}\n{sys.prefix}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def ensure(recorded: list[str]) -> tuple[Path, str, list[str]]:
    """The environment for `recorded`: built now or found in the cache."""
    key = key_of(recorded)
    root = cache_dir() / key
    root.parent.mkdir(parents=True, exist_ok=True)
    with open(root.parent / f".{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one build at a time per freeze
        done = root / COMPLETE
        if done.is_file():
            info = json.loads(done.read_text())
            print(f"recorded environment {key}: cached ({len(info['installed'])} packages)")
            return root, key, info["installed"]
        shutil.rmtree(root, ignore_errors=True)  # a build that did not finish
        wanted = to_install(recorded)
        print(
            f"recorded environment {key}: installing {len(wanted)} packages at their "
            f"recorded versions: {', '.join(wanted) or 'none'}"
        )
        build(root, wanted)
        done.write_text(json.dumps({"key": key, "installed": wanted, "base": sys.prefix}))
    return root, key, wanted


def build(root: Path, wanted: list[str]) -> None:
    venv.EnvBuilder(symlinks=True, with_pip=False, clear=True).create(root)
    python = root / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    base = sysconfig.get_paths()["purelib"]
    # After the env's own site-packages: what is installed there shadows this environment.
    Path(purelib, "_labrun_base.pth").write_text(f"import site; site.addsitedir({base!r})\n")
    if not wanted:
        return
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "--no-deps",
            "-q",
            *wanted,
        ],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        shutil.rmtree(root, ignore_errors=True)
        raise LabrunError(uninstallable(done.stderr, wanted))


def uninstallable(stderr: str, wanted: list[str]) -> str:
    """pip's refusal as one line naming the package."""
    match = re.search(
        r"(?:No matching distribution found for|satisfies the requirement) (\S+)", stderr
    )
    what = match.group(1) if match else ", ".join(wanted)
    return (
        f"the recorded package {what} can no longer be installed (not on the package index "
        "pip uses here); rerun without --recorded-env to run in this environment (the drift "
        "report names what differs)"
    )


def to_argv(args: argparse.Namespace) -> list[str]:
    """The rerun's command line, without --recorded-env, for the process inside."""
    argv = [args.run_id, *args.overrides]
    for flag in ("at_commit", "allow_drift", "explain"):
        if getattr(args, flag, False):
            argv.append("--" + flag.replace("_", "-"))
    for option in ("seeds", "rtol", "atol", "tracking_uri", "trials"):
        if getattr(args, option, None) is not None:
            argv += ["--" + option.replace("_", "-"), str(getattr(args, option))]
    for target in getattr(args, "allow_target", []) or []:
        argv += ["--allow-target", target]
    for folder in getattr(args, "config_dir", []) or []:
        argv += ["--config-dir", folder]
    return argv


def rerun_inside(args: argparse.Namespace, client: Any, requirements: list[str] | None) -> dict:
    """Build (or find) the environment and run the rerun in it, in a process of its own."""
    if requirements is None:
        raise LabrunError(
            f"run '{args.run_id}' recorded no packages (provenance/requirements.txt); rerun "
            "without --recorded-env"
        )
    root, key, installed = ensure(requirements)
    env = {**os.environ, INSIDE_ENV: key, "MLFLOW_TRACKING_URI": client.tracking_uri}
    done = subprocess.run(
        [str(root / "bin" / "python"), "-m", "labrun", "rerun", *to_argv(args)], env=env
    )
    runs = client.search_runs(
        [client.get_run(args.run_id).info.experiment_id],
        f"tags.`{ENV_TAG}` = '{key}' and tags.`labrun.rerun_of` = '{args.run_id}'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    found = runs[0] if runs else None
    return {
        "returncode": done.returncode,
        "env": str(root),
        "env_key": key,
        "installed": installed,
        "run_id": found.info.run_id if found else None,
        "verdict": found.data.tags.get("labrun.verdict") if found else None,
    }
