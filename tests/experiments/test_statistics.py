"""Every number of experiments.statistics against scipy.stats or a closed form, on generated
data (no database)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate, stats

from experiments import statistics
from experiments.statistics import Sample


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20261215)


def test_mean_and_variance_are_numpys_with_one_degree_of_freedom(rng):
    values = rng.gamma(2.0, 150.0, size=537)

    sample = Sample.of(list(values))

    assert sample.n == 537
    assert sample.mean == pytest.approx(np.mean(values), rel=1e-12)
    assert sample.variance == pytest.approx(np.var(values, ddof=1), rel=1e-12)


@pytest.mark.parametrize("sizes", [(40, 55), (400, 380), (3000, 2900)])
def test_welch_matches_scipys_unequal_variance_t_test(rng, sizes):
    control = rng.normal(100, 20, size=sizes[0])
    treatment = rng.normal(104, 35, size=sizes[1])

    t, df, p = statistics.welch(Sample.of(list(control)), Sample.of(list(treatment)))
    expected = stats.ttest_ind(treatment, control, equal_var=False)

    assert t == pytest.approx(expected.statistic, rel=1e-9)
    assert p == pytest.approx(expected.pvalue, rel=1e-9)
    assert df == pytest.approx(expected.df, rel=1e-9)


def test_the_two_proportion_z_test_is_the_uncorrected_chi_square_of_the_2x2_table():
    control, treatment = Sample.proportion(120, 1000), Sample.proportion(151, 1010)

    z, p = statistics.two_proportion_z(control, treatment)
    chi2, p_chi2, _, _ = stats.chi2_contingency(
        [[120, 1000 - 120], [151, 1010 - 151]], correction=False
    )

    assert z**2 == pytest.approx(chi2, rel=1e-10)
    assert p == pytest.approx(p_chi2, rel=1e-10)


def test_a_proportions_variance_is_p_times_one_minus_p():
    sample = Sample.proportion(30, 200)

    assert (sample.mean, sample.variance) == (0.15, pytest.approx(0.15 * 0.85))


def test_the_relative_lift_and_its_interval_follow_the_delta_method(rng):
    raw_control, raw_treatment = rng.normal(50, 10, size=800), rng.normal(53, 12, size=760)
    control, treatment = Sample.of(list(raw_control)), Sample.of(list(raw_treatment))

    lift = statistics.compare(control, treatment, alpha=0.05, binomial=False, higher_is_better=True)

    mc, mt = raw_control.mean(), raw_treatment.mean()
    vc, vt = raw_control.var(ddof=1) / 800, raw_treatment.var(ddof=1) / 760
    variance = vt / mc**2 + mt**2 * vc / mc**4
    welch = stats.ttest_ind(raw_treatment, raw_control, equal_var=False)
    half = stats.t.ppf(0.975, welch.df) * math.sqrt(variance)
    assert lift.point == pytest.approx(mt / mc - 1, rel=1e-9)
    assert lift.se == pytest.approx(math.sqrt(variance), rel=1e-9)
    assert (lift.ci_low, lift.ci_high) == (
        pytest.approx(mt / mc - 1 - half, rel=1e-9),
        pytest.approx(mt / mc - 1 + half, rel=1e-9),
    )
    assert lift.p_value == pytest.approx(welch.pvalue, rel=1e-9)
    assert lift.absolute == pytest.approx(mt - mc, rel=1e-9)


def test_the_delta_method_interval_covers_the_true_lift_at_its_level(rng):
    # 2,000 simulated experiments with a true lift of +5%: a 95% interval should miss it
    # about 5% of the time (binomial sd of that rate at 2,000 runs: 0.5 points).
    true_lift, misses, runs = 0.05, 0, 2000
    for _ in range(runs):
        control = Sample.of(list(rng.exponential(10.0, size=300)))
        treatment = Sample.of(list(rng.exponential(10.0 * (1 + true_lift), size=300)))
        lift = statistics.compare(
            control, treatment, alpha=0.05, binomial=False, higher_is_better=True
        )
        misses += not lift.ci_low <= true_lift <= lift.ci_high
    assert 0.035 <= misses / runs <= 0.065


def test_a_conversion_lift_uses_a_normal_interval_and_the_z_test():
    control, treatment = Sample.proportion(200, 2000), Sample.proportion(250, 2000)

    lift = statistics.compare(control, treatment, alpha=0.05, binomial=True, higher_is_better=True)

    se = math.sqrt((0.125 * 0.875 / 2000) / 0.1**2 + 0.125**2 * (0.1 * 0.9 / 2000) / 0.1**4)
    assert lift.point == pytest.approx(0.25)
    assert lift.ci_high - lift.point == pytest.approx(stats.norm.ppf(0.975) * se, rel=1e-12)
    assert lift.p_value == pytest.approx(statistics.two_proportion_z(control, treatment)[1])


def test_chance_to_beat_control_is_the_normal_posterior_mass_above_zero():
    assert statistics.chance_to_beat(0.02, 0.01, higher_is_better=True) == pytest.approx(
        stats.norm.cdf(2.0)
    )
    # Lower is better (latency): a positive lift is bad.
    assert statistics.chance_to_beat(0.02, 0.01, higher_is_better=False) == pytest.approx(
        stats.norm.cdf(-2.0)
    )


def test_chance_to_beat_control_agrees_with_beta_posteriors_for_conversions(rng):
    control, treatment = Sample.proportion(480, 4000), Sample.proportion(540, 4000)
    lift = statistics.compare(control, treatment, alpha=0.05, binomial=True, higher_is_better=True)

    draws_c = rng.beta(1 + 480, 1 + 4000 - 480, size=400_000)
    draws_t = rng.beta(1 + 540, 1 + 4000 - 540, size=400_000)

    assert lift.chance_to_beat_control == pytest.approx(np.mean(draws_t > draws_c), abs=0.01)


def test_expected_loss_is_the_integral_of_the_loss_under_the_posterior():
    for mu, se in ((0.03, 0.02), (-0.01, 0.015), (0.0, 0.05)):
        integral, _ = integrate.quad(
            lambda x, mu=mu, se=se: max(0.0, -x) * stats.norm.pdf(x, mu, se), -1, 1, points=[0]
        )
        assert statistics.expected_loss(mu, se, higher_is_better=True) == pytest.approx(
            integral, rel=1e-7
        )
        # Lower is better: the loss is the mass above zero.
        assert statistics.expected_loss(-mu, se, higher_is_better=False) == pytest.approx(
            integral, rel=1e-7
        )


def test_srm_is_scipys_chi_square_against_the_weights():
    observed, weights = [5210, 4790], [1, 1]

    chi2, p, expected = statistics.srm(observed, weights)
    reference = stats.chisquare(observed, [5000, 5000])

    assert expected == [5000, 5000]
    assert chi2 == pytest.approx(reference.statistic)
    assert p == pytest.approx(reference.pvalue)
    assert p < statistics.SRM_THRESHOLD  # 52/48 of 10,000 is a broken split


def test_srm_respects_unequal_weights_and_passes_a_fair_split(rng):
    counts = np.bincount(rng.choice(3, size=9000, p=[0.5, 0.25, 0.25]), minlength=3)

    _, p, _ = statistics.srm(list(counts), [2, 1, 1])
    reference = stats.chisquare(counts, [4500, 2250, 2250])

    assert p == pytest.approx(reference.pvalue)
    assert p > statistics.SRM_THRESHOLD


def test_holm_adjusts_step_down_and_stays_monotone():
    assert statistics.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert statistics.holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])
    assert statistics.holm([]) == []


def test_the_sample_size_gives_the_power_asked_for():
    control = Sample.proportion(100, 1000)  # a 10% conversion rate

    n = statistics.sample_size_per_variant(control=control, mde=0.1, alpha=0.05)

    # The textbook figure: 2 (1.96 + 0.8416)^2 * 0.09 / 0.01^2.
    z = stats.norm.ppf(0.975) + stats.norm.ppf(0.8)
    assert n == math.ceil(2 * z**2 * 0.09 / 0.01**2) == 14128
    at_n = Sample(n, 0.1, 0.09)
    assert statistics.power_at(control=at_n, n_treatment=n, mde=0.1, alpha=0.05) == (
        pytest.approx(0.8, abs=1e-3)
    )


def test_power_matches_a_simulation_of_the_test(rng):
    control = Sample(500, 10.0, 4.0)  # sd 2
    power = statistics.power_at(control=control, n_treatment=500, mde=0.03, alpha=0.05)

    rejections = 0
    for _ in range(2000):
        a = rng.normal(10.0, 2.0, size=500)
        b = rng.normal(10.3, 2.0, size=500)
        rejections += stats.ttest_ind(b, a, equal_var=False).pvalue < 0.05
    assert power == pytest.approx(rejections / 2000, abs=0.035)


def test_the_sequential_halfwidth_is_the_confidence_sequences_closed_form():
    se, n, alpha, tuning = 0.02, 4000, 0.05, 5000.0

    rho2 = (-2 * math.log(alpha) + math.log(-2 * math.log(alpha) + 1)) / tuning
    sigma2 = se**2 * n
    expected = math.sqrt(
        sigma2 * 2 * (n * rho2 + 1) / (n**2 * rho2) * math.log(math.sqrt(n * rho2 + 1) / alpha)
    )

    assert statistics.sequential_halfwidth(se, n, alpha) == pytest.approx(expected, rel=1e-12)
    # Always wider than the fixed-horizon interval at the same level.
    assert expected > stats.norm.ppf(0.975) * se


def test_peeking_every_day_inflates_the_fixed_interval_but_not_the_sequential_one(rng):
    # A/A tests (no true difference) looked at after each of 30 days of 100 units per arm:
    # the share of experiments that ever show an interval excluding zero. Reading the
    # fixed-horizon interval every day declares far more than 5% of them "significant";
    # the always-valid interval stays under its 5%.
    runs, days, per_day = 2000, 30, 100
    control = rng.normal(10.0, 3.0, size=(runs, days * per_day))
    treatment = rng.normal(10.0, 3.0, size=(runs, days * per_day))
    fixed_hits = np.zeros(runs, dtype=bool)
    sequential_hits = np.zeros(runs, dtype=bool)
    z = stats.norm.ppf(0.975)
    for day in range(1, days + 1):
        n = day * per_day
        mc, mt = control[:, :n].mean(axis=1), treatment[:, :n].mean(axis=1)
        vc, vt = control[:, :n].var(axis=1, ddof=1) / n, treatment[:, :n].var(axis=1, ddof=1) / n
        lift = mt / mc - 1
        se = np.sqrt(vt / mc**2 + mt**2 * vc / mc**4)
        fixed_hits |= np.abs(lift) > z * se
        half = np.array([statistics.sequential_halfwidth(s, 2 * n, 0.05) for s in se])
        sequential_hits |= np.abs(lift) > half
    assert fixed_hits.mean() > 0.15
    assert sequential_hits.mean() <= 0.05


def test_nothing_is_computed_without_two_units_per_arm_or_with_a_zero_control():
    one = Sample(1, 5.0, 0.0)
    many = Sample(50, 5.0, 1.0)

    assert statistics.compare(one, many, alpha=0.05, binomial=False, higher_is_better=True) is None
    assert (
        statistics.compare(
            Sample(50, 0.0, 1.0), many, alpha=0.05, binomial=False, higher_is_better=True
        )
        is None
    )
