"""Proportion tests, intervals and the multiple-testing correction that detection relies on. Pure arithmetic.

Choice of test, for a reviewer:
- A window is compared with its own baseline (the pooled trailing windows): two independent binomial samples,
  one small (a window, at least `min_samples` trials) and one large (up to a week of them). One-sided, because
  trustgap alerts on rises only (more overrides, more mismatches), which buys power at the same level.
- The decisive p-value is Fisher's exact test (one-sided, conditional on the margins). The pooled two-proportion
  z-test (Pearson's chi-square, z^2 = X^2) was the first choice, but the multiple-testing correction asks for
  p-values near alpha / 27 ~ 4e-4, far in the tail, and there the normal approximation is anti-conservative for
  low rates (~10%) on ~100 trials: the binomial's right tail is heavier. Measured on stationary data
  (tests/test_detect.py) it gave 2.6% of windows with a false candidate at a family-wise alpha of 1%. Fisher's
  test is exact whatever the sample sizes, so the Holm guarantee holds as stated; its conservatism costs
  little at these sizes. The z-test stays as a cheap screen: Fisher is computed only where the z p-value is
  small enough to matter (most tests on quiet data never need it).
- The reported interval for the gap is Newcombe's hybrid score interval (method 10, built from Wilson intervals):
  it stays inside [-1, 1] and keeps its coverage near 0 and 1, where override rates live, unlike the Wald one.
- Proxy divergence compares a difference of two rates (truth mismatch minus proxy mismatch) with its baseline
  value: a difference-in-differences of four binomial proportions, tested with the one-sided Wald z statistic
  (unpooled variances, since the four rates differ by design); it has no exact counterpart in scipy, and the
  proxy rates it works with (~30%) are far less skewed.
- Many scopes are tested per model and window (whole model, each band, each segment value, for each signal): at
  alpha = 1% per test, 27 tests would give a false candidate in ~24% of windows. Holm–Bonferroni controls the
  family-wise error at alpha under any dependence between the tests (the scopes overlap: region=eu is inside the
  whole model) and is uniformly more powerful than plain Bonferroni.
- A window is looked at more than once: each follow-up signal at each of its checkpoints (for the defaults, 1 h
  windows: actions at 1 h and 1 d, outcomes at 1 h, 1 d and 7 d after the window, five looks). The family of a
  model-window is every test at every one of its looks. alpha is split evenly over the window's looks (Bonferroni
  over looks: alpha / L each) and Holm runs within a look over that look's tests: P(any false candidate at look
  j) <= alpha / L, so P(any at any look) <= alpha by the union bound, whatever the dependence between the looks.
  And they are strongly dependent: look k's counts are a part of look k+1's (cumulative counts), so a
  group-sequential spending function would be tighter, but it needs the information fraction of each look
  known in advance, which follow-ups arriving at their own pace do not give. Holm within a look runs over all
  the look's measured tests, also those of keys an earlier look of the window already decided (they are not
  acted on again): choosing the family by the earlier looks' outcomes would void the guarantee. An alert's
  p-value is its Holm-adjusted one times L (capped at 1), compared with alpha. Measured on stationary data
  (tests/test_detect.py, scripts/detection_report.py) the share of windows with any false candidate at any look
  stays well under alpha: the looks overlap, so the union bound is loose.
- A segment value's share of the model's predictions (segment_shift) is not a binomial sample from window to
  window: who arrives moves with the hour and the weekday, so the baseline windows' shares scatter far more than
  binomial noise allows, and an exact test against the pooled share would flag every evening. `share_rise` is
  the quasi-binomial test (McCullagh & Nelder): the logistic model of the baseline windows and the current one
  (an intercept and a "this window" indicator), its variance scaled by the Pearson dispersion of the baseline
  windows around their pooled share, a Wald statistic on the indicator referred to Student's t with the
  residual degrees of freedom (baseline windows - 1); it is the p-value statsmodels' GLM gives with
  `scale="X2"` and `use_t=True` (tests/test_stats.py pins it). Binomial noise alone makes the dispersion ~1,
  where the logistic Wald test is optimistic far in the tail; so the decisive p-value is the larger of that and
  Fisher's exact one (each must reject: the intersection-union rule). A value never seen in the baseline has no
  spread to measure: its share (with every other new value of the dimension) gets the exact test alone.
- A money value per prediction (outcome_value: claim amounts, revenue) is a ratio of a sum to a count, and the sum is
  skewed: most outcomes are small, a few are huge, so one large claim moves a window's sum further than any binomial
  or normal model of the sum expects. The first choice, the quasi-Poisson test of the windows' sums (a log-linear
  model with the predictions as exposure and the baseline windows' Pearson dispersion: the p-value of statsmodels' GLM
  with `scale="X2"` and `use_t=True`), models the spread but not the skew: on stationary data with ~7 lognormal claims
  (sigma 1.2) per window, 0.73% of its p-values fell under 1e-4 (the score statistic: 1.0%), 73 times the nominal
  rate, in the tail where the correction over scopes and looks sets the bar; it made one window in eleven a false
  candidate. The decisive test (`amount_rise`) is the actuaries' split instead: the value per prediction is claim
  *frequency* (outcomes with a positive value per prediction) times claim *severity* (their size). Frequency is a
  rate: the exact test as above. Severity is tested on the log of the amounts, where money is roughly normal
  (lognormal claims exactly so), with the two-sample t-test on the window's amounts against the baseline's, pooled
  variance (scipy's `ttest_ind_from_stats` gives the same p-value): one huge claim moves a mean log by little. Welch's
  unequal-variance test was tried first: on the same data 0.13% of its p-values fell under 1e-4 (0.84% where the
  window had two or three claims, whose spread is small by chance); the pooled variance, which the baseline's hundreds
  of amounts dominate, is exact when nothing changed, the case the correction has to hold for. The decisive p-value is
  twice the smaller of the two (Bonferroni over the two parts), the direction (`higher`) configurable per model; over
  100,000 simulated windows it fell under 1e-2, 1e-3 and 1e-4 in 0.80%, 0.072% and 0.010% of them
  (tests/test_detect.py's property test holds the whole family to its bound). Only additive sums are needed (count,
  sum and sum of squares of the logs, and the plain sum the alert reports), so Redis keeps four numbers per scope and
  checkpoint, and a scope's complement is a subtraction. The t-test pools the baseline's amounts: a severity that
  swings from window to window beyond what its amounts' spread says is not modelled (the share test's dispersion is
  the way to add that, should it show in practice). The gap's interval comes from the same model (`amount_interval`).
Normal tails use math.erfc (exact to double precision) rather than scipy, to keep a window's evaluation in
microseconds; the tests pin every figure against scipy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

_SQRT2 = math.sqrt(2.0)


def t_sf(df: float, t: float) -> float:
    """P(T > t) for Student's t with `df` degrees of freedom."""
    # scipy is imported at first use: scipy.special alone costs ~0.3 s, which every worker start and CLI command would
    # pay (`trustgap worker` loads scipy before it joins its group: stream.cli)
    from scipy.special import stdtr

    return float(stdtr(df, -t))


def t_isf(df: float, q: float) -> float:
    """t with P(T > t) = q for Student's t with `df` degrees of freedom."""
    from scipy.special import stdtrit

    return float(stdtrit(df, 1 - q))


def normal_sf(z: float) -> float:
    """P(Z > z) for a standard normal Z."""
    return 0.5 * math.erfc(z / _SQRT2)


@lru_cache(maxsize=64)  # called with a handful of confidence levels per process
def normal_isf(q: float) -> float:
    """z with P(Z > z) = q (bisection on erfc: exact enough for interval widths, no scipy at run time)."""
    lo, hi = -40.0, 40.0
    for _ in range(200):
        mid = (lo + hi) / 2
        if normal_sf(mid) > q:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def rise_pvalue(k: int, n: int, bk: int, bn: int) -> float:
    """One-sided p-value for H1: rate k/n is above the baseline rate bk/bn (see the module docstring).

    The pooled z-test first; where it could matter (z p-value under ZTEST_ONLY_ABOVE), Fisher's exact one.
    """
    p = ztest_rise(k, n, bk, bn)
    if p > ZTEST_ONLY_ABOVE:
        return p
    return fisher_rise(k, n, bk, bn)


# Above this the z-test's p-value is kept: no Holm threshold (<= alpha < 1%) can reject such a test, and Fisher's
# exact p-value is the larger of the two in the right tail of low rates, so it could only be larger still.
ZTEST_ONLY_ABOVE = 0.1


def fisher_rise(k: int, n: int, bk: int, bn: int) -> float:
    """Fisher's exact one-sided p-value: P(X >= k) for X hypergeometric given the pooled margins."""
    # imported here: scipy.stats takes ~0.7 s to import, which every worker start and CLI command would pay
    # (`trustgap worker` loads it before it joins its group: stream.cli)
    from scipy.stats import hypergeom

    return float(hypergeom.sf(k - 1, n + bn, k + bk, n))


def ztest_rise(k: int, n: int, bk: int, bn: int) -> float:
    """One-sided pooled two-proportion z-test p-value for H1: rate k/n is above the baseline rate bk/bn."""
    if n <= 0 or bn <= 0:
        return 1.0
    pooled = (k + bk) / (n + bn)
    var = pooled * (1 - pooled) * (1 / n + 1 / bn)
    if var <= 0:  # both samples all-0 or all-1: the rates are equal
        return 1.0
    return normal_sf((k / n - bk / bn) / math.sqrt(var))


def wilson(k: int, n: int, confidence: float) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion k/n at a two-sided confidence level."""
    if n <= 0:
        return 0.0, 1.0
    z = normal_isf((1 - confidence) / 2)
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def newcombe(k1: int, n1: int, k2: int, n2: int, confidence: float) -> tuple[float, float]:
    """Newcombe's hybrid score interval (his method 10) for the difference k1/n1 - k2/n2."""
    p1, p2 = k1 / n1, k2 / n2
    l1, u1 = wilson(k1, n1, confidence)
    l2, u2 = wilson(k2, n2, confidence)
    d = p1 - p2
    return d - math.hypot(p1 - l1, u2 - p2), d + math.hypot(u1 - p1, p2 - l2)


def did_rise(t: tuple[int, int], q: tuple[int, int], t0: tuple[int, int], q0: tuple[int, int],
             confidence: float) -> tuple[float, float, tuple[float, float]]:
    """(gap, one-sided p-value, interval) for the rise of (t - q) over (t0 - q0); each pair is (successes, trials).

    The Wald z for a difference-in-differences of four independent proportions; its variance is the sum of the
    four binomial variances.
    """
    rates = [k / n for k, n in (t, q, t0, q0)]
    gap = (rates[0] - rates[1]) - (rates[2] - rates[3])
    var = sum(r * (1 - r) / n for r, (_, n) in zip(rates, (t, q, t0, q0), strict=True))
    if var <= 0:
        return gap, (0.0 if gap > 0 else 1.0), (gap, gap)
    se = math.sqrt(var)
    z = normal_isf((1 - confidence) / 2)
    return gap, normal_sf(gap / se), (gap - z * se, gap + z * se)


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm–Bonferroni adjusted p-values, in the input order: reject where adjusted <= alpha."""
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: pvalues[i])
    adjusted = [1.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted


@dataclass(frozen=True, slots=True)
class ShareTest:
    """A share's rise over its baseline windows (`share_rise`): the decisive p-value, the quasi-binomial one, the
    Pearson dispersion of the baseline windows and the test's degrees of freedom."""

    p: float
    p_quasi: float
    dispersion: float
    df: int


def share_rise(k: int, n: int, windows: Sequence[tuple[int, int]]) -> ShareTest:
    """One-sided test that the share k/n is above the share of the baseline `windows` ((k_i, n_i) each), with their
    window-to-window spread (see the module docstring). Needs two or more baseline windows with trials."""
    windows = [(bk, bn) for bk, bn in windows if bn > 0]
    bk, bn = sum(w[0] for w in windows), sum(w[1] for w in windows)
    df = len(windows) - 1
    if df < 1 or n <= 0:
        raise ValueError("share_rise needs a current window and two or more baseline windows with trials")
    exact = rise_pvalue(k, n, bk, bn)
    p0, share = bk / bn, k / n
    if bk in (0, bn) or k == 0:  # no spread to measure, or nothing in the window: the exact test alone
        return ShareTest(exact, exact, 1.0, df)
    dispersion = sum((wk - wn * p0) ** 2 / (wn * p0 * (1 - p0)) for wk, wn in windows) / df
    if k == n:  # the logit of a share of 1 is infinite: as far in the tail as the data can go
        return ShareTest(exact, 0.0, dispersion, df)
    var = dispersion * (1 / (n * share * (1 - share)) + 1 / (bn * p0 * (1 - p0)))
    if var <= 0:  # every baseline window exactly at the pooled share: nothing scatters
        return ShareTest(exact, exact, dispersion, df)
    t = (math.log(share / (1 - share)) - math.log(p0 / (1 - p0))) / math.sqrt(var)
    quasi = t_sf(df, t)
    return ShareTest(max(exact, quasi), quasi, dispersion, df)


def share_interval(k: int, n: int, windows: Sequence[tuple[int, int]], dispersion: float, df: int,
                   confidence: float) -> tuple[float, float]:
    """Interval of a share's gap over its baseline windows' pooled share: Newcombe's, widened by the dispersion's
    square root and Student's t quantile where the baseline windows scatter more than binomial noise."""
    bk, bn = sum(w[0] for w in windows), sum(w[1] for w in windows)
    lo, hi = newcombe(k, n, bk, bn, confidence)
    if dispersion <= 1:
        return lo, hi
    gap = k / n - bk / bn
    widen = math.sqrt(dispersion) * t_isf(df, (1 - confidence) / 2) / normal_isf((1 - confidence) / 2)
    return gap - (gap - lo) * widen, gap + (hi - gap) * widen


@dataclass(frozen=True, slots=True)
class Amounts:
    """Sufficient statistics of outcome values on one side of a test: the predictions (exposure), the values'
    sum, and of the positive values their count and the sum and sum of squares of their natural logs. Additive,
    so the rest of a model outside one scope is a subtraction."""

    n: int
    total: float
    count: int
    log_sum: float
    log_sq: float

    def __add__(self, other: Amounts) -> Amounts:
        return Amounts(self.n + other.n, self.total + other.total, self.count + other.count,
                       self.log_sum + other.log_sum, self.log_sq + other.log_sq)

    def __sub__(self, other: Amounts) -> Amounts:
        return Amounts(self.n - other.n, self.total - other.total, self.count - other.count,
                       self.log_sum - other.log_sum, self.log_sq - other.log_sq)

    def log_moments(self) -> tuple[float, float]:
        """(mean, sample variance) of the log amounts; needs two or more."""
        mean = self.log_sum / self.count
        return mean, max(0.0, (self.log_sq - self.count * mean * mean) / (self.count - 1))


@dataclass(frozen=True, slots=True)
class AmountTest:
    """A value per prediction against its baseline (`amount_rise`): the decisive one-sided p-value, and its two
    parts' (1.0 for severity where the window has no positive amount, the baseline fewer than two, or no spread)."""

    p: float
    p_frequency: float
    p_severity: float


def amount_rise(current: Amounts, baseline: Amounts, higher: bool = True) -> AmountTest:
    """One-sided test that the value per prediction moved up (`higher`) or down from the baseline's, as claim
    frequency and claim severity (see the module docstring)."""
    c, n = min(current.count, current.n), current.n  # two valued outcomes of one prediction count once as a rate
    bc, bn = min(baseline.count, baseline.n), baseline.n
    p_freq = rise_pvalue(c, n, bc, bn) if higher else rise_pvalue(n - c, n, bn - bc, bn)
    p_sev = 1.0
    if current.count >= 1 and baseline.count >= 2:
        c1, c0 = current.count, baseline.count
        m1, m0 = current.log_sum / c1, baseline.log_sum / c0
        # the pooled variance: the two-sample t-test, exact for normal log amounts of one spread
        ss = (current.log_sq - c1 * m1 * m1) + (baseline.log_sq - c0 * m0 * m0)
        df = c1 + c0 - 2
        var = max(0.0, ss) / df * (1 / c1 + 1 / c0)
        if var > 0:
            t = (m1 - m0) / math.sqrt(var)
            p_sev = t_sf(df, t) if higher else t_sf(df, -t)
    return AmountTest(min(1.0, 2 * min(p_freq, p_sev)), p_freq, p_sev)


def amount_interval(current: Amounts, baseline: Amounts, confidence: float) -> tuple[float, float]:
    """Interval of the gap of the value per prediction (`total / n`) over the baseline's, from `amount_rise`'s
    model: log(value per prediction) = log(frequency) + log(mean amount), the frequency's log variance (1 - f) /
    claims (the binomial's, by the delta method), the mean amount's (exp(s2) - 1) / claims (the squared
    coefficient of variation of lognormal amounts with the pooled log variance s2, over the claims: the delta
    method for the plain mean the alert reports); the two sides' add, and the interval of the log ratio (Student's
    t, the t-test's degrees of freedom) maps back to value per prediction, skewed as money is. A window without a
    claim fell by all of its baseline: its upper end is the frequency's alone (Wilson's upper bound on no claim)."""
    rate0 = baseline.total / baseline.n
    f0 = baseline.count / baseline.n
    if current.count == 0 or current.total <= 0:
        return -rate0, rate0 * (wilson(0, current.n, confidence)[1] / f0 - 1)
    c1, c0 = current.count, baseline.count
    m1, m0 = current.log_sum / c1, baseline.log_sum / c0
    df = max(1, c1 + c0 - 2)
    s2 = max(0.0, (current.log_sq - c1 * m1 * m1) + (baseline.log_sq - c0 * m0 * m0)) / df
    var = sum((1 - min(1.0, c / n)) / c + math.expm1(s2) / c for c, n in ((c1, current.n), (c0, baseline.n)))
    half = t_isf(df, (1 - confidence) / 2) * math.sqrt(var)
    ratio = (current.total / current.n) / rate0
    return rate0 * (ratio * math.exp(-half) - 1), rate0 * (ratio * math.exp(half) - 1)
