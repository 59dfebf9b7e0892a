"""Where two runs part: the first step at which their trajectory fingerprints differ
(`tracking.trajectory`), by how much, and what can explain it."""

from __future__ import annotations

import math
from typing import Any

from labrun.rerun import drift

# What a first difference at each place points at.
CAUSES = {
    "init": (
        "the initial weights differ: the seed, the initialisation code, or the kernels that "
        "draw them (torch's version, the CPU capability)"
    ),
    "batch": "the data order differs: shuffle seed, sampler, data files or their cleaning",
    "forward0": (
        "the first forward already differs with the same weights and batch: kernels, hardware "
        "or packages (nothing has trained yet)"
    ),
    "backward0": "the first backward differs (its forward agreed): kernels, hardware or packages",
    "update0": (
        "the first update differs (its loss and gradient norm agreed): the kernels of the "
        "backward or the optimizer, or the threads that split their sums"
    ),
    "later": (
        "a later step differs with every earlier one equal: nondeterministic ops, threads, a "
        "resume that was not exact, or kernels that agree only on some inputs"
    ),
    "length": "one run trained more steps: early stopping, limits, or a run cut short",
}
ORDER = ("batch", "loss", "grad_norm")  # within a step: what it read, its forward, its backward


def _differ(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return False
    return a != b


def first_divergence(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any] | None:
    """The first place two fingerprints differ, or None when they agree step for step."""
    pa, pb = a["params"], b["params"]
    if _differ(pa.get("init"), pb.get("init")):
        return _found("init", "parameters before training", pa.get("init"), pb.get("init"))
    n = min(a["steps"], b["steps"])
    for i in range(n):
        for what in ORDER:
            if _differ(a[what][i], b[what][i]):
                return _found(_place(what, i), what, a[what][i], b[what][i], i)
        key = str(i)
        if key in pa and key in pb and _differ(pa[key], pb[key]):
            place = "later" if i else "update0"
            return _found(place, "parameters after the step", pa[key], pb[key], i)
    if a["steps"] != b["steps"]:
        return _found("length", "steps trained", a["steps"], b["steps"], n)
    return None


def _place(what: str, step: int) -> str:
    if what == "batch":
        return "batch"
    if step > 0:
        return "later"
    return "forward0" if what == "loss" else "backward0"


def _found(place: str, what: str, a: Any, b: Any, step: int | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "step": step,
        "place": place,
        "what": what,
        "original": a,
        "rerun": b,
        "cause": CAUSES[place],
    }
    if isinstance(a, list) and isinstance(b, list):  # parameter checksums: compare the norms
        a, b = a[0], b[0]
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and what != "batch":
        out["abs_diff"] = abs(b - a)
        out["rel_diff"] = abs(b - a) / abs(a) if a else None
    return out


def explanation(
    found: dict[str, Any] | None,
    report: drift.Report | None,
    overrides: list[str] | tuple[str, ...] = (),
) -> dict[str, Any]:
    """The divergence with what can explain it: a variant's overrides, and the drift items
    that can change results."""
    suspects = [f"override {o}" for o in overrides]
    suspects += [
        f"{d.kind}: {d.what} {d.recorded} -> {d.now}"
        for d in (report.items if report is not None else [])
        if d.affects
    ]
    return {"divergence": found, "suspects": suspects}


def text(found: dict[str, Any] | None, suspects: list[str]) -> str:
    """One paragraph for the person."""
    if found is None:
        return "trajectories: identical at every step (loss, gradient norm, batch, parameters)"
    where = "before training" if found["step"] is None else f"at step {found['step']}"
    size = ""
    if found.get("abs_diff") is not None:
        rel = found.get("rel_diff")
        size = f" (|diff| {found['abs_diff']:.3g}" + (f", relative {rel:.2g})" if rel else ")")
    line = (
        f"trajectories part {where}: {found['what']} {found['original']!r} vs "
        f"{found['rerun']!r}{size}. {found['cause']}"
    )
    if suspects:
        line += ". Drift that can explain it: " + "; ".join(suspects)
    return line
