"""What changed between the environment a run recorded and this one, before it is rerun.

Six kinds, each a reason two runs of one config can differ: code (commit, uncommitted diff,
untracked files; and per package that gave a `_target_`, its commit, version and changed
source files), packages (`pip freeze`), data (sha256 of every file the run read), config
schema (keys the config has gained or lost since), hardware (device, CPU, threads) and
numerics (`tracking.numerics`: the CPU kernels torch dispatches to, its BLAS, GPU software,
TF32, numeric environment variables).

Code, data and config drift change the experiment itself: they stop a rerun unless allowed.
Packages, hardware and numerics are the machine: they only mean that bit-identity can no
longer be expected, and the verdict becomes statistical. Each item says whether it can change
results (`affects`): lightning at another version can, a retired CLI helper cannot.
"""

from __future__ import annotations

import platform
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from labrun.config import targets
from labrun.config.locations import is_location, is_record_key
from labrun.files import sha256_file
from labrun.tracking import provenance
from labrun.tracking.params import flatten
from labrun.tracking.secrets import scrub_text

KINDS = ("code", "packages", "data", "config", "hardware", "numerics")
EXPERIMENT_KINDS = ("code", "data", "config")  # drift that stops a rerun unless allowed
# Distributions whose version can change a run's numbers (kernels, initialisation, metrics,
# the training loop); any other package's cannot, short of a bug.
NUMERIC_PACKAGES = {
    "torch", "torchvision", "torchaudio", "torchtext", "torchmetrics", "lightning",
    "pytorch-lightning", "lightning-utilities", "numpy", "scipy", "scikit-learn", "triton",
    "mkl", "intel-openmp", "onednn", "pillow", "opencv-python", "opencv-python-headless",
}  # fmt: skip
NUMERIC_PACKAGE_PREFIXES = ("nvidia-", "torch-", "jax")
# Hardware facts that change kernels or reductions; the Python version does not.
NUMERIC_HARDWARE = {"device", "cpu", "machine", "torch threads"}
# Untracked files that can change what runs; logs, plots and notes cannot.
CODE_SUFFIXES = {".py", ".pyx", ".pyi", ".so", ".c", ".cpp", ".cu", ".h", ".yaml", ".yml"}
CODE_SUFFIXES |= {".toml", ".cfg", ".ini", ".json", ".sh"}


@dataclass
class Drift:
    kind: str  # one of KINDS
    what: str
    recorded: str
    now: str
    affects: bool = True  # can this change a run's numbers?


def code(recorded: dict[str, Any], recorded_diff: str, root: Path) -> list[Drift]:
    """Commit, uncommitted changes and untracked code files of the project at `root`."""
    now = provenance.git_state(root)
    found = []
    if recorded.get("commit") != now["commit"]:
        found.append(Drift("code", "git commit", str(recorded.get("commit")), str(now["commit"])))
    if scrub_text(now["diff"] or "", assignments=False) != (recorded_diff or ""):
        found.append(
            Drift(
                "code",
                "uncommitted changes",
                f"{len(recorded_diff or '')} bytes of diff",
                f"{len(now['diff'] or '')} bytes of diff{_files_in(now['diff'] or '')}",
            )
        )
    before, after = (
        {f for f in files if Path(f).suffix in CODE_SUFFIXES}
        for files in (recorded.get("untracked") or [], now["untracked"])
    )
    if before != after:
        found.append(
            Drift(
                "code",
                "untracked files",
                ", ".join(sorted(before - after)) or "-",
                ", ".join(sorted(after - before)) or "-",
            )
        )
    return found


def _files_in(diff: str) -> str:
    """`: a.py, b.py`: the files a git diff touches, to name them in the report."""
    names = sorted(
        {line.split(" b/", 1)[-1] for line in diff.splitlines() if line.startswith("diff --git ")}
    )
    return f": {', '.join(names)}" if names else ""


def package_code(recorded: dict[str, dict[str, Any]], project_repo: Path) -> list[Drift]:
    """Each package that provided a `_target_`, as it is now: its commit (where its repository
    is not the project's, which `code` checks), version, and the source files that changed,
    by name."""
    from labrun.tracking.code import package_state

    found = []
    for name, before in sorted(recorded.items()):
        now = package_state(name)
        if now["source"] == "missing" and before.get("source") != "missing":
            found.append(Drift("code", name, before.get("path") or "importable", "not importable"))
            continue
        if before.get("version") != now.get("version"):
            found.append(Drift("code", f"{name} version", *_either(before, now, "version")))
        other_repo = before.get("repo") and Path(before["repo"]) != project_repo.resolve()
        if other_repo and before.get("commit") != now.get("commit"):
            found.append(Drift("code", f"{name} git commit", *_either(before, now, "commit")))
        if "files" in before and before["files"] != now.get("files", {}):
            old, new = before["files"], now.get("files", {})
            changed = sorted(f for f in old.keys() & new.keys() if old[f] != new[f])
            gone, added = sorted(old.keys() - new.keys()), sorted(new.keys() - old.keys())
            what = [*changed, *(f"{f} (new)" for f in added), *(f"{f} (removed)" for f in gone)]
            found.append(
                Drift("code", f"{name} files", f"sha256:{before['sha256'][:12]}", ", ".join(what))
            )
    return found


def _either(before: dict[str, Any], now: dict[str, Any], key: str) -> tuple[str, str]:
    return str(before.get(key) or "-"), str(now.get(key) or "-")


def packages(recorded: list[str]) -> list[Drift]:
    """Distributions added, removed or at another version, by name."""
    before = dict(_split(line) for line in recorded if "==" in line)
    after = dict(_split(line) for line in provenance.pip_freeze())
    return [
        Drift("packages", name, before.get(name, "-"), after.get(name, "-"), numeric_package(name))
        for name in sorted(before.keys() | after.keys())
        if before.get(name) != after.get(name)
    ]


def numeric_package(name: str) -> bool:
    name = name.lower().replace("_", "-")
    return name in NUMERIC_PACKAGES or name.startswith(NUMERIC_PACKAGE_PREFIXES)


def _split(line: str) -> tuple[str, str]:
    name, _, version = line.partition("==")
    return name.strip().lower(), version.strip()


def data(fingerprint: dict[str, str], data_dir: Path) -> list[Drift]:
    """Every file the run read, hashed again where `paths.data_dir` points now."""
    found = []
    for rel, digest in sorted(fingerprint.items()):
        path = data_dir / rel
        now = sha256_file(path) if path.is_file() else "missing"
        if now != digest:
            found.append(Drift("data", rel, digest[:12], now[:12]))
    return found


def config_schema(stored: dict[str, Any], fresh: dict[str, Any] | None, error: str) -> list[Drift]:
    """Keys in today's composition of the run's overrides that the stored config lacks, and
    the reverse. A key removed since would make the stored config fail its schema check.

    A rerun runs the stored config, so a key gained since, where the stored node's
    `_target_` takes it with a default, runs at that default, which is how the code behaved
    before the key existed (labrun's rule for new options; a code change is code drift).
    Such a key cannot change the rerun: it is reported, marked as not affecting results.
    """
    if fresh is None:
        return [Drift("config", "the stored overrides no longer compose", "composed", error)]
    before, after = set(flatten(stored)), set(flatten(fresh))
    found = []
    for key in sorted(before ^ after):
        if is_location(key) or is_record_key(key):
            continue
        default = _default_in(stored, key) if key in after else None
        if default is not None:
            found.append(Drift("config", key, f"absent (default {default})", "present", False))
        else:
            found.append(Drift("config", key, _presence(key in before), _presence(key in after)))
    return found


def _default_in(stored: dict[str, Any], key: str) -> str | None:
    """The default that `key`, absent from `stored`, takes from its node's `_target_`."""
    parent, _, leaf = key.rpartition(".")
    node: Any = stored
    for part in parent.split(".") if parent else []:
        node = node.get(part) if isinstance(node, dict) else None
    if not isinstance(node, dict) or not isinstance(node.get("_target_"), str):
        return None
    has, value = targets.parameter_default(node["_target_"], leaf)
    return repr(value) if has else None


def _presence(present: bool) -> str:
    return "present" if present else "absent"


def hardware(recorded: dict[str, Any]) -> list[Drift]:
    now = {
        "device": provenance.device(),
        "cpu": provenance.cpu_model(),
        "machine": platform.machine(),
        "python": sys.version.split()[0],
    }
    return [
        Drift("hardware", key, str(recorded[key]), value, key in NUMERIC_HARDWARE)
        for key, value in now.items()
        if key in recorded and str(recorded[key]) != value  # older runs lack some keys
    ]


def numerics(recorded: dict[str, Any], now: dict[str, Any] | None = None) -> list[Drift]:
    """Each recorded numeric setting that differs now (`tracking.numerics`). All can change
    results but the container's id (the packages and settings inside it are compared apart).
    Without `now`, this process is compared, less its precision switches: the Trainer sets
    those as it is built, so they are compared after the rerun trained (`PRECISION`)."""
    from labrun.tracking.numerics import SET_BY_THE_STACK, capture

    stack = {f"env.{name}" for name in SET_BY_THE_STACK}  # runs recorded before they were left out
    before, after = (
        {k: v for k, v in flatten(tree).items() if v != "{}" and k not in stack}  # {}: no setting
        for tree in (recorded, now if now is not None else capture())
    )
    found = []
    for key in sorted(before.keys() | after.keys()):
        if now is None and key.startswith(PRECISION):
            continue
        a, b = before.get(key, "-"), after.get(key, "-")
        if str(a) != str(b):
            what = key.replace("_", " ") if key == "cpu_capability" else key
            found.append(Drift("numerics", what, str(a), str(b), not key.startswith("container")))
    return found


PRECISION = "precision."


@dataclass
class Report:
    items: list[Drift]
    seconds: float
    checked: list[str]

    @property
    def kinds(self) -> list[str]:
        return [k for k in KINDS if any(d.kind == k for d in self.items)]

    @property
    def stopping(self) -> list[Drift]:
        """Drift of the experiment itself (code, data, config) that can change results: stops
        a rerun unless allowed."""
        return [d for d in self.items if d.kind in EXPERIMENT_KINDS and d.affects]

    @property
    def machine(self) -> list[Drift]:
        """Drift of the machine that can change results: bit-identity is not to be expected."""
        return [d for d in self.items if d.kind not in EXPERIMENT_KINDS and d.affects]

    def why_not_exact(self) -> str:
        """`cpu capability AVX2 -> DEFAULT, lightning 2.6.5 -> 2.6.6`: the machine drift."""
        return ", ".join(f"{d.what} {d.recorded} -> {d.now}" for d in self.machine)

    def as_dict(self) -> dict[str, Any]:
        return {
            "kinds": self.kinds,
            "checked": self.checked,
            "seconds": round(self.seconds, 3),
            "items": [asdict(d) for d in self.items],
        }


def check(
    prov: dict[str, Any] | None,
    git_diff: str | None,
    requirements: list[str] | None,
    fingerprint: dict[str, str] | None,
    stored: dict[str, Any],
    fresh: dict[str, Any] | None,
    compose_error: str,
    root: Path,
    data_dir: Path,
    skip_code: bool = False,
    recorded_numerics: dict[str, Any] | None = None,
) -> Report:
    """All six checks, timed; a kind the run did not record is left out of `checked`."""
    start = time.perf_counter()
    items: list[Drift] = []
    checked = []
    if prov is not None and not skip_code:
        items += code(prov.get("git", {}), git_diff or "", root)
        items += package_code(prov.get("code") or {}, root)
        checked.append("code")
    if requirements is not None:
        items += packages(requirements)
        checked.append("packages")
    if fingerprint is not None:
        items += data(fingerprint, data_dir)
        checked.append("data")
    items += config_schema(stored, fresh, compose_error)
    checked.append("config")
    if prov is not None:
        items += hardware(prov)
        checked.append("hardware")
    if recorded_numerics is not None:
        items += numerics(recorded_numerics)
        checked.append("numerics")
    return Report(items, time.perf_counter() - start, checked)
