"""The comparison's statistics against hand computations and published numbers."""

from __future__ import annotations

import itertools
import math

import pytest
from scipy import stats

from labrun.compare import stats as lstats
from labrun.compare.report import lower_is_better

A = [0.80, 0.82, 0.81]
B = [0.85, 0.86, 0.88]


def test_holm_matches_the_step_down_by_hand() -> None:
    # sorted 0.01, 0.03, 0.04 -> 3*0.01, max(that, 2*0.03), max(that, 1*0.04)
    assert lstats.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert lstats.holm([0.2, 0.5]) == pytest.approx([0.4, 0.5])
    assert lstats.holm([0.6, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1
    adjusted = lstats.holm([math.nan, 0.02, 0.01])  # the best group (nan) is not a comparison
    assert math.isnan(adjusted[0]) and adjusted[1:] == pytest.approx([0.02, 0.02])


def test_welch_interval_of_the_difference_matches_welch_satterthwaite_by_hand() -> None:
    out = lstats.versus(A, B)
    va, vb = stats.tvar(A) / 3, stats.tvar(B) / 3
    df = (va + vb) ** 2 / (va**2 / 2 + vb**2 / 2)
    half = stats.t.ppf(0.975, df) * math.sqrt(va + vb)
    delta = sum(A) / 3 - sum(B) / 3
    assert out["delta"] == pytest.approx(delta)
    assert (out["delta_low"], out["delta_high"]) == pytest.approx((delta - half, delta + half))
    t = delta / math.sqrt(va + vb)
    assert out["p_vs_best"] == pytest.approx(2 * stats.t.sf(abs(t), df))


def test_hedges_g_and_its_interval_by_hand() -> None:
    g, low, high = lstats.hedges_g(A, B)
    pooled = math.sqrt((2 * stats.tvar(A) + 2 * stats.tvar(B)) / 4)
    d = (sum(A) / 3 - sum(B) / 3) / pooled
    j = 1 - 3 / (4 * 6 - 9)
    se = math.sqrt(6 / 9 + (d * j) ** 2 / 12)
    assert g == pytest.approx(d * j)
    assert (low, high) == pytest.approx((d * j - 1.96 * se, d * j + 1.96 * se), abs=1e-3)
    assert math.isnan(lstats.hedges_g([1.0, 1.0], [1.0, 1.0])[0])  # no spread: no effect size


def test_bootstrap_ci_matches_the_exhaustive_resampling_and_stays_in_bounds() -> None:
    values = [0.97, 0.99, 1.0]
    means = sorted(sum(c) / 3 for c in itertools.product(values, repeat=3))  # all 27, equal odds
    exact = (means[0], means[-1])  # 2.5% of 27 is under one resample: the extremes, near enough
    low, high = lstats.bootstrap_ci(values)
    assert exact[0] <= low <= means[2] and means[-3] <= high <= exact[1]
    assert high <= 1.0 < lstats.t_ci(values)[1]  # the t-interval leaves [0, 1]; bootstrap cannot
    assert lstats.bootstrap_ci(values) == (low, high)  # seeded: the same runs, the same interval
    dlow, dhigh = lstats.bootstrap_ci(A, B)
    assert -0.08 <= dlow < dhigh <= -0.03  # the difference of means lies in [-0.08, -0.03]


@pytest.mark.parametrize(("effect", "n"), [(0.5, 64), (0.8, 26), (1.0, 17), (2.0, 6)])
def test_seeds_needed_matches_cohens_power_table(effect: float, n: int) -> None:
    """Cohen (1988), two-sided alpha 0.05, power 0.8: 64, 26, 17 per group (G*Power agrees)."""
    assert lstats.seeds_needed(effect * 0.01, 0.01) == n


def test_seeds_needed_is_near_the_normal_approximation() -> None:
    z = stats.norm.ppf(0.975) + stats.norm.ppf(0.8)
    for effect in (0.3, 0.6, 1.2):
        approx = 2 * (z / effect) ** 2
        assert approx <= lstats.seeds_needed(effect, 1.0) <= approx + 2  # t needs a little more


def test_seeds_advice_says_who_cannot_be_told_apart_and_how_many_would() -> None:
    groups = [
        {"h": "256", "n": 3, "mean": 0.85, "std": 0.01},
        {"h": "128", "n": 3, "mean": 0.845, "std": 0.01},
        {"h": "64", "n": 3, "mean": 0.80, "std": 0.01},
    ]
    lines = lstats.seeds_advice(groups, ["h"], 0.005)
    need = lstats.seeds_needed(0.005, 0.01)
    assert lines[0].startswith("3 seeds per group cannot tell 128 from 256")
    assert lines[0].endswith(f"about {need} would") and need == 64
    big = lstats.seeds_advice(groups, ["h"], 0.05)[1]
    assert big.startswith("3 seeds per group can tell 64 from 256")


def test_the_best_group_of_a_loss_is_the_lowest() -> None:
    assert lower_is_better("val/loss") and lower_is_better("val/fid")
    assert not lower_is_better("test/acc") and not lower_is_better("test/auroc")
