"""Golden values for service.analysis.stats, each with its source, and an A/A simulation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import binom

from service.analysis.stats import (
    ProportionStats,
    cohens_h,
    power_analysis,
    rate_interval,
    srm_check,
    two_proportion_test,
)

# --- sample ratio mismatch -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("observed", "weights", "statistic", "p_value"),
    [
        # scipy.stats.chisquare docs: chisquare([16, 18, 16, 14, 12, 12])
        # -> statistic 2.0, p-value 0.84914503608460956
        pytest.param([16, 18, 16, 14, 12, 12], [1] * 6, 2.0, 0.84914503608460956, id="equal"),
        # scipy.stats.chisquare docs, f_exp=[16, 16, 16, 16, 16, 8] -> 3.5, 0.62338762774958223
        pytest.param(
            [16, 18, 16, 14, 12, 12], [16, 16, 16, 16, 16, 8], 3.5, 0.62338762774958223, id="f_exp"
        ),
    ],
)
def test_srm_matches_scipy_docs(observed, weights, statistic, p_value):
    arms = [f"arm{i}" for i in range(len(observed))]
    result = srm_check(
        dict(zip(arms, observed, strict=True)), dict(zip(arms, weights, strict=True))
    )
    assert result.statistic == pytest.approx(statistic)
    assert result.p_value == pytest.approx(p_value, rel=1e-9)
    assert result.degrees_of_freedom == len(arms) - 1
    assert result.healthy
    assert result.method == "chi-square goodness of fit"


def test_srm_flags_a_broken_split():
    # 50:50 intended, 10,500 vs 9,500 observed: X^2 = 2 * 500^2 / 10,000 = 50, p ~ 1.5e-12.
    result = srm_check({"control": 10_500, "treatment": 9_500}, {"control": 50, "treatment": 50})
    assert result.statistic == pytest.approx(50.0)
    assert result.p_value < 1e-11
    assert not result.healthy
    assert result.expected == {"control": 10_000, "treatment": 10_000}


def test_srm_respects_an_unequal_split():
    result = srm_check({"control": 9_000, "treatment": 1_000}, {"control": 90, "treatment": 10})
    assert result.statistic == pytest.approx(0.0)
    assert result.healthy


@pytest.mark.parametrize(
    ("observed", "weights"),
    [
        pytest.param({"a": 1, "b": 1}, {"a": 1, "c": 1}, id="different-arms"),
        pytest.param({"a": 0, "b": 0}, {"a": 1, "b": 1}, id="no-users"),
        pytest.param({"a": 5}, {"a": 1}, id="one-arm"),
        pytest.param({"a": 5, "b": 5}, {"a": 1, "b": 0}, id="zero-weight"),
    ],
)
def test_srm_rejects_unusable_input(observed, weights):
    with pytest.raises(ValueError):
        srm_check(observed, weights)


# --- two proportions -------------------------------------------------------------------------


def test_z_test_matches_statsmodels_docs():
    # statsmodels proportions_ztest docs: count=[5, 12], nobs=[83, 99] -> p-value 0.159.
    result = two_proportion_test(ProportionStats("c", 83, 5), ProportionStats("t", 99, 12))
    assert result.p_value == pytest.approx(0.159, abs=5e-4)
    assert result.statistic > 0  # treatment (12/99) above control (5/83)
    assert result.method == "two-proportion z-test (pooled variance)"
    assert not result.significant


@pytest.mark.parametrize(
    ("treatment", "control", "low", "high"),
    [
        # Newcombe (1998), Stat Med 17:873-890, Table II, method 10 (hybrid score, no CC).
        pytest.param((56, 70), (48, 80), 0.0524, 0.3339, id="newcombe-a"),
        pytest.param((9, 10), (3, 10), 0.1705, 0.8090, id="newcombe-b"),
    ],
)
def test_difference_interval_matches_newcombe(treatment, control, low, high):
    result = two_proportion_test(
        ProportionStats("c", control[1], control[0]),
        ProportionStats("t", treatment[1], treatment[0]),
    )
    interval = result.difference_interval
    assert (interval.low, interval.high) == pytest.approx((low, high), abs=5e-5)
    assert interval.level == pytest.approx(0.95)
    assert interval.method == "Newcombe hybrid score"


def test_aspirin_study_matches_agresti():
    # Agresti, An Introduction to Categorical Data Analysis (2nd ed.), sections 2.2-2.4:
    # Physicians' Health Study, MI in 189 of 11,034 on placebo vs 104 of 11,037 on aspirin.
    # Difference 0.0077 (95% CI 0.005 to 0.011), relative risk 1.82 (95% CI 1.43 to 2.30),
    # Pearson X^2 = 25.01 (the square of the pooled z statistic).
    aspirin, placebo = (
        ProportionStats("aspirin", 11_037, 104),
        ProportionStats("placebo", 11_034, 189),
    )
    result = two_proportion_test(control=aspirin, treatment=placebo)
    assert result.difference == pytest.approx(0.0077, abs=5e-5)
    diff = result.difference_interval
    assert (diff.low, diff.high) == pytest.approx((0.005, 0.011), abs=5e-4)
    assert result.relative_lift == pytest.approx(1.82 - 1, abs=5e-3)
    lift = result.relative_lift_interval
    assert lift is not None
    assert (lift.low + 1, lift.high + 1) == pytest.approx((1.43, 2.30), abs=0.01)
    assert result.statistic**2 == pytest.approx(25.01, abs=0.01)
    assert result.significant


def test_log_ratio_interval_is_katz_formula():
    # Katz et al. (1978): log RR +- z * sqrt(1/x1 - 1/n1 + 1/x2 - 1/n2).
    control, treatment = ProportionStats("c", 2_000, 300), ProportionStats("t", 2_000, 360)
    result = two_proportion_test(control, treatment, alpha=0.1)
    rr = (360 / 2000) / (300 / 2000)
    se = math.sqrt(1 / 360 - 1 / 2000 + 1 / 300 - 1 / 2000)
    z = 1.6448536269514722  # 95th percentile of the standard normal, for a 90% interval
    lift = result.relative_lift_interval
    assert lift is not None
    assert lift.low == pytest.approx(rr * math.exp(-z * se) - 1, rel=1e-9)
    assert lift.high == pytest.approx(rr * math.exp(z * se) - 1, rel=1e-9)
    assert lift.level == pytest.approx(0.9)


@pytest.mark.parametrize(
    ("control", "treatment"),
    [
        pytest.param((500, 0), (500, 0), id="nobody-converts"),
        pytest.param((50, 50), (40, 40), id="all"),
    ],
)
def test_degenerate_rates_give_no_evidence(control, treatment):
    result = two_proportion_test(ProportionStats("c", *control), ProportionStats("t", *treatment))
    assert result.statistic == 0.0
    assert result.p_value == 1.0
    assert result.difference == 0.0
    assert not result.significant


def test_zero_control_rate_has_no_relative_lift():
    result = two_proportion_test(ProportionStats("c", 100, 0), ProportionStats("t", 100, 5))
    assert result.relative_lift is None
    assert result.relative_lift_interval is None
    assert result.difference_interval.low < 0.05 < result.difference_interval.high


def test_comparison_needs_users_in_both_arms():
    with pytest.raises(ValueError, match="both arms"):
        two_proportion_test(ProportionStats("c", 0, 0), ProportionStats("t", 10, 1))


def test_arm_rejects_more_conversions_than_users():
    with pytest.raises(ValueError, match="conversions"):
        ProportionStats("c", 10, 11)


def test_rate_interval_is_wilson():
    # Wilson (1927) score interval, 0 of 10 at 95%: [0, z^2 / (n + z^2)] = [0, 0.2775].
    interval = rate_interval(ProportionStats("c", 10, 0))
    assert interval is not None
    assert (interval.low, interval.high) == pytest.approx((0.0, 0.27753), abs=1e-5)
    assert rate_interval(ProportionStats("c", 0, 0)) is None


# --- power -----------------------------------------------------------------------------------


def test_users_needed_matches_cohen():
    # Cohen (1988), Statistical Power Analysis, Table 6.4.1: h = 0.20, two-sided alpha 0.05,
    # power 0.80 -> n = 392 per group (normal approximation 392.44).
    baseline = 0.5
    target = math.sin(math.asin(math.sqrt(baseline)) + 0.1) ** 2  # h = 0.2 exactly
    arms = ProportionStats("c", 1_000, 500), ProportionStats("t", 1_000, 500)
    result = power_analysis(*arms, target_lift=target / baseline - 1)
    assert cohens_h(baseline, target) == pytest.approx(0.2)
    assert result.users_needed_per_arm == 393  # ceil(392.44)


def test_minimum_detectable_effect_round_trips():
    # At exactly the sample size needed for a lift, that lift is the minimum detectable one
    # and the power to detect it is the target power.
    ten_percent = ProportionStats("c", 10_000, 1_000), ProportionStats("t", 10_000, 1_000)
    n = power_analysis(*ten_percent, target_lift=0.1).users_needed_per_arm
    assert n is not None
    at_n = ProportionStats("c", n, n // 10), ProportionStats("t", n, n // 10)
    result = power_analysis(*at_n, target_lift=0.1)
    assert result.minimum_detectable_lift == pytest.approx(0.1, abs=2e-3)
    assert result.power_at_target_lift == pytest.approx(0.8, abs=2e-3)
    assert power_analysis(*at_n, target_lift=0.05).power_at_target_lift < 0.8


def test_power_grows_with_users():
    small = power_analysis(ProportionStats("c", 500, 150), ProportionStats("t", 500, 150))
    large = power_analysis(
        ProportionStats("c", 50_000, 15_000), ProportionStats("t", 50_000, 15_000)
    )
    assert small.power_at_target_lift < large.power_at_target_lift
    assert small.minimum_detectable_lift > large.minimum_detectable_lift
    assert large.method.startswith("normal approximation on Cohen's h")


# --- simulation ------------------------------------------------------------------------------


def test_aa_false_positive_rate_is_alpha():
    """200 A/A tests: the false positive rate is within binomial tolerance of alpha.

    Also checks that the Newcombe interval covers the true (zero) difference at about 95%.
    """
    rng = np.random.default_rng(20261125)
    replicates, users, rate, alpha = 200, 2_000, 0.3, 0.05
    conversions = rng.binomial(users, rate, size=(replicates, 2))
    results = [
        two_proportion_test(
            ProportionStats("c", users, int(c)), ProportionStats("t", users, int(t)), alpha
        )
        for c, t in conversions
    ]
    false_positives = sum(r.significant for r in results)
    # Two-sided 99.9% acceptance region of Binomial(200, 0.05): about 2 to 21.
    low, high = binom.ppf(0.0005, replicates, alpha), binom.ppf(0.9995, replicates, alpha)
    assert low <= false_positives <= high
    misses = sum(not r.difference_interval.contains(0.0) for r in results)
    assert low <= misses <= high
