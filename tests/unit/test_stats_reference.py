"""Published values from the reference projects' own test suites, reproduced to 1e-4.

Each case names the file it comes from (repository, path, and the test in it):
- statsmodels: statsmodels/stats/tests/test_proportion.py (its values are R's PropCIs and
  Stata's, as that file says);
- GrowthBook's gbstats: packages/stats/tests/frequentist/test_tests.py and
  packages/stats/tests/bayesian/test_tests.py (growthbook/growthbook);
- Spotify's confidence: tests/frequentist/test_bounds.py and tests/frequentist/test_ztest.py
  (spotify/confidence).
"""

from __future__ import annotations

import pytest
from scipy import stats as scipy_stats

from service.analysis.stats import (
    ArmEstimate,
    GaussianPrior,
    MomentStats,
    ProportionStats,
    bayesian_means,
    bayesian_proportions,
    compare,
    cuped_test,
    difference_interval,
    group_sequential_bounds,
    non_inferiority,
    proportion_power,
    welch_test,
)
from service.analysis.stats.intervals import welch_df

TOL = 1e-4


# --- statsmodels: statsmodels/stats/tests/test_proportion.py ---------------------------------


@pytest.mark.parametrize(
    ("method", "expected"),
    [
        # test_confint_2indep_propcis: R PropCIs wald2ci(7, 34, 1, 34, 0.95, adjust="AC")
        ("agresti-caffo", (0.01161167, 0.32172166)),
        # same test: wald2ci(7, 34, 1, 34, 0.95, adjust="Wald")
        ("wald", (0.02916942, 0.32377176)),
        # test_confint_2indep: Fagerland et al. 2015, Newcombe hybrid score (3 decimals there)
        ("newcomb", (0.019, 0.340)),
    ],
)
def test_difference_intervals_match_statsmodels_suite(method, expected):
    interval = difference_interval(
        ProportionStats("control", 34, 1), ProportionStats("treatment", 34, 7), 0.05, method
    )
    tol = TOL if method != "newcomb" else 5e-3  # the published Newcombe values have 3 decimals
    assert (interval.low, interval.high) == pytest.approx(expected, abs=tol)


@pytest.mark.parametrize(
    ("difference", "control_rate", "users", "ratio", "power"),
    [
        (-0.25, 0.75, 76.70692, 1.0, 0.9),  # test_power_2indep: "test against R"
        (-0.014, 0.015, 550, 1.0, 0.7415600),  # same test: "Stata example"
        (-0.1, 0.2, 154, 2.0, 0.7995659211532175),  # same test: nobs ratio != 1 (Stata)
    ],
)
def test_proportion_power_matches_statsmodels_suite(difference, control_rate, users, ratio, power):
    assert proportion_power(difference, control_rate, users, ratio) == pytest.approx(power, abs=TOL)


# --- gbstats: packages/stats/tests/frequentist/test_tests.py ---------------------------------

# TestTwoSidedTTest.setUp: SampleMeanStatistic(sum, sum_squares, n) per arm
GB_A = MomentStats("control", 3407, 1396.87, 52377.9767)
GB_B = MomentStats("treatment", 3461, 2422.7, 134698.29)


def test_welch_difference_matches_gbstats_absolute():
    # test_two_sided_ttest_absolute: expected 0.29, ci (0.04538, 0.53462), stddev 0.12478,
    # pValue 0.02016
    result = welch_test(GB_A, GB_B)
    assert result.difference == pytest.approx(0.29, abs=TOL)
    assert (result.difference_interval.low, result.difference_interval.high) == pytest.approx(
        (0.04538, 0.53462), abs=TOL
    )
    assert result.standard_error == pytest.approx(0.12478, abs=TOL)
    assert result.p_value == pytest.approx(0.02016, abs=TOL)


def test_welch_relative_lift_matches_gbstats_relative():
    # test_two_sided_ttest: expected 0.70732, ci (-0.03526, 1.44989), stddev 0.37879,
    # pValue 0.06191. The same data: p = 0.020 for the difference, 0.062 for the lift; each
    # check carries its own estimand's p-value, never the other's.
    result = welch_test(GB_A, GB_B)
    interval = result.relative_lift_interval
    assert result.relative_lift == pytest.approx(0.70732, abs=TOL)
    assert (interval.low, interval.high) == pytest.approx((-0.03526, 1.44989), abs=TOL)
    assert result.relative_lift_standard_error == pytest.approx(0.37879, abs=TOL)
    assert result.relative_lift_p_value == pytest.approx(0.06191, abs=TOL)


def test_binomial_relative_lift_matches_gbstats():
    # test_two_sided_ttest_binom: ProportionStatistic(sum=14, n=28) vs (sum=16, n=30):
    # ci (-0.47767, 0.61101), stddev 0.2717, pValue 0.80707 (variance p (1 - p) per user)
    p_a, p_b = 14 / 28, 16 / 30
    var_a, var_b = p_a * (1 - p_a), p_b * (1 - p_b)
    result = compare(
        "gbstats binomial",
        "converted",
        ArmEstimate(p_a, var_a / 28, 28),
        ArmEstimate(p_b, var_b / 30, 30),
        0.05,
        welch_df(var_a, 28, var_b, 30),
        "relative lift",
    )
    interval = result.relative_lift_interval
    assert (interval.low, interval.high) == pytest.approx((-0.47767, 0.61101), abs=TOL)
    assert result.relative_lift_standard_error == pytest.approx(0.2717, abs=TOL)
    assert result.relative_lift_p_value == pytest.approx(0.80707, abs=TOL)


def test_cuped_matches_gbstats_regression_adjustment():
    # TestSequentialTTest.test_sequential_test_runs_ra: RegressionAdjustedStatistic with
    # post (1396.87, 52377.9767, n=3000) / (2422.7, 134698.29, n=3461), pre (16.87, 527.9767)
    # / (22.7, 1348.29), post_pre_sum_of_products=1: uplift mean 0.50338, stddev 0.33341
    # (the sequential test widens only the interval; the moments are the fixed-horizon ones).
    control = MomentStats("control", 3000, 1396.87, 52377.9767, 16.87, 527.9767, 1)
    treatment = MomentStats("treatment", 3461, 2422.7, 134698.29, 22.7, 1348.29, 1)
    effect = cuped_test(control, treatment).effect
    assert effect.relative_lift == pytest.approx(0.50338, abs=TOL)
    assert effect.relative_lift_standard_error == pytest.approx(0.33341, abs=TOL)


# --- gbstats: packages/stats/tests/bayesian/test_tests.py ------------------------------------


def test_bayesian_binomial_matches_gbstats():
    # TestBinom.test_bayesian_binomial_ab_test: 49/100 vs 51/100
    result = bayesian_proportions(ProportionStats("c", 100, 49), ProportionStats("t", 100, 51))
    assert result.expected == pytest.approx(0.04082, abs=TOL)
    assert (result.interval.low, result.interval.high) == pytest.approx(
        (-0.24779, 0.32943), abs=TOL
    )
    assert result.standard_deviation == pytest.approx(0.14725, abs=TOL)
    assert result.chance_to_win == pytest.approx(0.60918, abs=TOL)
    assert (result.risk_control, result.risk_treatment) == pytest.approx((0.0814, 0.04058), abs=TOL)


NORM_A = MomentStats("c", 10, 100, 1002.25)  # TestNorm.setUp
NORM_B = MomentStats("t", 10, 105, 1111.5)


@pytest.mark.parametrize(
    ("prior", "expected", "ci", "sd", "win", "risk"),
    [
        # TestNorm.test_bayesian_gaussian_ab_test (flat prior)
        (None, 0.05, (-0.02, 0.12), 0.03572, 0.91923, (0.05131, 0.00131)),
        # TestNorm.test_bayesian_gaussian_ab_test_informative: N(0.1, 0.1), proper
        (
            GaussianPrior(0.1, 0.1, proper=True),
            0.05063,
            (-0.01893, 0.12019),
            0.03549,
            0.92315,
            (0.05186, 0.00123),
        ),
    ],
    ids=["flat-prior", "normal-prior"],
)
def test_bayesian_means_match_gbstats(prior, expected, ci, sd, win, risk):
    result = bayesian_means(NORM_A, NORM_B, prior=prior)
    assert result.expected == pytest.approx(expected, abs=TOL)
    assert (result.interval.low, result.interval.high) == pytest.approx(ci, abs=TOL)
    assert result.standard_deviation == pytest.approx(sd, abs=TOL)
    assert result.chance_to_win == pytest.approx(win, abs=TOL)
    assert (result.risk_control, result.risk_treatment) == pytest.approx(risk, abs=TOL)


# --- Spotify confidence: tests/frequentist/test_bounds.py, test_ztest.py ----------------------


def test_group_sequential_alphas_match_confidence():
    # test_bounds.py::test_seq_bounds_run_over: users 250, 450, 630, 810 (the last look
    # overruns the 300 planned, so t = users / 810), alpha 0.01 two-sided:
    # adjusted alpha [0.00095, 0.00241, 0.00410, 0.00636] (their tolerance: 1e-4)
    result = group_sequential_bounds([250 / 810, 450 / 810, 630 / 810, 1.0], 0.01, sides=2)
    assert result.nominal_alpha == pytest.approx([0.00095, 0.00241, 0.00410, 0.00636], abs=TOL)
    assert result.reject(3.0) and not result.reject(2.7)  # the last bound is 2.73


def test_group_sequential_single_look_is_the_fixed_horizon_test():
    result = group_sequential_bounds([1.0], 0.05, sides=2)
    assert result.bounds[0] == pytest.approx(scipy_stats.norm.isf(0.025), abs=1e-9)


# test_ztest.py::TestWithNims.setup: two groups of 5,000 (avg, var), interval_size 0.99
NIM_CONTROL = (2.004210, 1.0116668)
NIM_TREATMENT = (1.978424, 0.9881132)


def _nim_effect():
    (m_c, v_c), (m_t, v_t) = NIM_CONTROL, NIM_TREATMENT
    return compare(
        "z-test",
        "metric",
        ArmEstimate(m_c, v_c / 5000, 5000),
        ArmEstimate(m_t, v_t / 5000, 5000),
        0.01,
        None,
        "difference in mean",
    )


def test_non_inferiority_increase_matches_confidence():
    # test_compare_series_non_inferiority_improve_postitive: NIM (0.02, "increase"):
    # difference -0.0258, lower bound -0.0723 (3 decimals there), p > 0.01
    result = non_inferiority(_nim_effect(), 0.02, relative=True, higher_is_better=True)
    assert result.estimate == pytest.approx(-0.0258, abs=5e-4)
    assert result.bound == pytest.approx(-0.0723, abs=5e-4)
    assert result.p_value > 0.01 and result.outcome == "inconclusive"
    assert result.null_value == pytest.approx(-0.02 * 2.004210)  # the margin on the control mean


def test_non_inferiority_decrease_matches_confidence():
    # test_compare_series_non_inferiority_improve_negative: NIM (0.02, "decrease"):
    # upper bound 0.0207, p < 0.01
    result = non_inferiority(_nim_effect(), 0.02, relative=True, higher_is_better=False)
    assert result.bound == pytest.approx(0.0207, abs=5e-4)
    assert result.p_value < 0.01 and result.outcome == "non_inferior"


def test_one_sided_test_without_margin_matches_confidence():
    # test_one_sided_ztest_positive / _negative: NIM (None, ...): bounds as above, p > 0.01
    up = non_inferiority(_nim_effect(), 0.0, higher_is_better=True)
    down = non_inferiority(_nim_effect(), 0.0, higher_is_better=False)
    assert (up.bound, down.bound) == pytest.approx((-0.0723, 0.0207), abs=5e-4)
    assert up.p_value > 0.01 and down.p_value > 0.01
