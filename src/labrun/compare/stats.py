"""Seeds pooled into groups: mean, spread, a confidence interval and a test against the best."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from labrun.errors import LabrunError

TEST_NOTE = (
    "Welch's t-test of each group against the best one: seeds make independent samples, "
    "groups are small and their variances need not be equal, so Student's pooled-variance "
    "test would be too optimistic. 95% CI: mean +- t(0.975, n-1) * std / sqrt(n)."
)


def group_stats(
    runs: Sequence[Any], keys: Sequence[str], metric: str, maximize: bool = True
) -> list[dict[str, Any]]:
    """Runs pooled by the values of `keys`: n, mean, std, 95% CI, and Welch's p vs the best."""
    from scipy import stats

    groups: dict[tuple, list[float]] = {}
    for r in runs:
        value = r.data.metrics.get(metric)
        if value is None or math.isnan(value):
            continue
        groups.setdefault(tuple(r.data.params.get(k) for k in keys), []).append(value)
    if not groups:
        raise LabrunError(f"no run in the selection has a value for {metric}")
    out = []
    for key, values in groups.items():
        n = len(values)
        mean = sum(values) / n
        std = stats.tstd(values) if n > 1 else float("nan")
        half = stats.t.ppf(0.975, n - 1) * std / math.sqrt(n) if n > 1 else float("nan")
        out.append(
            {
                **dict(zip(keys, key, strict=True)),
                "n": n,
                "mean": mean,
                "std": std,
                "ci_low": mean - half,
                "ci_high": mean + half,
                "values": values,
            }
        )
    out.sort(key=lambda g: g["mean"], reverse=maximize)
    best = out[0]
    for g in out:
        if g is best or g["n"] < 2 or best["n"] < 2:
            g["p_vs_best"] = float("nan")
        else:
            g["p_vs_best"] = float(
                stats.ttest_ind(g["values"], best["values"], equal_var=False).pvalue
            )
    return out
