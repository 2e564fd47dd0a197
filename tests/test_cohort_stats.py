"""swinseg.cohort_stats against hand computations on small known data."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from swinseg import cohort_stats as cs
from swinseg.errors import SwinsegError

# Shrout & Fleiss (1979), Table 2: 6 targets rated by 4 judges; their Table 4 gives ICC(3,1) = .71
SHROUT_FLEISS = [[9, 2, 5, 8], [6, 1, 3, 2], [8, 4, 6, 8], [7, 1, 2, 6], [10, 5, 6, 9], [6, 2, 4, 7]]


def test_icc_3_1_matches_the_anova_formula_on_the_textbook_table():
    data = np.array(SHROUT_FLEISS, dtype=float)
    n, k = data.shape
    # the two-way ANOVA by hand: between-targets and residual mean squares
    bms = k * sum((row.mean() - data.mean()) ** 2 for row in data) / (n - 1)
    jss = n * sum((col.mean() - data.mean()) ** 2 for col in data.T)
    ems = (((data - data.mean()) ** 2).sum() - bms * (n - 1) - jss) / ((n - 1) * (k - 1))
    expected = (bms - ems) / (bms + (k - 1) * ems)
    assert cs.icc_3_1(SHROUT_FLEISS) == pytest.approx(expected, rel=1e-12)
    assert round(cs.icc_3_1(SHROUT_FLEISS), 2) == 0.71  # the published value


def test_icc_is_one_for_a_constant_offset_and_drops_rows_with_nan():
    ref = [10.0, 20.0, 35.0, 50.0]
    assert cs.icc_3_1([[r + 5, r] for r in ref]) == pytest.approx(1.0)  # consistency ignores a constant bias
    assert cs.icc_3_1([[r + 5, r] for r in ref] + [[math.nan, 3.0]]) == pytest.approx(1.0)
    assert math.isnan(cs.icc_3_1([[1.0, 2.0]]))
    with pytest.raises(SwinsegError, match="raters"):
        cs.icc_3_1([1.0, 2.0])


def test_bland_altman_on_five_pairs():
    method, reference = [10, 12, 9, 15, 11], [9, 13, 7, 14, 10]
    # differences 1, -1, 2, 1, 1: mean 0.8; squared deviations .04 3.24 1.44 .04 .04 = 4.8; SD = sqrt(4.8 / 4)
    sd = math.sqrt(1.2)
    result = cs.bland_altman(method, reference)
    assert result["n"] == 5
    assert result["bias"] == pytest.approx(0.8)
    assert result["sd"] == pytest.approx(sd)
    assert result["loa_low"] == pytest.approx(0.8 - 1.96 * sd)
    assert result["loa_high"] == pytest.approx(0.8 + 1.96 * sd)
    assert cs.bland_altman(method + [math.nan], reference + [3.0])["bias"] == pytest.approx(0.8)  # pair dropped


def test_bootstrap_ci_is_reproducible_with_the_seed_and_holds_the_mean():
    values = [0.71, 0.80, 0.92, 0.85, 0.60, 0.77, math.nan]
    first = cs.bootstrap_mean_ci(values, resamples=2000, seed=7)
    assert first == cs.bootstrap_mean_ci(values, resamples=2000, seed=7)
    assert first != cs.bootstrap_mean_ci(values, resamples=2000, seed=8)
    assert first["n"] == 6
    assert first["mean"] == pytest.approx(np.mean(values[:6]))
    assert first["low"] < first["mean"] < first["high"]
    assert min(values[:6]) <= first["low"] and first["high"] <= max(values[:6])
    # the same interval by hand: resample means, then the 2.5th and 97.5th percentiles
    rng = np.random.default_rng(7)
    finite = np.array(values[:6])
    means = [finite[rng.integers(0, 6, size=6)].mean() for _ in range(2000)]
    assert first["low"] == pytest.approx(np.percentile(means, 2.5))
    assert first["high"] == pytest.approx(np.percentile(means, 97.5))


def test_bootstrap_ci_of_constant_values_and_of_nothing():
    assert cs.bootstrap_mean_ci([0.5] * 4, 100, 0) | {"resamples": 0} == {
        "mean": 0.5, "low": 0.5, "high": 0.5, "n": 4, "resamples": 0, "seed": 0}
    empty = cs.bootstrap_mean_ci([math.nan], 100, 0)
    assert empty["n"] == 0 and math.isnan(empty["mean"]) and math.isnan(empty["low"])
    with pytest.raises(SwinsegError, match="--bootstrap 0"):
        cs.bootstrap_mean_ci([1.0], 0, 0)


def test_wilcoxon_p_equals_the_exact_enumeration():
    diff = [1.0, -2.0, 3.0, 4.0, 5.0, 6.0]
    ranks = {abs(d): r for r, d in enumerate(sorted(diff, key=abs), start=1)}
    w_minus = sum(ranks[abs(d)] for d in diff if d < 0)
    # all 2^6 sign patterns are equally likely under H0: two-sided p = 2 P(W- <= observed)
    sums = [sum(s) for k in range(7) for s in itertools.combinations(range(1, 7), k)]
    expected = 2 * sum(s <= w_minus for s in sums) / len(sums)
    assert expected == pytest.approx(0.09375)
    assert cs.wilcoxon_p(diff) == pytest.approx(expected)
    assert cs.wilcoxon_p([0.0, 0.0]) == 1.0
    assert math.isnan(cs.wilcoxon_p([math.nan]))


def test_paired_comparison():
    a = [0.9, 0.8, 0.85, 0.7, 0.95, math.nan]
    b = [0.8, 0.75, 0.80, 0.72, 0.90, 0.5]
    result = cs.paired_comparison(a, b, resamples=500, seed=1)
    assert result["n"] == 5
    assert result["mean_difference"] == pytest.approx(np.mean([0.1, 0.05, 0.05, -0.02, 0.05]))
    assert result["mean_a"] - result["mean_b"] == pytest.approx(result["mean_difference"])
    assert result["low"] <= result["mean_difference"] <= result["high"]
    assert result["wilcoxon_p"] == pytest.approx(cs.wilcoxon_p([0.1, 0.05, 0.05, -0.02, 0.05]))
    with pytest.raises(SwinsegError, match="as many"):
        cs.paired_comparison([1.0], [1.0, 2.0])
