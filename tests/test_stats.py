"""The statistics, pinned against scipy and a published worked example."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import statsmodels.api as sm
from scipy import stats as ss

from stream import stats


@pytest.mark.parametrize("k,n,bk,bn", [
    (30, 100, 1000, 10000),   # a clear rise: 30% against 10%
    (12, 100, 1000, 10000),   # a small rise, not significant
    (5, 100, 1000, 10000),    # a fall: the one-sided p-value is above 1/2
    (50, 50, 10, 200),        # window all successes
    (0, 60, 0, 5000),         # both all zero: equal rates, p = 1 by definition
])
def test_ztest_is_the_one_sided_pearson_chi_square(k: int, n: int, bk: int, bn: int) -> None:
    p = stats.ztest_rise(k, n, bk, bn)
    if k == 0 and bk == 0:
        assert p == 1.0
        return
    chi2, two_sided, _, _ = ss.chi2_contingency([[k, n - k], [bk, bn - bk]], correction=False)
    # z^2 = X^2: the one-sided p-value is half the two-sided one on the side of the observed difference
    expected = two_sided / 2 if k / n > bk / bn else 1 - two_sided / 2
    assert p == pytest.approx(expected, rel=1e-9, abs=1e-15)


@pytest.mark.parametrize("k,n,bk,bn", [
    (30, 100, 1000, 10000),   # a clear rise: Fisher decides, and is more conservative than z in this tail
    (16, 100, 1000, 10000),   # borderline
    (12, 100, 1000, 10000),   # z p-value above the screen: kept as is
    (50, 50, 10, 200),        # window all successes
])
def test_rise_pvalue_is_fishers_exact_test_where_it_matters(k: int, n: int, bk: int, bn: int) -> None:
    z = stats.ztest_rise(k, n, bk, bn)
    fisher = ss.fisher_exact([[k, n - k], [bk, bn - bk]], alternative="greater").pvalue
    expected = z if z > stats.ZTEST_ONLY_ABOVE else fisher
    assert stats.rise_pvalue(k, n, bk, bn) == pytest.approx(expected, rel=1e-9)
    assert fisher >= min(z, 1.0) or z > stats.ZTEST_ONLY_ABOVE  # the screen relies on this in the right tail


@pytest.mark.parametrize("k,n,confidence", [
    (3, 20, 0.95),      # small sample, low rate
    (0, 50, 0.99),      # zero successes: lower bound 0
    (50, 50, 0.99),     # all successes: upper bound 1
    (137, 1000, 0.9),   # large sample
])
def test_wilson_interval_equals_scipy(k: int, n: int, confidence: float) -> None:
    ci = ss.binomtest(k, n).proportion_ci(confidence, method="wilson")
    assert stats.wilson(k, n, confidence) == pytest.approx((ci.low, ci.high), abs=1e-12)


def test_newcombe_interval_matches_newcombes_published_example() -> None:
    # Newcombe (1998), Statistics in Medicine 17:873, example (a): 56/70 - 48/80, method 10 -> 0.0524 to 0.3339
    lo, hi = stats.newcombe(56, 70, 48, 80, 0.95)
    assert (round(lo, 4), round(hi, 4)) == (0.0524, 0.3339)


@pytest.mark.parametrize("q", [0.5, 0.025, 0.005, 1e-6])
def test_normal_tail_and_quantile_equal_scipy(q: float) -> None:
    assert stats.normal_isf(q) == pytest.approx(ss.norm.isf(q), abs=1e-9)
    assert stats.normal_sf(ss.norm.isf(q)) == pytest.approx(q, rel=1e-9)


def test_difference_in_differences_rise_by_hand() -> None:
    # truth 30/100, proxy 20/100 against baseline truth 100/1000, proxy 300/1000: 0.10 vs -0.20, gap 0.30;
    # variance 0.21/100 + 0.16/100 + 0.09/1000 + 0.21/1000 = 0.004
    gap, p, (lo, hi) = stats.did_rise((30, 100), (20, 100), (100, 1000), (300, 1000), 0.95)
    se = math.sqrt(0.004)
    assert gap == pytest.approx(0.30)
    assert p == pytest.approx(ss.norm.sf(0.30 / se), rel=1e-9)
    assert (lo, hi) == pytest.approx((0.30 - ss.norm.isf(0.025) * se, 0.30 + ss.norm.isf(0.025) * se))


@pytest.mark.parametrize("pvalues,adjusted", [
    # textbook: sorted 0.005 x4, 0.01 x3, 0.03 x2, 0.04 x1 (raised to the running max 0.06)
    ([0.01, 0.04, 0.03, 0.005], [0.03, 0.06, 0.06, 0.02]),
    # one test: unchanged
    ([0.2], [0.2]),
    # capped at 1
    ([0.5, 0.6], [1.0, 1.0]),
    # no tests
    ([], []),
])
def test_holm_adjusted_pvalues(pvalues: list[float], adjusted: list[float]) -> None:
    assert stats.holm(pvalues) == pytest.approx(adjusted)


# (k, n) of the current window, then the baseline windows'
SHARES = [
    ((480, 1000), [(20, 1000), (25, 1000), (15, 900), (30, 1100)]),             # a new cohort: far above
    ((60, 1000), [(20, 1000), (60, 1000), (15, 900), (90, 1100), (40, 950)]),   # inside a wide day-night swing
    ((140, 1000), [(100, 1000), (96, 1010), (104, 990), (99, 1000)] * 6),       # binomial scatter, 24 windows
    ((30, 400), [(20, 1000), (25, 1000), (15, 900)]),                           # a small rise
]


@pytest.mark.parametrize("current,windows", SHARES)
def test_share_rise_is_statsmodels_quasi_binomial_glm(current: tuple[int, int],
                                                      windows: list[tuple[int, int]]) -> None:
    k, n = current
    rows = [*windows, current]
    # shares weighted by their trials: the form whose Pearson chi-square is the binomial one
    shares, trials = np.array([a / b for a, b in rows]), np.array([b for _, b in rows], dtype=float)
    exog = np.column_stack([np.ones(len(rows)), [0] * len(windows) + [1]])
    fit = sm.GLM(shares, exog, family=sm.families.Binomial(), var_weights=trials).fit(scale="X2", use_t=True)
    expected = ss.t.sf(fit.tvalues[1], fit.df_resid)  # one-sided: the share rose
    got = stats.share_rise(k, n, windows)
    assert got.df == fit.df_resid
    assert got.dispersion == pytest.approx(fit.scale, rel=1e-9)
    assert got.p_quasi == pytest.approx(expected, rel=1e-6, abs=1e-300)
    # the decisive p-value also needs Fisher's exact test to reject
    fisher = ss.fisher_exact([[k, n - k], [sum(w[0] for w in windows), sum(w[1] - w[0] for w in windows)]],
                             alternative="greater").pvalue
    assert got.p == pytest.approx(max(expected, fisher), rel=1e-6, abs=1e-300)


def test_share_rise_of_a_value_never_seen_is_the_exact_test() -> None:
    got = stats.share_rise(50, 1000, [(0, 1000), (0, 900), (0, 1100)])
    assert got.p == got.p_quasi == pytest.approx(
        ss.fisher_exact([[50, 950], [0, 3000]], alternative="greater").pvalue, rel=1e-9)
    with pytest.raises(ValueError):
        stats.share_rise(50, 1000, [(3, 1000)])  # one baseline window: no spread to measure


def test_share_interval_widens_with_the_dispersion() -> None:
    windows = [(20, 1000), (60, 1000), (15, 900), (90, 1100), (40, 950)]
    test = stats.share_rise(120, 1000, windows)
    lo, hi = stats.share_interval(120, 1000, windows, test.dispersion, test.df, 0.99)
    nlo, nhi = stats.newcombe(120, 1000, sum(w[0] for w in windows), sum(w[1] for w in windows), 0.99)
    assert test.dispersion > 10 and lo < nlo and hi > nhi
    assert stats.share_interval(120, 1000, windows, 0.8, test.df, 0.99) == (nlo, nhi)


def _amounts(n: int, values: np.ndarray) -> stats.Amounts:
    logs = np.log(values[values > 0])
    return stats.Amounts(n, float(values.sum()), len(logs), float(logs.sum()), float((logs ** 2).sum()))


@pytest.mark.parametrize("claims", [30, 80])  # as often as the baseline's 6%, and 20%: the exact test's side
@pytest.mark.parametrize("higher", [True, False])
def test_amount_rise_is_an_exact_frequency_test_and_a_t_test_on_the_log_severity(higher: bool, claims: int) -> None:
    rng = np.random.default_rng(5)
    now = _amounts(400, np.concatenate([rng.lognormal(8.5, 1.2, claims), np.zeros(10)]))
    then = _amounts(8000, np.concatenate([rng.lognormal(7.6, 1.2, 480), np.zeros(200)]))
    got = stats.amount_rise(now, then, higher)
    side = "greater" if higher else "less"
    mean1, var1 = now.log_moments()
    mean0, var0 = then.log_moments()
    student = ss.ttest_ind_from_stats(mean1, math.sqrt(var1), now.count, mean0, math.sqrt(var0), then.count,
                                    equal_var=True, alternative=side)
    table = [[now.count, now.n - now.count], [then.count, then.n - then.count]]
    fisher = ss.fisher_exact(table, alternative=side).pvalue
    assert got.p_severity == pytest.approx(student.pvalue, rel=1e-9)
    if fisher <= stats.ZTEST_ONLY_ABOVE:  # the exact test where it can matter (rise_pvalue)
        assert got.p_frequency == pytest.approx(fisher, rel=1e-6)
    else:
        assert got.p_frequency > stats.ZTEST_ONLY_ABOVE
    assert got.p == pytest.approx(min(1.0, 2 * min(student.pvalue, got.p_frequency)), rel=1e-9)
    assert (got.p < 0.01) is higher  # severity rose: larger claims, and as many


def test_one_huge_claim_moves_the_log_severity_little() -> None:
    rng = np.random.default_rng(6)
    base = rng.lognormal(7.6, 1.2, 2000)
    values = rng.lognormal(7.6, 1.2, 8)
    values[0] = base.max() * 20  # one claim twenty times the largest of the baseline's
    now, then = _amounts(100, values), _amounts(25_000, base)
    assert now.total / now.n > 3 * then.total / then.n  # the loss ratio tripled on one claim
    assert stats.amount_rise(now, then).p > 0.01
    assert now - now == stats.Amounts(0, 0.0, 0, 0.0, 0.0)
    assert dataclasses.astuple(now + then - then) == pytest.approx(dataclasses.astuple(now))


@pytest.mark.parametrize("factor", [1.0, 2.5])
def test_the_amount_interval_covers_the_true_gap(factor: float) -> None:
    # lognormal claims at a known frequency and median: the true value per prediction is f * exp(mu + s^2 / 2)
    rng = np.random.default_rng(8)
    f, mu, sigma, n, n0 = 0.1, 7.0, 1.2, 2000, 40_000
    truth = f * math.exp(mu + sigma ** 2 / 2)
    covered = 0
    for _ in range(400):
        now = _amounts(n, rng.lognormal(mu + math.log(factor), sigma, rng.binomial(n, f)))
        then = _amounts(n0, rng.lognormal(mu, sigma, rng.binomial(n0, f)))
        lo, hi = stats.amount_interval(now, then, 0.95)
        covered += lo <= truth * (factor - 1) <= hi
    assert 0.92 <= covered / 400 <= 0.98  # 95% nominal: 380 of 400, give or take three binomial sd


def test_the_amount_interval_of_a_window_without_claims_reaches_all_of_the_baseline() -> None:
    rng = np.random.default_rng(9)
    then = _amounts(8000, rng.lognormal(7, 1, 800))
    lo, hi = stats.amount_interval(stats.Amounts(400, 0.0, 0, 0.0, 0.0), then, 0.99)
    assert lo == -then.total / then.n < hi < 0
