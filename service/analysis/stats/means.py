"""Continuous and ratio metrics per user: Welch, the delta method, CUPED; one estimand each.

Conventions are GrowthBook's gbstats (frequentist engine), whose own test suite supplies the
golden values in tests/unit/test_stats_reference.py: Welch-Satterthwaite degrees of freedom and
the t quantile for the difference and for the relative lift `(mean_t - mean_c) / |mean_c|`
(delta method on the ratio of two independent means); CUPED as gbstats' regression adjustment
(theta pooled over both arms). A ratio metric (errors per request, with users as the unit) gets
delta-method variances (Deng et al. 2018) and normal quantiles.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from scipy import stats as scipy_stats

from service.analysis.stats.intervals import Interval, critical, two_sided_p, welch_df
from service.analysis.stats.proportions import DEFAULT_POWER


@dataclass(frozen=True)
class MomentStats:
    """Per-arm sums over users of a metric `y` and a companion `x` (sufficient statistics).

    `x` is what the analysis pairs with `y`: the user's pre-exposure value of the metric (CUPED),
    or the denominator of a ratio metric (delta method). Without a companion, `x` sums are 0.
    """

    arm: str
    n: int
    sum_y: float
    sum_y2: float
    sum_x: float = 0.0
    sum_x2: float = 0.0
    sum_xy: float = 0.0

    @property
    def mean_y(self) -> float:
        return self.sum_y / self.n

    @property
    def mean_x(self) -> float:
        return self.sum_x / self.n

    def var_y(self) -> float:
        """Sample variance of `y` (n - 1 denominator)."""
        return max(_sample_cov(self.n, self.sum_y, self.sum_y, self.sum_y2), 0.0)

    def var_x(self) -> float:
        """Sample variance of `x`."""
        return max(_sample_cov(self.n, self.sum_x, self.sum_x, self.sum_x2), 0.0)

    def cov_xy(self) -> float:
        return _sample_cov(self.n, self.sum_x, self.sum_y, self.sum_xy)


def _sample_cov(n: int, sum_a: float, sum_b: float, sum_ab: float) -> float:
    # Sums, not raw rows, come from SQL; for variances rounding can go a hair below 0.
    if n < 2:
        return math.nan
    return (sum_ab - sum_a * sum_b / n) / (n - 1)


@dataclass(frozen=True)
class ArmEstimate:
    """One arm's estimate, the variance of that estimate, and its users."""

    estimate: float
    variance: float  # of the estimate (already divided by n)
    n: int


@dataclass(frozen=True)
class EffectResult:
    """A comparison of two arms: the difference with its test and interval, and the relative
    lift with its own test and interval (never one estimand's p-value beside another's interval).

    Used for means (Welch), ratios (delta method) and CUPED-adjusted means alike.
    """

    method: str
    metric: str
    control_estimate: float
    treatment_estimate: float
    alpha: float
    statistic: float
    p_value: float
    degrees_of_freedom: float | None  # None for z-based methods
    difference: float  # treatment - control
    standard_error: float
    difference_interval: Interval
    relative_lift: float | None
    relative_lift_interval: Interval | None
    significant: bool
    details: dict[str, float] = field(default_factory=dict)
    estimand: str = "difference in mean per user"
    relative_lift_p_value: float | None = None
    relative_lift_standard_error: float | None = None


def welch_test(
    control: MomentStats, treatment: MomentStats, alpha: float = 0.05, metric: str = "y"
) -> EffectResult:
    """Welch's unequal-variance t-test on the means of `y`, and the relative lift by the delta
    method with the same t quantile and degrees of freedom (gbstats `TwoSidedTTest`)."""
    _need_two(control, treatment)
    df = welch_df(control.var_y(), control.n, treatment.var_y(), treatment.n)
    return compare(
        "Welch t-test",
        metric,
        _mean(control),
        _mean(treatment),
        alpha,
        df,
        f"difference in mean {metric} per user",
    )


def _mean(arm: MomentStats) -> ArmEstimate:
    return ArmEstimate(arm.mean_y, arm.var_y() / arm.n, arm.n)


def ratio_test(
    control: MomentStats, treatment: MomentStats, alpha: float = 0.05, metric: str = "y/x"
) -> EffectResult:
    """Ratio metric `sum y / sum x` per arm (e.g. errors per request, with users as the unit).

    The variance of each arm's ratio comes from the delta method (Deng et al. 2018, "Applying
    the Delta Method in Metric Analytics"), which accounts for requests clustering in users.
    """
    _need_two(control, treatment)
    return compare(
        "delta-method z-test (ratio metric)",
        metric,
        _ratio_estimate(control),
        _ratio_estimate(treatment),
        alpha,
        None,
        f"difference in {metric} (ratio of per-user sums)",
    )


def _ratio_estimate(arm: MomentStats) -> ArmEstimate:
    mean_x, mean_y = arm.mean_x, arm.mean_y
    if mean_x == 0:
        raise ValueError(f"arm {arm.arm!r}: the ratio's denominator sums to 0")
    ratio = mean_y / mean_x
    variance = (
        arm.var_y() / mean_x**2
        - 2 * mean_y * arm.cov_xy() / mean_x**3
        + mean_y**2 * arm.var_x() / mean_x**4
    ) / arm.n
    return ArmEstimate(ratio, max(variance, 0.0), arm.n)


@dataclass(frozen=True)
class CupedResult:
    """CUPED-adjusted comparison and the variance reduction the pre-period covariate bought."""

    effect: EffectResult
    theta: float
    variance_reduction: float  # 1 - var(adjusted) / var(unadjusted), pooled over arms
    correlation: float


def cuped_test(
    control: MomentStats, treatment: MomentStats, alpha: float = 0.05, metric: str = "y"
) -> CupedResult:
    """CUPED (Deng, Xu, Kohavi, Walker 2013) as gbstats' regression adjustment.

    Each arm's mean of `y` is adjusted by `theta` times its mean of `x` (the user's pre-exposure
    value of the same quantity), `theta = cov(x, y) / var(x)` over both arms pooled; each
    adjusted mean has variance `(var y + theta^2 var x - 2 theta cov) / n`. The estimand is the
    unadjusted test's (the difference of the mean of `y`), so CUPED only narrows its interval.
    Welch degrees of freedom on the adjusted variances; the relative lift divides by the
    control's unadjusted mean (gbstats `frequentist_variance_relative_cuped`).
    """
    _need_two(control, treatment)
    pooled = _pooled(control, treatment)
    var_x, cov = pooled.var_x(), pooled.cov_xy()
    theta = cov / var_x if var_x > 0 and pooled.var_y() > 0 else 0.0
    arms = []
    for arm in (control, treatment):
        unit = max(arm.var_y() + theta**2 * arm.var_x() - 2 * theta * arm.cov_xy(), 0.0)
        arms.append((arm.mean_y - theta * arm.mean_x, unit))
    (adj_c, unit_c), (adj_t, unit_t) = arms
    df = welch_df(unit_c, control.n, unit_t, treatment.n)
    effect = compare(
        "CUPED-adjusted Welch t-test (regression adjustment, theta pooled)",
        metric,
        ArmEstimate(adj_c, unit_c / control.n, control.n),
        ArmEstimate(adj_t, unit_t / treatment.n, treatment.n),
        alpha,
        df,
        f"difference in mean {metric} per user",
        relative=_cuped_relative(control, treatment, theta, adj_c, adj_t),
    )
    var_y = pooled.var_y()
    reduction = 1 - pooled_adjusted(pooled, theta) / var_y if var_y > 0 else 0.0
    correlation = cov / math.sqrt(var_x * var_y) if var_x > 0 and var_y > 0 else 0.0
    return CupedResult(effect, theta, reduction, correlation)


def _cuped_relative(
    control: MomentStats, treatment: MomentStats, theta: float, adj_c: float, adj_t: float
) -> tuple[float, float] | None:
    """(relative lift, its variance) with the control's unadjusted mean as the denominator."""
    mean_c = control.mean_y
    if mean_c == 0:
        return None
    mean_t = treatment.mean_y
    v_t = (treatment.var_y() + theta**2 * treatment.var_x() - 2 * theta * treatment.cov_xy()) / (
        treatment.n * mean_c**2
    )
    v_c = (
        control.var_y() * mean_t**2 / mean_c**2
        - 2 * theta * control.cov_xy() * mean_t / mean_c
        + theta**2 * control.var_x()
    ) / (control.n * mean_c**2)
    return (adj_t - adj_c) / abs(mean_c), max(v_t + v_c, 0.0)


def pooled_adjusted(pooled: MomentStats, theta: float) -> float:
    """Variance of `y - theta x` over the pooled sample."""
    return pooled.var_y() - 2 * theta * pooled.cov_xy() + theta**2 * pooled.var_x()


def _pooled(a: MomentStats, b: MomentStats) -> MomentStats:
    return MomentStats(
        "pooled",
        a.n + b.n,
        a.sum_y + b.sum_y,
        a.sum_y2 + b.sum_y2,
        a.sum_x + b.sum_x,
        a.sum_x2 + b.sum_x2,
        a.sum_xy + b.sum_xy,
    )


def _need_two(control: MomentStats, treatment: MomentStats) -> None:
    if control.n < 2 or treatment.n < 2:
        raise ValueError("each arm needs at least two users for a variance")


def compare(
    method: str,
    metric: str,
    control: ArmEstimate,
    treatment: ArmEstimate,
    alpha: float,
    df: float | None,
    estimand: str,
    relative: tuple[float, float] | None = None,
) -> EffectResult:
    """The difference `treatment - control` and the relative lift `difference / |control|`,
    each tested and bounded on its own scale with the same reference distribution (t at `df`,
    or normal when `df` is None). `relative` overrides the relative lift and its variance."""
    diff = float(treatment.estimate - control.estimate)
    se = math.sqrt(control.variance + treatment.variance)
    statistic = diff / se if se > 0 else 0.0
    p_value = two_sided_p(statistic, df) if se > 0 else 1.0
    q = critical(alpha, df)
    kind = "Welch-Satterthwaite t" if df is not None else "normal (Wald)"
    if relative is None and control.estimate != 0:
        relative = (
            diff / abs(control.estimate),
            _relative_variance(control, treatment),
        )
    lift, lift_se = (relative[0], math.sqrt(relative[1])) if relative else (None, None)
    return EffectResult(
        method=method,
        metric=metric,
        control_estimate=control.estimate,
        treatment_estimate=treatment.estimate,
        alpha=alpha,
        statistic=statistic,
        p_value=p_value,
        degrees_of_freedom=df,
        difference=diff,
        standard_error=se,
        difference_interval=Interval(diff - q * se, diff + q * se, 1 - alpha, kind),
        relative_lift=lift,
        relative_lift_interval=(
            Interval(lift - q * lift_se, lift + q * lift_se, 1 - alpha, f"delta method, {kind}")
            if lift is not None and lift_se is not None
            else None
        ),
        significant=bool(p_value < alpha),
        estimand=estimand,
        relative_lift_p_value=(
            (two_sided_p(lift / lift_se, df) if lift_se > 0 else 1.0)
            if lift is not None and lift_se is not None
            else None
        ),
        relative_lift_standard_error=lift_se,
    )


def _relative_variance(control: ArmEstimate, treatment: ArmEstimate) -> float:
    """Delta method for `(t - c) / |c|` with independent arms (gbstats `variance_of_ratios`)."""
    c, t = control.estimate, treatment.estimate
    return treatment.variance / c**2 + t**2 * control.variance / c**4


@dataclass(frozen=True)
class MeanPower:
    """What a continuous metric's sample can detect (two-sided z at `alpha`, with `power`)."""

    method: str
    alpha: float
    power: float
    minimum_detectable_difference: float
    power_at_difference: float | None  # for the `target` difference asked about


def mean_power(
    control: MomentStats, treatment: MomentStats, alpha: float = 0.05, power: float = DEFAULT_POWER
) -> float:
    """Minimum detectable absolute difference in means for this sample (two-sided z)."""
    return mean_power_analysis(control, treatment, alpha, power).minimum_detectable_difference


def mean_power_analysis(
    control: MomentStats,
    treatment: MomentStats,
    alpha: float = 0.05,
    power: float = DEFAULT_POWER,
    target: float | None = None,
) -> MeanPower:
    """`(z_{1-alpha/2} + z_power) * se` is the smallest difference detected with `power`; the
    power at `target` is `Phi(|target| / se - z_{1-alpha/2})` (the far tail neglected)."""
    se = math.sqrt(control.var_y() / control.n + treatment.var_y() / treatment.n)
    z_alpha = critical(alpha)
    mdd = (z_alpha + float(scipy_stats.norm.ppf(power))) * se
    at_target = (
        float(scipy_stats.norm.cdf(abs(target) / se - z_alpha))
        if target is not None and se > 0
        else None
    )
    return MeanPower("normal approximation, unpooled variances", alpha, power, mdd, at_target)
