"""REPRODUCED or DIFFERS: every final metric of the original against the rerun's."""

from __future__ import annotations

import math
from typing import Any

from omegaconf import DictConfig


def exact_expected(cfg: DictConfig) -> bool:
    """Deterministic CPU runs must reproduce bit for bit; others within a tolerance."""
    trainer = cfg.get("trainer") or {}
    return trainer.get("deterministic") is True and trainer.get("accelerator", "cpu") == "cpu"


def verdict(
    before: dict[str, float], after: dict[str, float], exact: bool, rtol: float, atol: float
) -> tuple[str, list[dict[str, Any]]]:
    """REPRODUCED when every recorded final metric matches, else DIFFERS; and the rows."""
    rows = []
    for key in sorted(before):
        a, b = before[key], after.get(key)
        if b is None:
            same = False
        elif exact:
            same = a == b or (math.isnan(a) and math.isnan(b))
        else:
            same = math.isclose(a, b, rel_tol=rtol, abs_tol=atol)
        rows.append(
            {
                "metric": key,
                "original": a,
                "rerun": b,
                "abs_diff": None if b is None else abs(b - a),
                "match": same,
            }
        )
    ok = bool(rows) and all(r["match"] for r in rows)
    return ("REPRODUCED" if ok else "DIFFERS"), rows


def tolerance_text(exact: bool, rtol: float, atol: float) -> str:
    if exact:
        return "exact: bit-identical (deterministic CPU run)"
    return f"|rerun - original| <= {atol:g} + {rtol:g} * |original|"


PREDICTION_NOTE = (
    "CONSISTENT when the original's value lies in the 95% prediction interval of one more run "
    "of this config here: mean +- t(0.975, n-1) * std * sqrt(1 + 1/n) over the n seeds; "
    "p: the two-sided t-test of the original as one more draw from them"
)


def prediction(original: float, values: list[float]) -> dict[str, Any]:
    """Where `original` falls among `values` (n >= 2 runs of the config under other seeds)."""
    from scipy import stats

    n = len(values)
    mean = math.fsum(values) / n
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
    spread = std * math.sqrt(1 + 1 / n)
    half = float(stats.t.ppf(0.975, n - 1)) * spread
    if spread > 0:
        p = float(2 * stats.t.sf(abs(original - mean) / spread, n - 1))
    else:  # every seed gave the same value: the original matches it or not
        p = 1.0 if original == mean else 0.0
    return {
        "original": original,
        "n": n,
        "mean": mean,
        "std": std,
        "low": mean - half,
        "high": mean + half,
        "p": p,
        "inside": mean - half <= original <= mean + half,
    }


def statistical(
    before: dict[str, float], pool: list[dict[str, float]], decides: str
) -> tuple[str, list[dict[str, Any]]]:
    """CONSISTENT or DIFFERS by the metric `decides` (the objective; where the run did not
    record it, every metric decides); the rows hold every metric's test."""
    rows = []
    for key in sorted(before):
        values = [m[key] for m in pool if m.get(key) is not None and not math.isnan(m[key])]
        if len(values) < 2 or math.isnan(before[key]):
            rows.append({"metric": key, "original": before[key], "n": len(values), "inside": None})
            continue
        rows.append({"metric": key, **prediction(before[key], values)})
    deciding = [r for r in rows if r["metric"] == decides] or rows
    ok = bool(deciding) and all(r["inside"] for r in deciding)
    for r in rows:
        r["decides"] = r in deciding
    return ("CONSISTENT" if ok else "DIFFERS"), rows
