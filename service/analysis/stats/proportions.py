"""Binary metrics (converted or not, per user): tests, intervals, power, more than two arms.

Inputs are sufficient statistics (users and converting users per arm), never raw rows, so the
same functions serve a 1,000-user test and a 10,000,000-user one. Conventions are those of
statsmodels (`proportions_ztest`, `confint_proportions_2indep`, `power_proportions_2indep`),
whose own test suite supplies the golden values in tests/unit/test_stats_reference.py.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import stats as scipy_stats
from statsmodels.stats.proportion import (
    confint_proportions_2indep,
    power_proportions_2indep,
    proportion_confint,
    proportions_ztest,
)

from service.analysis.stats.corrections import adjust_p_values
from service.analysis.stats.intervals import Interval, critical, two_sided_p

# Standard threshold for a sample ratio mismatch alarm: SRM checks run on every report, so a
# strict level keeps false alarms rare while real assignment bugs (tiny p-values) still trip it.
SRM_THRESHOLD = 0.001
DEFAULT_POWER = 0.8
DIFFERENCE = "difference in conversion rate (treatment - control)"
RELATIVE = "relative lift in conversion rate (treatment / control - 1)"
# statsmodels' names for the intervals on a difference of two proportions -> ours.
DIFFERENCE_INTERVALS = {
    "newcomb": "Newcombe hybrid score",
    "wald": "Wald (unpooled)",
    "agresti-caffo": "Agresti-Caffo",
}


@dataclass(frozen=True)
class ProportionStats:
    """Sufficient statistics of a binary metric in one arm: users exposed and users converting."""

    arm: str
    users: int
    conversions: int

    def __post_init__(self) -> None:
        if self.users < 0 or not 0 <= self.conversions <= self.users:
            raise ValueError(
                f"arm {self.arm!r}: need 0 <= conversions <= users, "
                f"got {self.conversions} conversions of {self.users} users"
            )

    @property
    def rate(self) -> float | None:
        """Conversion rate, or None when the arm has no users."""
        return self.conversions / self.users if self.users else None


@dataclass(frozen=True)
class SrmResult:
    """Sample ratio mismatch check: are users split between arms as the flag intends?"""

    method: str
    statistic: float
    p_value: float
    degrees_of_freedom: int
    observed: dict[str, int]
    expected: dict[str, float]  # expected user counts under the intended split
    threshold: float
    healthy: bool


@dataclass(frozen=True)
class ProportionTestResult:
    """Comparison of a binary metric between control and treatment, one estimand per test.

    The difference is tested by `statistic`/`p_value` (pooled z) with `difference_interval`;
    the relative lift has its own test (`relative_lift_p_value`, the log risk ratio z) that
    agrees with `relative_lift_interval` (Katz), so a p-value never sits next to an interval
    for another quantity.
    """

    method: str
    control: ProportionStats
    treatment: ProportionStats
    alpha: float
    statistic: float
    p_value: float
    difference: float  # absolute: treatment rate - control rate
    difference_interval: Interval
    relative_lift: float | None  # treatment rate / control rate - 1; None if control rate is 0
    relative_lift_interval: Interval | None
    significant: bool
    relative_lift_p_value: float | None = None
    other_intervals: dict[str, Interval] = field(default_factory=dict)  # Wald, Agresti-Caffo
    estimand: str = DIFFERENCE


@dataclass(frozen=True)
class PowerResult:
    """What the current sample can detect, for a two-sided test at `alpha` with `power`."""

    method: str
    alpha: float
    power: float
    baseline_rate: float
    minimum_detectable_difference: float | None  # absolute; None if no detectable rate <= 1
    minimum_detectable_lift: float | None  # relative to the baseline rate
    target_lift: float
    power_at_target_lift: float
    users_needed_per_arm: int | None  # to detect `target_lift` with `power`; None if impossible


def rate_interval(arm: ProportionStats, alpha: float = 0.05) -> Interval | None:
    """Wilson score interval for one arm's conversion rate (None when the arm has no users).

    Wilson rather than Wald: it stays inside [0, 1] and keeps its coverage at rates near 0 or 1.
    """
    if arm.users == 0:
        return None
    low, high = proportion_confint(arm.conversions, arm.users, alpha=alpha, method="wilson")
    return Interval(float(low), float(high), 1 - alpha, "Wilson score")


def srm_check(
    observed_counts: dict[str, int],
    expected_weights: dict[str, float],
    threshold: float = SRM_THRESHOLD,
) -> SrmResult:
    """Chi-square goodness-of-fit test of observed users per arm against the intended split.

    Any number of arms (k - 1 degrees of freedom). `expected_weights` need not sum to 1 (e.g.
    `{"control": 50, "treatment": 50}`); they must name exactly the arms in `observed_counts`.
    Healthy means `p >= threshold`.
    """
    if set(observed_counts) != set(expected_weights):
        raise ValueError(
            f"arms differ: observed {sorted(observed_counts)}, expected {sorted(expected_weights)}"
        )
    if len(observed_counts) < 2:
        raise ValueError("a sample ratio check needs at least two arms")
    total = sum(observed_counts.values())
    weight_sum = sum(expected_weights.values())
    if total <= 0 or weight_sum <= 0 or min(expected_weights.values()) <= 0:
        raise ValueError("a sample ratio check needs users and positive weights")
    arms = sorted(observed_counts)
    expected = {arm: total * expected_weights[arm] / weight_sum for arm in arms}
    statistic, p_value = scipy_stats.chisquare(
        [observed_counts[arm] for arm in arms], [expected[arm] for arm in arms]
    )
    return SrmResult(
        method="chi-square goodness of fit",
        statistic=float(statistic),
        p_value=float(p_value),
        degrees_of_freedom=len(arms) - 1,
        observed=dict(observed_counts),
        expected=expected,
        threshold=threshold,
        healthy=bool(p_value >= threshold),
    )


def two_proportion_test(
    control: ProportionStats, treatment: ProportionStats, alpha: float = 0.05
) -> ProportionTestResult:
    """Two-sided tests of the difference and of the relative lift, each with its interval.

    - difference: pooled-variance z-test (statsmodels `proportions_ztest`; its square is
      Pearson's chi-square, R's `prop.test(..., correct = FALSE)`), with Newcombe's hybrid score
      interval (method 10 in Newcombe 1998); the Wald and Agresti-Caffo intervals as well;
    - relative lift: z-test of the log risk ratio with its Katz et al. (1978) interval, shifted
      by -1 (the test the interval inverts, so the two always agree).
    """
    if control.users == 0 or treatment.users == 0:
        raise ValueError("both arms need users to compare them")
    statistic, p_value = _z_test(control, treatment)
    intervals = {
        name: difference_interval(control, treatment, alpha, method)
        for method, name in DIFFERENCE_INTERVALS.items()
    }
    rate_c, rate_t = control.conversions / control.users, treatment.conversions / treatment.users
    lift_p, lift_interval = relative_lift_test(control, treatment, alpha)
    return ProportionTestResult(
        method="two-proportion z-test (pooled variance)",
        control=control,
        treatment=treatment,
        alpha=alpha,
        statistic=statistic,
        p_value=p_value,
        difference=rate_t - rate_c,
        difference_interval=intervals.pop("Newcombe hybrid score"),
        relative_lift=rate_t / rate_c - 1 if rate_c > 0 else None,
        relative_lift_interval=lift_interval,
        significant=bool(p_value < alpha),
        relative_lift_p_value=lift_p,
        other_intervals=intervals,
    )


def difference_interval(
    control: ProportionStats, treatment: ProportionStats, alpha: float, method: str = "newcomb"
) -> Interval:
    """Interval on `rate_t - rate_c` by statsmodels' `confint_proportions_2indep` `method`
    (`newcomb`, `wald`, `agresti-caffo`)."""
    low, high = confint_proportions_2indep(
        treatment.conversions,
        treatment.users,
        control.conversions,
        control.users,
        method=method,
        compare="diff",
        alpha=alpha,
    )
    return Interval(float(low), float(high), 1 - alpha, DIFFERENCE_INTERVALS[method])


def _z_test(control: ProportionStats, treatment: ProportionStats) -> tuple[float, float]:
    pooled = (control.conversions + treatment.conversions) / (control.users + treatment.users)
    if pooled in (0.0, 1.0):
        # Every user converted, or none did: identical rates, no evidence of a difference
        # (statsmodels would divide 0 by 0 here).
        return 0.0, 1.0
    z, p = proportions_ztest(
        [treatment.conversions, control.conversions], [treatment.users, control.users]
    )
    return float(z), float(p)


def relative_lift_test(
    control: ProportionStats, treatment: ProportionStats, alpha: float
) -> tuple[float | None, Interval | None]:
    """(p-value, interval) of the relative lift: the log risk ratio over its Katz standard error
    `sqrt(1/x_t - 1/n_t + 1/x_c - 1/n_c)`; None without a conversion in each arm."""
    if control.conversions == 0 or treatment.conversions == 0:
        return None, None
    log_rr = math.log(
        (treatment.conversions / treatment.users) / (control.conversions / control.users)
    )
    se = math.sqrt(
        1 / treatment.conversions
        - 1 / treatment.users
        + 1 / control.conversions
        - 1 / control.users
    )
    if se == 0:  # every user converted in both arms
        return 1.0, Interval(0.0, 0.0, 1 - alpha, "log risk ratio (Katz)")
    z = critical(alpha)
    interval = Interval(
        math.exp(log_rr - z * se) - 1,
        math.exp(log_rr + z * se) - 1,
        1 - alpha,
        "log risk ratio (Katz)",
    )
    return two_sided_p(log_rr / se), interval


# --- more than two arms -----------------------------------------------------------------------


@dataclass(frozen=True)
class ArmsResult:
    """A/B/n: a k-arm chi-square test of independence, then each treatment against control,
    p-values corrected across the treatments."""

    method: str
    statistic: float
    p_value: float
    degrees_of_freedom: int
    comparisons: dict[str, ProportionTestResult]  # treatment arm -> its test against control
    adjusted_p: dict[str, float]
    correction: str


def compare_arms(
    control: ProportionStats,
    treatments: Sequence[ProportionStats],
    alpha: float = 0.05,
    correction: str = "holm",
) -> ArmsResult:
    """Every treatment against `control` (two-proportion z-tests, corrected across arms with
    `correction`), and Pearson's chi-square over the whole k x 2 table (no continuity
    correction, as R's `chisq.test(correct = FALSE)`)."""
    arms = [control, *treatments]
    if len(arms) < 2 or any(a.users == 0 for a in arms):
        raise ValueError("an A/B/n comparison needs users in every arm")
    table = np.array([[a.conversions, a.users - a.conversions] for a in arms], dtype=float)
    if table[:, 0].sum() in (0, table.sum()):
        statistic, p_value = 0.0, 1.0
    else:
        statistic, p_value, _, _ = scipy_stats.chi2_contingency(table, correction=False)
    comparisons = {t.arm: two_proportion_test(control, t, alpha) for t in treatments}
    adjusted = adjust_p_values([c.p_value for c in comparisons.values()], correction)
    return ArmsResult(
        "Pearson chi-square test of independence (k arms)",
        float(statistic),
        float(p_value),
        len(arms) - 1,
        comparisons,
        dict(zip(comparisons, adjusted, strict=True)),
        correction,
    )


# --- power ------------------------------------------------------------------------------------


def cohens_h(rate_a: float, rate_b: float) -> float:
    """Cohen's effect size for two proportions: `2 asin(sqrt(b)) - 2 asin(sqrt(a))`."""
    return 2 * math.asin(math.sqrt(rate_b)) - 2 * math.asin(math.sqrt(rate_a))


def proportion_power(
    difference: float, control_rate: float, control_users: float, ratio: float = 1.0, alpha=0.05
) -> float:
    """Power of the two-sided pooled z-test to detect `difference` from `control_rate`, with
    `ratio` treatment users per control user: statsmodels `power_proportions_2indep`
    (variance pooled under the null, unpooled under the alternative)."""
    result = power_proportions_2indep(
        difference, control_rate, control_users, ratio=ratio, alpha=alpha
    )
    return float(result.power)


def power_analysis(
    control: ProportionStats,
    treatment: ProportionStats,
    alpha: float = 0.05,
    power: float = DEFAULT_POWER,
    target_lift: float = 0.05,
) -> PowerResult:
    """Minimum detectable effect of the current sample, and its power for `target_lift`.

    The normal approximation on Cohen's h (statsmodels `NormalIndPower`, in closed form: the
    report runs it on every look), with the control rate as the baseline and the observed
    ratio of treatment to control users. `target_lift` is the smallest relative improvement
    worth detecting (0.05 = +5%).
    """
    if control.users == 0 or treatment.users == 0:
        raise ValueError("both arms need users for a power analysis")
    baseline = control.conversions / control.users
    scale = math.sqrt(1 / control.users + 1 / treatment.users)  # sd of h's estimate
    z_alpha, z_power = critical(alpha), float(scipy_stats.norm.ppf(power))
    detectable_rate = _rate_at_effect(baseline, (z_alpha + z_power) * scale)
    target_rate = min(baseline * (1 + target_lift), 1.0)
    h_target = abs(cohens_h(baseline, target_rate))
    mdd = detectable_rate - baseline if detectable_rate is not None else None
    shift = h_target / scale
    return PowerResult(
        method="normal approximation on Cohen's h (as statsmodels NormalIndPower)",
        alpha=alpha,
        power=power,
        baseline_rate=baseline,
        minimum_detectable_difference=mdd,
        minimum_detectable_lift=mdd / baseline if mdd is not None and baseline > 0 else None,
        target_lift=target_lift,
        power_at_target_lift=float(
            scipy_stats.norm.sf(z_alpha - shift) + scipy_stats.norm.cdf(-z_alpha - shift)
        ),
        users_needed_per_arm=(
            math.ceil(2 * ((z_alpha + z_power) / h_target) ** 2) if h_target > 0 else None
        ),
    )


def _rate_at_effect(baseline: float, h: float) -> float | None:
    """The rate above `baseline` at Cohen's distance `h`; None if it would exceed 1."""
    angle = math.asin(math.sqrt(baseline)) + h / 2
    return math.sin(angle) ** 2 if angle <= math.pi / 2 else None
