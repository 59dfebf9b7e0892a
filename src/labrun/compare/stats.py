"""Seeds pooled into groups: mean, spread, a confidence interval, and each group against the
best: the difference with its interval, an effect size, Welch's p and Holm's corrected p."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from labrun.config.locations import CHOICE_TAG
from labrun.errors import LabrunError


def grouping_value(run: Any, key: str) -> str | None:
    """What `--group-by key` reads: the param, else the config group's choice (`model`:
    `lstm_classifier`), which runs record as a tag."""
    value = run.data.params.get(key)
    return run.data.tags.get(CHOICE_TAG + key) if value is None else value


TEST_NOTE = (
    "Welch's t-test of each group against the best one: seeds make independent samples, "
    "groups are small and their variances need not be equal, so Student's pooled-variance "
    "test would be too optimistic. p_holm: Holm's step-down correction over the groups "
    "compared with the best (it keeps the chance of any false 'differs' at 5% where raw p "
    "does not). delta: group mean - best mean with Welch's 95% CI; g: Hedges' g (the "
    "difference in pooled standard deviations, small-sample corrected) with its 95% CI."
)
BOOTSTRAP_NOTE = (
    "CIs by percentile bootstrap (10,000 resamples of the seeds, fixed rng seed 0): they stay "
    "inside what the metric can take (an accuracy near 1.0 gets no upper bound above 1.0), "
    "where the t-interval assumes a normal spread."
)
POWER = 0.8
ALPHA = 0.05
BOOTSTRAP_RESAMPLES = 10_000


def group_stats(
    runs: Sequence[Any],
    keys: Sequence[str],
    metric: str,
    maximize: bool = True,
    ci: str = "t",
) -> list[dict[str, Any]]:
    """Runs pooled by the values of `keys`: n, mean, std and 95% CI (t or bootstrap), then
    each group against the best: delta with its CI, Hedges' g with its CI, Welch's p, Holm's p."""
    groups: dict[tuple, list[float]] = {}
    for r in runs:
        value = r.data.metrics.get(metric)
        if value is None or math.isnan(value):
            continue
        groups.setdefault(tuple(grouping_value(r, k) for k in keys), []).append(value)
    if not groups:
        raise LabrunError(f"no run in the selection has a value for {metric}")
    out = []
    for key, values in groups.items():
        n = len(values)
        mean = sum(values) / n
        low, high = (
            (bootstrap_ci(values) if ci == "bootstrap" else t_ci(values))
            if n > 1
            else (
                math.nan,
                math.nan,
            )
        )
        row = {**dict(zip(keys, key, strict=True)), "n": n, "mean": mean, "std": sd(values)}
        out.append({**row, "ci_low": low, "ci_high": high, "values": values})
    out.sort(key=lambda g: g["mean"], reverse=maximize)
    best = out[0]
    for g in out:
        g.update(versus(g["values"], best["values"], ci) if g is not best else versus([], [], ci))
    raw = [g["p_vs_best"] for g in out]
    for g, adjusted in zip(out, holm(raw), strict=True):
        g["p_holm"] = adjusted
    return out


def sd(values: Sequence[float]) -> float:
    """Sample standard deviation (n - 1); nan for one value."""
    n = len(values)
    if n < 2:
        return math.nan
    mean = sum(values) / n
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))


def t_ci(values: Sequence[float], level: float = 0.95) -> tuple[float, float]:
    from scipy import stats

    n, mean = len(values), sum(values) / len(values)
    half = stats.t.ppf(0.5 + level / 2, n - 1) * sd(values) / math.sqrt(n)
    return mean - half, mean + half


def bootstrap_ci(
    a: Sequence[float], b: Sequence[float] | None = None, level: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap CI of mean(a), or of mean(a) - mean(b); a fixed rng, so the same
    runs always give the same interval."""
    import numpy as np

    rng = np.random.default_rng(0)
    x = np.asarray(a, dtype=float)
    stat = x[rng.integers(0, len(x), (BOOTSTRAP_RESAMPLES, len(x)))].mean(axis=1)
    if b is not None:
        y = np.asarray(b, dtype=float)
        stat = stat - y[rng.integers(0, len(y), (BOOTSTRAP_RESAMPLES, len(y)))].mean(axis=1)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(stat, [tail, 100 - tail])
    return float(low), float(high)


def versus(a: Sequence[float], b: Sequence[float], ci: str = "t") -> dict[str, float]:
    """Group `a` against the best group `b`: delta = mean(a) - mean(b) with its 95% CI (Welch's,
    or bootstrap), Hedges' g with its 95% CI, and Welch's two-sided p."""
    nan = {k: math.nan for k in ("delta", "delta_low", "delta_high", "g", "g_low", "g_high")}
    if len(a) < 2 or len(b) < 2:
        return {**nan, "p_vs_best": math.nan}
    from scipy import stats

    test = stats.ttest_ind(a, b, equal_var=False)
    if ci == "bootstrap":
        low, high = bootstrap_ci(a, b)
    else:
        interval = test.confidence_interval(0.95)
        low, high = float(interval.low), float(interval.high)
    delta = sum(a) / len(a) - sum(b) / len(b)
    g, g_low, g_high = hedges_g(a, b)
    row = {"delta": delta, "delta_low": low, "delta_high": high}
    return {**row, "g": g, "g_low": g_low, "g_high": g_high, "p_vs_best": float(test.pvalue)}


def hedges_g(a: Sequence[float], b: Sequence[float]) -> tuple[float, float, float]:
    """Hedges' g (Cohen's d on the pooled sd, times the small-sample factor J) and its 95% CI
    from the large-sample standard error (Hedges & Olkin 1985)."""
    n1, n2 = len(a), len(b)
    pooled = math.sqrt(((n1 - 1) * sd(a) ** 2 + (n2 - 1) * sd(b) ** 2) / (n1 + n2 - 2))
    if pooled == 0:
        return math.nan, math.nan, math.nan
    d = (sum(a) / n1 - sum(b) / n2) / pooled
    g = d * (1 - 3 / (4 * (n1 + n2) - 9))
    se = math.sqrt((n1 + n2) / (n1 * n2) + g**2 / (2 * (n1 + n2)))
    return g, g - 1.959964 * se, g + 1.959964 * se


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the input's order; nan stays nan and is not
    counted among the comparisons."""
    order = sorted((p, i) for i, p in enumerate(pvalues) if not math.isnan(p))
    m = len(order)
    adjusted = [math.nan] * len(pvalues)
    running = 0.0
    for rank, (p, i) in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[i] = running
    return adjusted


def seeds_needed(delta: float, std: float, power: float = POWER, alpha: float = ALPHA) -> int:
    """Seeds per group for a two-sided two-sample t-test (equal n, equal spread `std`) to
    detect a true difference `delta` with `power`: the smallest n whose power, from the
    noncentral t distribution, reaches it."""
    from scipy import stats

    if not std > 0:
        return 2
    effect = abs(delta) / std
    for n in range(2, 100_000):
        df = 2 * n - 2
        crit = stats.t.ppf(1 - alpha / 2, df)
        shift = effect * math.sqrt(n / 2)
        reached = stats.nct.sf(crit, df, shift) + stats.nct.cdf(-crit, df, shift)
        if reached >= power:
            return n
    return 100_000


def seeds_advice(groups: Sequence[dict[str, Any]], keys: Sequence[str], delta: float) -> list[str]:
    """One line per group compared with the best: can its seeds tell a `delta` difference
    (80% power, 5% two-sided), and if not, about how many per group would."""
    best = groups[0]
    name = lambda g: ", ".join(str(g[k]) for k in keys)  # noqa: E731
    lines = []
    for g in groups[1:]:
        if g["n"] < 2 or best["n"] < 2:
            lines.append(f"{name(g)}: one seed has no spread to plan from; run at least 2")
            continue
        pooled = math.sqrt(
            ((g["n"] - 1) * g["std"] ** 2 + (best["n"] - 1) * best["std"] ** 2)
            / (g["n"] + best["n"] - 2)
        )
        need = seeds_needed(delta, pooled)
        have = min(g["n"], best["n"])
        verb = "can" if have >= need else "cannot"
        tail = f" (needs {need})" if verb == "can" else f": about {need} would"
        lines.append(
            f"{have} seeds per group {verb} tell {name(g)} from {name(best)} at a difference "
            f"of {delta:g} (pooled std {pooled:.4g}){tail}"
        )
    return lines
