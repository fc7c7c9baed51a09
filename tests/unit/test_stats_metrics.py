"""Golden values and simulations for the continuous, ratio, CUPED, guardrail, multiple-testing
and sequential parts of service.analysis.stats. Each golden value names its source."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as scipy_stats
from scipy.stats import binom

from service.analysis.stats import (
    MomentStats,
    ProportionStats,
    adjust_p_values,
    cuped_test,
    mean_power,
    non_inferiority,
    power_analysis,
    ratio_test,
    sequential_test,
    two_proportion_test,
    welch_test,
)
from service.registry.population import churn_probabilities, population_frame


def moments(arm: str, y, x=None) -> MomentStats:
    y = np.asarray(y, float)
    x = np.zeros_like(y) if x is None else np.asarray(x, float)
    return MomentStats(
        arm, len(y), float(y.sum()), float(y @ y), float(x.sum()), float(x @ x), float(x @ y)
    )


def binomial_band(replicates: int, rate: float) -> tuple[float, float]:
    """Two-sided 99.9% acceptance region of Binomial(replicates, rate)."""
    return binom.ppf(0.0005, replicates, rate), binom.ppf(0.9995, replicates, rate)


# --- Welch -----------------------------------------------------------------------------------

# R documentation, ?t.test / ?sleep: t.test(extra ~ group, data = sleep) ->
# t = -1.8608, df = 17.776, p-value = 0.07939, 95% CI -3.3654832 0.2054832 (group 1 - group 2).
SLEEP_1 = [0.7, -1.6, -0.2, -1.2, -0.1, 3.4, 3.7, 0.8, 0.0, 2.0]
SLEEP_2 = [1.9, 0.8, 1.1, 0.1, -0.1, 4.4, 5.5, 1.6, 4.6, 3.4]
# Wikipedia, "Welch's t-test", example 1: t = -2.46, df = 24.99, p = 0.021 (A1 - A2).
WIKI_A1 = [27.5, 21.0, 19.0, 23.6, 17.0, 17.9, 16.9, 20.1, 21.9, 22.6, 23.1, 19.6, 19.0, 21.7, 21.4]
WIKI_A2 = [27.1, 22.0, 20.8, 23.4, 23.4, 23.5, 25.8, 22.0, 24.8, 20.2, 21.9, 22.1, 22.9, 20.5, 24.4]


@pytest.mark.parametrize(
    ("control", "treatment", "t", "df", "p", "ci", "tol"),
    [
        pytest.param(
            SLEEP_2, SLEEP_1, -1.8608, 17.776, 0.07939, (-3.3654832, 0.2054832), 1e-4, id="R-sleep"
        ),
        pytest.param(WIKI_A2, WIKI_A1, -2.46, 24.99, 0.021, None, 5e-3, id="wikipedia"),
    ],
)
def test_welch_matches_published_examples(control, treatment, t, df, p, ci, tol):
    result = welch_test(moments("c", control), moments("t", treatment))
    assert result.method == "Welch t-test"
    assert result.statistic == pytest.approx(t, rel=tol)
    assert result.degrees_of_freedom == pytest.approx(df, rel=tol)
    assert result.p_value == pytest.approx(p, rel=tol * 10)
    if ci:
        assert (result.difference_interval.low, result.difference_interval.high) == pytest.approx(
            ci, rel=1e-6
        )


def test_welch_relative_lift_interval_is_delta_method():
    result = welch_test(moments("c", SLEEP_2), moments("t", SLEEP_1))
    c, t = np.mean(SLEEP_2), np.mean(SLEEP_1)
    var_c, var_t = np.var(SLEEP_2, ddof=1) / 10, np.var(SLEEP_1, ddof=1) / 10
    se = math.sqrt(var_t / c**2 + t**2 * var_c / c**4)  # Deng et al. 2018, eq. for mu_t / mu_c
    # gbstats: the t quantile at the Welch-Satterthwaite degrees of freedom, as for the difference
    q = scipy_stats.t.ppf(0.975, result.degrees_of_freedom)
    assert result.relative_lift == pytest.approx(t / c - 1)
    assert result.relative_lift_interval.low == pytest.approx(t / c - 1 - q * se)
    assert result.relative_lift_interval.method == "delta method, Welch-Satterthwaite t"
    z = (t / c - 1) / se
    p = 2 * scipy_stats.t.sf(abs(z), result.degrees_of_freedom)
    assert result.relative_lift_p_value == pytest.approx(p)  # its own test, same estimand


def test_welch_needs_two_users_per_arm():
    with pytest.raises(ValueError, match="at least two users"):
        welch_test(moments("c", [1.0]), moments("t", [1.0, 2.0]))


# --- ratio metrics (delta method) ------------------------------------------------------------


def test_ratio_with_unit_denominators_is_the_mean_z_test():
    rng = np.random.default_rng(1)
    y_c, y_t = rng.normal(10, 2, 500), rng.normal(10.3, 2, 400)
    ratio = ratio_test(moments("c", y_c, np.ones(500)), moments("t", y_t, np.ones(400)))
    welch = welch_test(moments("c", y_c), moments("t", y_t))
    assert ratio.method == "delta-method z-test (ratio metric)"
    assert ratio.difference == pytest.approx(welch.difference)
    assert ratio.standard_error == pytest.approx(welch.standard_error)


def test_ratio_delta_method_covers_the_truth_with_clustered_requests():
    # Errors per request where users send 1-20 requests and some users are error-prone: the
    # delta-method interval must cover the true 2% about 95% of the time (a per-request binomial
    # interval would be far too narrow here).
    rng = np.random.default_rng(7)
    replicates, covered = 200, 0
    for _ in range(replicates):
        arms = []
        for name in ("c", "t"):
            requests = rng.integers(1, 21, 2_000)
            prone = rng.random(2_000) < 0.1
            errors = rng.binomial(requests, np.where(prone, 0.11, 0.00999))
            arms.append(moments(name, errors, requests))
        result = ratio_test(*arms)
        covered += result.difference_interval.contains(0.0)
    low, high = binomial_band(replicates, 0.95)
    assert low <= covered <= high


def test_ratio_refuses_an_empty_denominator():
    with pytest.raises(ValueError, match="denominator"):
        ratio_test(moments("c", [1, 2], [0, 0]), moments("t", [1, 2], [1, 1]))


# --- CUPED -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("rho", "expected"), [(0.0, 0.0), (0.5, 0.25), (0.8, 0.64)])
def test_cuped_reduces_variance_by_rho_squared(rho, expected):
    # Deng et al. (2013): with the optimal theta, var(adjusted) = var(y) (1 - rho^2).
    rng = np.random.default_rng(3)
    n = 20_000
    x = rng.normal(5, 1, (2, n))
    y = 5 + rho * (x - 5) + math.sqrt(1 - rho**2) * rng.normal(0, 1, (2, n))
    y[1] += 0.05  # planted effect
    result = cuped_test(moments("c", y[0], x[0]), moments("t", y[1], x[1]))
    plain = welch_test(moments("c", y[0]), moments("t", y[1]))
    assert result.variance_reduction == pytest.approx(expected, abs=0.02)
    assert result.correlation == pytest.approx(rho, abs=0.02)
    assert result.effect.difference == pytest.approx(0.05, abs=3 * result.effect.standard_error)
    assert result.effect.standard_error == pytest.approx(
        plain.standard_error * math.sqrt(1 - expected), rel=0.03
    )
    assert result.effect.method.startswith("CUPED-adjusted Welch t-test")


# --- guardrails ------------------------------------------------------------------------------


def _effect(diff: float, se: float):
    # Two arms whose difference of means is `diff` with standard error `se` (z-based ratio test).
    n = 10_000
    sd = se * math.sqrt(n / 2)
    base = np.concatenate([np.full(n // 2, -sd), np.full(n // 2, sd)]) * math.sqrt((n - 1) / n)
    return ratio_test(moments("c", 1 + base, np.ones(n)), moments("t", 1 + diff + base, np.ones(n)))


@pytest.mark.parametrize(
    ("diff", "se", "margin", "outcome"),
    [
        # worse = diff (lower is better); one-sided 95% bound = diff +- 1.645 se
        pytest.param(0.0, 0.01, 0.05, "non_inferior", id="clearly-fine"),
        pytest.param(0.04, 0.01, 0.05, "inconclusive", id="near-margin"),
        pytest.param(0.1, 0.01, 0.05, "inferior", id="clearly-worse"),
        pytest.param(-0.1, 0.01, 0.05, "non_inferior", id="better"),
    ],
)
def test_non_inferiority_outcomes(diff, se, margin, outcome):
    result = non_inferiority(_effect(diff, se), margin)
    assert result.outcome == outcome
    assert result.bound == pytest.approx(diff + 1.6448536 * se, rel=1e-3)
    assert result.method.startswith("one-sided non-inferiority")


def test_non_inferiority_higher_is_better_flips_the_side():
    result = non_inferiority(_effect(-0.1, 0.01), 0.05, higher_is_better=True)
    assert result.outcome == "inferior"
    assert result.bound == pytest.approx(-0.1 - 1.6448536 * 0.01, rel=1e-3)  # the lower bound


def test_non_inferiority_refuses_a_negative_margin():
    with pytest.raises(ValueError, match="negative"):
        non_inferiority(_effect(0, 0.01), -0.1)


# --- multiple testing ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "p_values", "adjusted"),
    [
        # Holm (1979), step-down: sorted p_(i) * (m - i + 1), made monotone. Hand-computed and
        # equal to R's p.adjust(c(.01,.04,.03,.005,.2,.5), "holm").
        ("holm", [0.01, 0.04, 0.03, 0.005, 0.2, 0.5], [0.05, 0.12, 0.12, 0.03, 0.4, 0.5]),
        # Benjamini & Hochberg (1995), step-up: p_(i) * m / i, made monotone from the top;
        # R's p.adjust(..., "BH").
        (
            "benjamini-hochberg",
            [0.01, 0.04, 0.03, 0.005, 0.2, 0.5],
            [0.03, 0.06, 0.06, 0.03, 0.24, 0.5],
        ),
        ("holm", [0.01, 0.02, 0.03, 0.04, 0.05], [0.05, 0.08, 0.09, 0.09, 0.09]),
        ("benjamini-hochberg", [0.01, 0.02, 0.03, 0.04, 0.05], [0.05] * 5),
        ("none", [0.2, 0.01], [0.2, 0.01]),
        ("holm", [0.9], [0.9]),
    ],
)
def test_adjusted_p_values(method, p_values, adjusted):
    assert adjust_p_values(p_values, method) == pytest.approx(adjusted)


def test_unknown_correction_is_refused():
    with pytest.raises(ValueError, match="unknown correction 'bonf'"):
        adjust_p_values([0.1], "bonf")


# --- sequential ------------------------------------------------------------------------------


def test_msprt_matches_the_closed_form():
    # Johari et al. (2017), eq. (11): LR = sqrt(V/(V+tau2)) exp(tau2 d^2 / (2 V (V+tau2))).
    d, se, tau2 = 0.02, 0.01, 0.0004
    v = se**2
    lr = math.sqrt(v / (v + tau2)) * math.exp(tau2 * d**2 / (2 * v * (v + tau2)))
    result = sequential_test(d, se, alpha=0.05, mixture_variance=tau2)
    assert result.likelihood_ratio == pytest.approx(lr)
    assert result.p_value == pytest.approx(min(1, 1 / lr))
    # The confidence sequence is {theta : LR(d - theta) < 1 / alpha}: at its half-width the
    # likelihood ratio is exactly 1 / alpha.
    half_width = result.interval.high - d
    at_edge = sequential_test(half_width, se, alpha=0.05, mixture_variance=tau2)
    assert at_edge.likelihood_ratio == pytest.approx(20.0, rel=1e-6)


def test_msprt_keeps_alpha_under_peeking_where_a_fixed_test_does_not():
    # A/A, 20 looks per experiment: the naive z-test rejects at any look far more than 5% of
    # the time; the mixture SPRT (reject once p <= alpha at any look) stays at or below alpha.
    rng = np.random.default_rng(11)
    replicates, looks, batch, alpha = 300, 20, 200, 0.05
    naive = sequential = 0
    for _ in range(replicates):
        n = batch * np.arange(1, looks + 1)
        draws = rng.normal(0, 1, (2, looks * batch))
        cum = draws.cumsum(axis=1)[:, batch - 1 :: batch]
        diff = cum[1] / n - cum[0] / n
        se = np.sqrt(2 / n)
        naive += bool(np.any(np.abs(diff / se) > 1.959964))
        sequential += any(
            sequential_test(float(d), float(s), alpha, mixture_variance=0.01).reject
            for d, s in zip(diff, se, strict=True)
        )
    assert sequential <= binomial_band(replicates, alpha)[1]
    assert naive > binomial_band(replicates, alpha)[1]


# --- simulations on the synthetic population -------------------------------------------------


def _retained_draws(rng, probabilities, arms: int) -> np.ndarray:
    """Each replicate: users split at random into arms, retained drawn from the ground truth."""
    return (rng.random((arms, probabilities.size)) >= probabilities).sum(axis=1)


def test_aa_on_the_synthetic_population_has_false_positive_rate_alpha():
    # Both arms draw retention from the same users' known churn probabilities (no effect).
    rng = np.random.default_rng(2026)
    p_churn = churn_probabilities(population_frame(4_000, seed=5))
    replicates, alpha, rejections = 400, 0.05, 0
    for _ in range(replicates):
        idx = rng.permutation(p_churn.size)
        halves = p_churn[idx[:2_000]], p_churn[idx[2_000:]]
        retained = [int((rng.random(h.size) >= h).sum()) for h in halves]
        result = two_proportion_test(
            ProportionStats("control", 2_000, retained[0]),
            ProportionStats("treatment", 2_000, retained[1]),
            alpha,
        )
        rejections += result.significant
    low, high = binomial_band(replicates, alpha)
    assert low <= rejections <= high


def test_planted_effect_is_detected_as_often_as_power_predicts():
    # Baseline 30%, +3 pp planted, 2,000 users per arm: the detection rate over 400 replicates
    # must fall within binomial tolerance of the power power_analysis predicts.
    rng = np.random.default_rng(99)
    users, base, lift, alpha, replicates = 2_000, 0.30, 0.10, 0.05, 400
    predicted = power_analysis(
        ProportionStats("c", users, int(users * base)),
        ProportionStats("t", users, int(users * base * (1 + lift))),
        alpha,
        target_lift=lift,
    ).power_at_target_lift
    control = rng.binomial(users, base, replicates)
    treatment = rng.binomial(users, base * (1 + lift), replicates)
    detected = sum(
        two_proportion_test(
            ProportionStats("c", users, int(c)), ProportionStats("t", users, int(t))
        ).significant
        for c, t in zip(control, treatment, strict=True)
    )
    low, high = binomial_band(replicates, predicted)
    assert 0.3 < predicted < 0.9  # a regime where the check has teeth
    assert low <= detected <= high


def test_welch_aa_false_positive_rate_is_alpha():
    rng = np.random.default_rng(5)
    replicates, rejections = 400, 0
    for _ in range(replicates):
        y = rng.exponential(10.0, (2, 500))  # skewed, like latency or revenue
        rejections += welch_test(moments("c", y[0]), moments("t", y[1])).significant
    low, high = binomial_band(replicates, 0.05)
    assert low <= rejections <= high


def test_mean_power_is_the_textbook_mde():
    # MDE = (z_{1-alpha/2} + z_power) * sqrt(s^2/n1 + s^2/n2); with s = 1, n = 392:
    # 2.8016 * sqrt(2/392) = 0.2001 (Cohen's d = 0.2 needs 392 per group, Cohen 1988 Table 2.4.1).
    arm = MomentStats("a", 392, 0.0, 391.0)  # variance exactly 1
    assert mean_power(arm, arm) == pytest.approx(0.2001, abs=1e-4)
