"""The statistics of an experiment, from each variant's sufficient statistics (units, mean,
sample variance), on scipy's distributions. No database here: the tests compare every
number with scipy.stats or a closed form.

Conventions (GrowthBook's engine, the test oracle of STACK.md, does the same):
- the p-value of a mean metric is Welch's t-test on the difference of means (exactly
  scipy.stats.ttest_ind(equal_var=False)); of a conversion metric, the pooled
  two-proportion z-test (equal to the 2x2 chi-square without continuity correction);
- the lift is relative, (treatment - control) / control, its variance by the delta method,
  its interval a t interval with Welch's degrees of freedom (normal for proportions);
- chance to beat control and expected loss take the lift's sampling distribution as its
  posterior (a flat prior): N(lift, se^2);
- the sequential interval is Waudby-Smith et al.'s asymptotic confidence sequence
  (arXiv 2103.06476): valid at every look at once, so looking daily does not inflate the
  false-positive rate the way re-reading a fixed-horizon interval does.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any


@functools.cache
def _scipy_stats() -> ModuleType:
    # scipy.stats takes ~1 s to import: loaded with the first result, not at django.setup()
    # (every web and job worker imports this module through the conversation turn).
    from scipy import stats

    return stats


class _LazyStats:
    def __getattr__(self, name: str) -> Any:
        return getattr(_scipy_stats(), name)


stats: Any = _LazyStats()

SRM_THRESHOLD = 0.001
SEQUENTIAL_TUNING = 5000.0  # the total sample size at which the sequential interval is tightest
DEFAULT_POWER = 0.8


@dataclass(frozen=True)
class Sample:
    """One variant's metric: units, mean and sample variance (ddof=1; p(1-p) for a
    proportion)."""

    n: int
    mean: float
    variance: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Sample:
        n = len(values)
        mean = math.fsum(values) / n if n else 0.0
        variance = math.fsum((v - mean) ** 2 for v in values) / (n - 1) if n > 1 else 0.0
        return cls(n, mean, variance)

    @classmethod
    def proportion(cls, successes: int, n: int) -> Sample:
        p = successes / n if n else 0.0
        return cls(n, p, p * (1 - p))

    @property
    def mean_variance(self) -> float:
        """The variance of the mean: s^2 / n."""
        return self.variance / self.n


@dataclass(frozen=True)
class Lift:
    """A treatment against control: the relative lift, its standard error (delta method), a
    fixed-horizon and a sequential interval, the p-value, and the Bayesian summaries."""

    point: float
    se: float
    ci_low: float
    ci_high: float
    sequential_low: float
    sequential_high: float
    p_value: float
    chance_to_beat_control: float
    expected_loss: float
    absolute: float  # treatment mean - control mean


def welch(control: Sample, treatment: Sample) -> tuple[float, float, float]:
    """Welch's t-test on the difference of means: (t, degrees of freedom, two-sided p)."""
    vc, vt = control.mean_variance, treatment.mean_variance
    se = math.sqrt(vc + vt)
    t = (treatment.mean - control.mean) / se
    df = (vc + vt) ** 2 / (vc**2 / (control.n - 1) + vt**2 / (treatment.n - 1))
    return t, df, float(2 * stats.t.sf(abs(t), df))


def two_proportion_z(control: Sample, treatment: Sample) -> tuple[float, float]:
    """The pooled two-proportion z-test: (z, two-sided p)."""
    pooled = (control.mean * control.n + treatment.mean * treatment.n) / (control.n + treatment.n)
    se = math.sqrt(pooled * (1 - pooled) * (1 / control.n + 1 / treatment.n))
    z = (treatment.mean - control.mean) / se
    return z, float(2 * stats.norm.sf(abs(z)))


def relative_lift_variance(control: Sample, treatment: Sample) -> float:
    """Var(mean_t / mean_c - 1) by the delta method (the means independent)."""
    mc, mt = control.mean, treatment.mean
    return treatment.mean_variance / mc**2 + mt**2 * control.mean_variance / mc**4


def sequential_halfwidth(
    se: float, n_total: int, alpha: float, tuning: float = SEQUENTIAL_TUNING
) -> float:
    """The half-width of the asymptotic confidence sequence for an estimate with standard
    error ``se`` from ``n_total`` units (Waudby-Smith et al., Theorem 2.2): with
    sigma^2 = se^2 * n and rho tuned so the sequence is tightest at n = ``tuning``,
    sigma * sqrt(2 (n rho^2 + 1) / (n^2 rho^2) * log(sqrt(n rho^2 + 1) / alpha))."""
    log_alpha = -2 * math.log(alpha)
    rho2 = (log_alpha + math.log(log_alpha + 1)) / tuning
    n = n_total
    sigma2 = se**2 * n
    return math.sqrt(
        sigma2 * 2 * (n * rho2 + 1) / (n**2 * rho2) * math.log(math.sqrt(n * rho2 + 1) / alpha)
    )


def chance_to_beat(point: float, se: float, *, higher_is_better: bool) -> float:
    """P(the treatment is better than control) under the posterior N(point, se^2)."""
    if se == 0:
        better = point > 0 if higher_is_better else point < 0
        return 1.0 if better else 0.0 if point != 0 else 0.5
    z = point / se
    return float(stats.norm.cdf(z if higher_is_better else -z))


def expected_loss(point: float, se: float, *, higher_is_better: bool) -> float:
    """E[max(0, -gain)] for gain ~ N(mu, se^2), mu the lift in the good direction: how much
    (relatively) choosing the treatment loses on average when it is worse. Closed form:
    se * phi(mu / se) - mu * Phi(-mu / se)."""
    mu = point if higher_is_better else -point
    if se == 0:
        return max(0.0, -mu)
    return float(se * stats.norm.pdf(mu / se) - mu * stats.norm.cdf(-mu / se))


def compare(
    control: Sample, treatment: Sample, *, alpha: float, binomial: bool, higher_is_better: bool
) -> Lift | None:
    """Treatment against control; None when it cannot be computed (fewer than two units in
    an arm, a control mean of zero, or no variance at all)."""
    if control.n < 2 or treatment.n < 2 or control.mean == 0:
        return None
    variance = relative_lift_variance(control, treatment)
    if variance <= 0:
        return None
    se = math.sqrt(variance)
    point = treatment.mean / control.mean - 1
    if binomial:
        _, p_value = two_proportion_z(control, treatment)
        width = float(stats.norm.ppf(1 - alpha / 2)) * se
    else:
        _, df, p_value = welch(control, treatment)
        width = float(stats.t.ppf(1 - alpha / 2, df)) * se
    sequential = sequential_halfwidth(se, control.n + treatment.n, alpha)
    return Lift(
        point=point,
        se=se,
        ci_low=point - width,
        ci_high=point + width,
        sequential_low=point - sequential,
        sequential_high=point + sequential,
        p_value=p_value,
        chance_to_beat_control=chance_to_beat(point, se, higher_is_better=higher_is_better),
        expected_loss=expected_loss(point, se, higher_is_better=higher_is_better),
        absolute=treatment.mean - control.mean,
    )


def srm(observed: Sequence[int], weights: Sequence[float]) -> tuple[float, float, list[float]]:
    """Sample-ratio mismatch: Pearson's chi-square of the units per variant against the
    split the weights promise. Returns (chi-square, p, expected counts)."""
    total = sum(observed)
    weight_sum = sum(weights)
    expected = [total * w / weight_sum for w in weights]
    pairs = [(o, e) for o, e in zip(observed, expected, strict=True) if e > 0]
    chi2 = math.fsum((o - e) ** 2 / e for o, e in pairs)
    df = len(pairs) - 1
    p = float(stats.chi2.sf(chi2, df)) if df > 0 and total else 1.0
    return chi2, p, expected


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values, in the order given (step-down, monotone)."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[index]))
        adjusted[index] = running
    return adjusted


def sample_size_per_variant(
    *, control: Sample, mde: float, alpha: float, power: float = DEFAULT_POWER
) -> int | None:
    """Units each arm needs for a two-sided test at ``alpha`` to detect a relative change
    of ``mde`` with probability ``power``, both arms with control's variance:
    n = 2 (z_{1-alpha/2} + z_power)^2 sigma^2 / (mde * mean)^2."""
    delta = mde * abs(control.mean)
    if delta == 0 or control.variance <= 0:
        return None
    z = float(stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power))
    return math.ceil(2 * z**2 * control.variance / delta**2)


def power_at(*, control: Sample, n_treatment: int, mde: float, alpha: float) -> float | None:
    """The probability the two-sided test at ``alpha`` detects a relative change of ``mde``
    with the units collected so far (both arms with control's variance)."""
    delta = mde * abs(control.mean)
    if delta == 0 or control.variance <= 0 or control.n == 0 or n_treatment == 0:
        return None
    se = math.sqrt(control.variance / control.n + control.variance / n_treatment)
    z = float(stats.norm.ppf(1 - alpha / 2))
    return float(stats.norm.cdf(delta / se - z) + stats.norm.cdf(-delta / se - z))
