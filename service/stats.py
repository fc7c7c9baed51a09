"""Statistics for A/B reports: pure functions over sufficient statistics.

Inputs are small dataclasses (users and conversions per arm), never raw rows, so the same
functions serve a 1,000-user test and a 10,000,000-user one, and can be checked against golden
values. Every result names the method that produced it, because a decision is only as
trustworthy as a reader's ability to see how it was reached.

Conventions: `treatment - control` for differences, `treatment / control - 1` for relative lift,
two-sided tests, `alpha` is the significance level (intervals are at `1 - alpha`).
New analyses (CUPED, Welch, delta method for ratio metrics, multiple-testing corrections,
sequential tests) are added as further functions with their own stats/result dataclasses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from scipy import stats as scipy_stats
from statsmodels.stats.power import NormalIndPower
from statsmodels.stats.proportion import (
    confint_proportions_2indep,
    proportion_confint,
    proportions_ztest,
)

# Standard threshold for a sample ratio mismatch alarm: SRM checks run on every report, so a
# strict level keeps false alarms rare while real assignment bugs (tiny p-values) still trip it.
SRM_THRESHOLD = 0.001
DEFAULT_POWER = 0.8


@dataclass(frozen=True)
class Interval:
    """A confidence interval `[low, high]` at `level` (e.g. 0.95), computed by `method`."""

    low: float
    high: float
    level: float
    method: str

    def contains(self, value: float) -> bool:
        """Whether `value` lies inside the interval (bounds included)."""
        return self.low <= value <= self.high


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
    """Comparison of a binary metric between control and treatment."""

    method: str  # the test behind `statistic` and `p_value`
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

    `expected_weights` need not sum to 1 (e.g. `{"control": 50, "treatment": 50}`); they must
    name exactly the arms in `observed_counts`. Healthy means `p >= threshold`.
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
    """Two-sided two-proportion z-test, with intervals on the difference and the relative lift.

    - test: pooled-variance z-test (statsmodels `proportions_ztest`); its square is Pearson's
      chi-square, i.e. R's `prop.test(..., correct = FALSE)`;
    - absolute difference: Newcombe's hybrid score interval (method 10 in Newcombe 1998), which
      behaves at small counts and rates near 0 or 1 where the Wald interval does not;
    - relative lift: the log risk-ratio interval (Katz et al. 1978), shifted by -1.
    """
    if control.users == 0 or treatment.users == 0:
        raise ValueError("both arms need users to compare them")
    statistic, p_value = _z_test(control, treatment)
    diff_low, diff_high = confint_proportions_2indep(
        treatment.conversions,
        treatment.users,
        control.conversions,
        control.users,
        method="newcomb",
        compare="diff",
        alpha=alpha,
    )
    rate_c, rate_t = control.conversions / control.users, treatment.conversions / treatment.users
    return ProportionTestResult(
        method="two-proportion z-test (pooled variance)",
        control=control,
        treatment=treatment,
        alpha=alpha,
        statistic=statistic,
        p_value=p_value,
        difference=rate_t - rate_c,
        difference_interval=Interval(
            float(diff_low), float(diff_high), 1 - alpha, "Newcombe hybrid score"
        ),
        relative_lift=rate_t / rate_c - 1 if rate_c > 0 else None,
        relative_lift_interval=_lift_interval(control, treatment, alpha),
        significant=bool(p_value < alpha),
    )


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


def _lift_interval(
    control: ProportionStats, treatment: ProportionStats, alpha: float
) -> Interval | None:
    # The log ratio needs a conversion in each arm; with a zero count the interval is unbounded.
    if control.conversions == 0 or treatment.conversions == 0:
        return None
    low, high = confint_proportions_2indep(
        treatment.conversions,
        treatment.users,
        control.conversions,
        control.users,
        method="log",
        compare="ratio",
        alpha=alpha,
    )
    return Interval(float(low) - 1, float(high) - 1, 1 - alpha, "log risk ratio (Katz)")


def cohens_h(rate_a: float, rate_b: float) -> float:
    """Cohen's effect size for two proportions: `2 asin(sqrt(b)) - 2 asin(sqrt(a))`."""
    return 2 * math.asin(math.sqrt(rate_b)) - 2 * math.asin(math.sqrt(rate_a))


def power_analysis(
    control: ProportionStats,
    treatment: ProportionStats,
    alpha: float = 0.05,
    power: float = DEFAULT_POWER,
    target_lift: float = 0.05,
) -> PowerResult:
    """Minimum detectable effect of the current sample, and its power for `target_lift`.

    Uses the normal approximation on Cohen's h (statsmodels `NormalIndPower`), with the control
    rate as the baseline and the observed ratio of treatment to control users. `target_lift` is
    the smallest relative improvement worth detecting (0.05 = +5%).
    """
    if control.users == 0 or treatment.users == 0:
        raise ValueError("both arms need users for a power analysis")
    baseline = control.conversions / control.users
    engine = NormalIndPower()
    ratio = treatment.users / control.users
    h_detectable = float(
        engine.solve_power(nobs1=control.users, alpha=alpha, power=power, ratio=ratio)
    )
    detectable_rate = _rate_at_effect(baseline, h_detectable)
    target_rate = min(baseline * (1 + target_lift), 1.0)
    h_target = abs(cohens_h(baseline, target_rate))
    mdd = detectable_rate - baseline if detectable_rate is not None else None
    return PowerResult(
        method="normal approximation on Cohen's h (statsmodels NormalIndPower)",
        alpha=alpha,
        power=power,
        baseline_rate=baseline,
        minimum_detectable_difference=mdd,
        minimum_detectable_lift=mdd / baseline if mdd is not None and baseline > 0 else None,
        target_lift=target_lift,
        power_at_target_lift=float(
            engine.power(effect_size=h_target, nobs1=control.users, alpha=alpha, ratio=ratio)
        ),
        users_needed_per_arm=_users_needed(engine, h_target, alpha, power),
    )


def _rate_at_effect(baseline: float, h: float) -> float | None:
    """The rate above `baseline` at Cohen's distance `h`; None if it would exceed 1."""
    angle = math.asin(math.sqrt(baseline)) + h / 2
    return math.sin(angle) ** 2 if angle <= math.pi / 2 else None


def _users_needed(engine: NormalIndPower, h: float, alpha: float, power: float) -> int | None:
    if h <= 0:
        return None
    return math.ceil(float(engine.solve_power(effect_size=h, alpha=alpha, power=power, ratio=1)))
