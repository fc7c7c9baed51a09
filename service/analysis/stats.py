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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

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


# --- continuous and ratio metrics ------------------------------------------------------------


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
class EffectResult:
    """A difference between two arms' estimates, with its test and intervals.

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


def welch_test(
    control: MomentStats, treatment: MomentStats, alpha: float = 0.05, metric: str = "y"
) -> EffectResult:
    """Welch's unequal-variance t-test on the means of `y`, with a Welch-Satterthwaite interval.

    Relative lift `mean_t / mean_c - 1` gets a delta-method interval (normal, on the ratio of
    two independent means), as GrowthBook's frequentist engine does.
    """
    _need_two(control, treatment)
    var_c, var_t = control.var_y() / control.n, treatment.var_y() / treatment.n
    df = (
        (var_c + var_t) ** 2 / (var_c**2 / (control.n - 1) + var_t**2 / (treatment.n - 1))
        if var_c + var_t > 0
        else math.inf
    )
    return _effect(
        "Welch t-test",
        metric,
        (control.mean_y, var_c),
        (treatment.mean_y, var_t),
        alpha,
        df,
    )


def ratio_test(
    control: MomentStats, treatment: MomentStats, alpha: float = 0.05, metric: str = "y/x"
) -> EffectResult:
    """Ratio metric `sum y / sum x` per arm (e.g. errors per request, with users as the unit).

    The variance of each arm's ratio comes from the delta method (Deng et al. 2018, "Applying
    the Delta Method in Metric Analytics"), which accounts for requests clustering in users.
    """
    _need_two(control, treatment)
    return _effect(
        "delta-method z-test (ratio metric)",
        metric,
        _ratio_estimate(control),
        _ratio_estimate(treatment),
        alpha,
        None,
    )


def _ratio_estimate(arm: MomentStats) -> tuple[float, float]:
    mean_x, mean_y = arm.mean_x, arm.mean_y
    if mean_x == 0:
        raise ValueError(f"arm {arm.arm!r}: the ratio's denominator sums to 0")
    ratio = mean_y / mean_x
    variance = (
        arm.var_y() / mean_x**2
        - 2 * mean_y * arm.cov_xy() / mean_x**3
        + mean_y**2 * arm.var_x() / mean_x**4
    ) / arm.n
    return ratio, max(variance, 0.0)


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
    """CUPED (Deng, Xu, Kohavi, Walker 2013): `y - theta (x - mean x)` with `x` the user's
    pre-exposure value of the metric and `theta = cov(x, y) / var(x)` pooled over both arms.

    The adjusted means are compared with a z-test (the samples are large); the variance of each
    arm's adjusted mean is `(var y - 2 theta cov + theta^2 var x) / n`.
    """
    _need_two(control, treatment)
    pooled = _pooled(control, treatment)
    var_x, cov = pooled.var_x(), pooled.cov_xy()
    theta = cov / var_x if var_x > 0 else 0.0
    grand_x = pooled.mean_x
    estimates = []
    adjusted_vars = []
    for arm in (control, treatment):
        var = arm.var_y() - 2 * theta * arm.cov_xy() + theta**2 * arm.var_x()
        adjusted_vars.append(max(var, 0.0))
        estimates.append((arm.mean_y - theta * (arm.mean_x - grand_x), max(var, 0.0) / arm.n))
    var_y = pooled.var_y()
    reduction = 1 - pooled_adjusted(pooled, theta) / var_y if var_y > 0 else 0.0
    correlation = cov / math.sqrt(var_x * var_y) if var_x > 0 and var_y > 0 else 0.0
    effect = _effect("CUPED-adjusted z-test", metric, estimates[0], estimates[1], alpha, None)
    return CupedResult(effect, theta, reduction, correlation)


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


def _effect(
    method: str,
    metric: str,
    control: tuple[float, float],  # (estimate, variance of the estimate)
    treatment: tuple[float, float],
    alpha: float,
    df: float | None,
) -> EffectResult:
    (est_c, var_c), (est_t, var_t) = control, treatment
    diff, se = float(est_t - est_c), math.sqrt(var_c + var_t)
    dist: Any = scipy_stats.norm if df is None or math.isinf(df) else scipy_stats.t(df)
    critical = float(dist.ppf(1 - alpha / 2))
    statistic = diff / se if se > 0 else 0.0
    p_value = float(2 * dist.sf(abs(statistic))) if se > 0 else 1.0
    level = 1 - alpha
    interval_name = "Welch-Satterthwaite t" if df is not None else "normal (Wald)"
    return EffectResult(
        method=method,
        metric=metric,
        control_estimate=est_c,
        treatment_estimate=est_t,
        alpha=alpha,
        statistic=statistic,
        p_value=p_value,
        degrees_of_freedom=df,
        difference=diff,
        standard_error=se,
        difference_interval=Interval(
            diff - critical * se, diff + critical * se, level, interval_name
        ),
        relative_lift=est_t / est_c - 1 if est_c != 0 else None,
        relative_lift_interval=_relative_interval(est_c, var_c, est_t, var_t, alpha),
        significant=bool(p_value < alpha),
    )


def _relative_interval(
    est_c: float, var_c: float, est_t: float, var_t: float, alpha: float
) -> Interval | None:
    """Delta-method interval on `est_t / est_c - 1` for independent arms."""
    if est_c == 0:
        return None
    lift = est_t / est_c - 1
    se = math.sqrt(var_t / est_c**2 + est_t**2 * var_c / est_c**4)
    z = float(scipy_stats.norm.ppf(1 - alpha / 2))
    return Interval(lift - z * se, lift + z * se, 1 - alpha, "delta method (relative lift)")


def mean_power(
    control: MomentStats, treatment: MomentStats, alpha: float = 0.05, power: float = DEFAULT_POWER
) -> float:
    """Minimum detectable absolute difference in means for this sample (two-sided z)."""
    z = scipy_stats.norm.ppf(1 - alpha / 2) + scipy_stats.norm.ppf(power)
    return float(z * math.sqrt(control.var_y() / control.n + treatment.var_y() / treatment.n))


# --- guardrails: one-sided non-inferiority ----------------------------------------------------


@dataclass(frozen=True)
class NonInferiorityResult:
    """Is the treatment no worse than control by more than `margin`?

    `outcome` is `non_inferior` (the one-sided bound clears the margin), `inferior` (the
    treatment is worse than the margin allows, one-sided at `alpha`) or `inconclusive`.
    """

    method: str
    metric: str
    margin: float
    relative: bool  # margin on the relative lift (0.1 = 10% worse) or on the difference
    higher_is_better: bool
    estimate: float | None
    bound: float | None  # the one-sided (1 - alpha) bound on the worse side
    p_value: float | None  # of H0: worse by at least the margin
    alpha: float
    outcome: str


def non_inferiority(
    effect: EffectResult,
    margin: float,
    *,
    relative: bool = False,
    higher_is_better: bool = False,
) -> NonInferiorityResult:
    """One-sided non-inferiority test of an `EffectResult` against a declared `margin` (> 0).

    Works on the difference (`relative=False`) or on the relative lift, with normal bounds at
    the effect's `alpha` one-sided (so a 0.05 report uses a 95% one-sided bound).
    """
    if margin <= 0:
        raise ValueError(f"a non-inferiority margin must be positive, got {margin}")
    estimate, se = _on_scale(effect, relative)
    name = f"one-sided non-inferiority z-test ({'relative' if relative else 'absolute'} margin)"
    if estimate is None or se is None:
        return NonInferiorityResult(
            name,
            effect.metric,
            margin,
            relative,
            higher_is_better,
            None,
            None,
            None,
            effect.alpha,
            "inconclusive",
        )
    sign = -1.0 if higher_is_better else 1.0  # orient so that larger `worse` is worse
    worse = sign * estimate
    z = float(scipy_stats.norm.ppf(1 - effect.alpha))
    upper, lower = worse + z * se, worse - z * se
    p_value = (
        float(scipy_stats.norm.cdf((worse - margin) / se)) if se > 0 else float(worse >= margin)
    )
    outcome = (
        "non_inferior" if upper < margin else "inferior" if lower > margin else ("inconclusive")
    )
    return NonInferiorityResult(
        name,
        effect.metric,
        margin,
        relative,
        higher_is_better,
        estimate,
        sign * upper,
        p_value,
        effect.alpha,
        outcome,
    )


def _on_scale(effect: EffectResult, relative: bool) -> tuple[float | None, float | None]:
    if not relative:
        return effect.difference, effect.standard_error
    lift, interval = effect.relative_lift, effect.relative_lift_interval
    if lift is None or interval is None:
        return None, None
    z = float(scipy_stats.norm.ppf(1 - effect.alpha / 2))
    return lift, (interval.high - interval.low) / (2 * z)


# --- multiple testing -------------------------------------------------------------------------


def _holm(p_values: Sequence[float]) -> list[float]:
    m, adjusted, running = len(p_values), [0.0] * len(p_values), 0.0
    for rank, index in enumerate(sorted(range(m), key=lambda i: p_values[i])):
        running = max(running, min(1.0, (m - rank) * p_values[index]))
        adjusted[index] = running
    return adjusted


def _benjamini_hochberg(p_values: Sequence[float]) -> list[float]:
    m, adjusted, running = len(p_values), [0.0] * len(p_values), 1.0
    order = sorted(range(m), key=lambda i: p_values[i], reverse=True)
    for rank, index in zip(range(m, 0, -1), order, strict=True):
        running = min(running, p_values[index] * m / rank)
        adjusted[index] = min(running, 1.0)
    return adjusted


# A registry: the method's name in decision.json -> its adjustment.
P_VALUE_ADJUSTMENTS: dict[str, Callable[[Sequence[float]], list[float]]] = {
    "holm": _holm,
    "benjamini-hochberg": _benjamini_hochberg,
    "none": list,
}
ADJUSTMENT_NAMES = {
    "holm": "Holm step-down (family-wise error)",
    "benjamini-hochberg": "Benjamini-Hochberg (false discovery rate)",
    "none": "no correction",
}


def adjust_p_values(p_values: Sequence[float], method: str = "holm") -> list[float]:
    """Adjusted p-values for a family of tests (`holm`, `benjamini-hochberg` or `none`)."""
    try:
        adjust = P_VALUE_ADJUSTMENTS[method]
    except KeyError:
        raise ValueError(
            f"unknown correction {method!r}; choose one of {sorted(P_VALUE_ADJUSTMENTS)}"
        ) from None
    return adjust(list(p_values))


# --- sequential testing (valid under continuous peeking) --------------------------------------


@dataclass(frozen=True)
class SequentialResult:
    """Mixture SPRT on a difference: an always-valid p-value and a confidence sequence."""

    method: str
    difference: float
    standard_error: float
    mixture_variance: float
    alpha: float
    likelihood_ratio: float
    p_value: float  # always valid at this look; a caller may keep the running minimum
    interval: Interval
    reject: bool


def sequential_test(
    difference: float, standard_error: float, alpha: float = 0.05, mixture_variance: float = 1e-4
) -> SequentialResult:
    """Normal-mixture SPRT (Johari et al. 2017, "Peeking at A/B tests"; Robbins 1970).

    With `V = standard_error^2` and a N(0, tau^2) mixture over the effect (`tau^2 =
    mixture_variance`, on the scale of `difference`), the mixture likelihood ratio is
    `sqrt(V / (V + tau^2)) exp(d^2 tau^2 / (2 V (V + tau^2)))`. `1 / LR` is an always-valid
    p-value and `{d : LR(d) < 1/alpha}` a confidence sequence, so a controller may look after
    every batch of events without inflating the false-positive rate.
    """
    if standard_error <= 0 or mixture_variance <= 0:
        raise ValueError("need a positive standard error and mixture variance")
    v, tau2 = standard_error**2, mixture_variance
    exponent = difference**2 * tau2 / (2 * v * (v + tau2))
    log_lr = 0.5 * math.log(v / (v + tau2)) + exponent
    half_width = math.sqrt(v * (v + tau2) / tau2 * (math.log((v + tau2) / v) - 2 * math.log(alpha)))
    p_value = min(1.0, math.exp(-log_lr)) if log_lr < 700 else 0.0
    return SequentialResult(
        method="mixture SPRT (normal mixture), always-valid p-value and confidence sequence",
        difference=difference,
        standard_error=standard_error,
        mixture_variance=tau2,
        alpha=alpha,
        likelihood_ratio=math.exp(min(log_lr, 700)),
        p_value=p_value,
        interval=Interval(
            difference - half_width, difference + half_width, 1 - alpha, "mSPRT confidence sequence"
        ),
        reject=p_value <= alpha,
    )
