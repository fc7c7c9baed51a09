"""The A/B report's evidence: every test the decision rule reads, gathered from the event store.

`gather_evidence` reads the sample (exposed users and conversions per arm); `with_metrics` adds
the goal metrics, guardrails, CUPED and the sequential test, each with `analysis.stats`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from service.analysis.ab_group_sequential import (
    GroupSequentialLook,
    LookPlan,
    group_sequential_look,
)
from service.analysis.decision import _p, _pct
from service.analysis.queries import (
    AbSample,
)
from service.analysis.stats import (
    DEFAULT_POWER,
    SRM_THRESHOLD,
    BayesianResult,
    CupedResult,
    EffectResult,
    GaussianPrior,
    MomentStats,
    NonInferiorityResult,
    PowerResult,
    ProportionStats,
    ProportionTestResult,
    SequentialResult,
    SrmResult,
    adjust_p_values,
    bayesian_proportions,
    cuped_test,
    non_inferiority,
    power_analysis,
    ratio_test,
    sequential_test,
    srm_check,
    two_proportion_test,
    welch_test,
)
from service.analysis.stats.proportions import DIFFERENCE
from service.flags.model import DEFAULT_RAMP_STEPS


@dataclass(frozen=True)
class DecisionPolicy:
    """The knobs of the decision rule; the defaults suit a conversion-style primary metric."""

    alpha: float = 0.05
    min_users_per_arm: int = 100  # below this the normal approximation is not trustworthy
    srm_threshold: float = SRM_THRESHOLD
    power: float = DEFAULT_POWER
    target_lift: float = 0.05  # smallest relative improvement worth detecting
    higher_is_better: bool = True
    ramp_steps: tuple[float, ...] = DEFAULT_RAMP_STEPS
    correction: str = "holm"  # over goal metrics: holm, benjamini-hochberg or none
    max_several_arms_share: float = 0.01  # users seen in both arms, above which: unhealthy
    guardrails: tuple[GuardrailSpec, ...] = ()
    engine: str = "frequentist"  # one of ENGINES: what the primary metric is decided on
    prior: GaussianPrior = field(default_factory=GaussianPrior)  # Bayesian: prior on the lift
    plan: LookPlan = field(default_factory=LookPlan)  # group-sequential: the planned looks

    @property
    def sequential(self) -> bool:
        """Decided on the always-valid mSPRT p-value (safe under peeking)."""
        return self.engine == "sequential"


# How the primary metric is decided; each keeps the false-positive rate at `alpha`.
ENGINES = {
    "frequentist": "fixed horizon: pooled z-test (CUPED-adjusted when there is a pre-period)",
    "sequential": "mixture SPRT: always-valid p-value, safe to look at any time",
    "bayesian": "Bayesian: chance to win beyond 1 - alpha/2 (gbstats effect test)",
    "group-sequential": "planned looks: z against the Lan-DeMets alpha-spending boundary",
}


@dataclass(frozen=True)
class GuardrailSpec:
    """A guardrail metric and its declared non-inferiority margin (treatment worse by less)."""

    name: str
    margin: float
    relative: bool = False  # margin on the relative change (0.2 = 20% worse) or absolute
    higher_is_better: bool = False


@dataclass(frozen=True)
class GoalResult:
    """A further goal metric (continuous: Welch, or CUPED when there is a pre-period)."""

    metric: str
    effect: EffectResult
    cuped: CupedResult | None
    adjusted_p: float


@dataclass(frozen=True)
class GuardrailResult:
    """A guardrail's comparison (delta-method ratio) and its non-inferiority verdict."""

    spec: GuardrailSpec
    effect: EffectResult | None
    test: NonInferiorityResult | None
    missing: str | None  # why it could not be computed


@dataclass(frozen=True)
class Evidence:
    """Everything the decision rule looks at; results are None when they cannot be computed."""

    control: ProportionStats
    treatment: ProportionStats
    srm: SrmResult | None
    test: ProportionTestResult | None
    power: PowerResult | None
    users_in_several_arms: int = 0
    cuped: CupedResult | None = None  # the primary metric adjusted by its pre-period
    sequential: SequentialResult | None = None
    bayesian: BayesianResult | None = None
    primary_p: float | None = None  # the decisive p-value, after the multiple-testing correction
    goals: tuple[GoalResult, ...] = ()
    guardrails: tuple[GuardrailResult, ...] = ()
    alpha: float = 0.05
    engine: str = "frequentist"
    group_sequential: GroupSequentialLook | None = None

    @property
    def primary_significant(self) -> bool:
        """The primary goal metric differs, by its decisive (corrected) p-value; for the
        group-sequential engine, by crossing this look's boundary."""
        if self.engine == "group-sequential":
            return self.group_sequential is not None and self.group_sequential.crossed
        p = self.primary_p if self.primary_p is not None else None
        if p is None and self.test is not None:
            p = self.test.p_value
        return p is not None and p < self.alpha


def data_problems(
    sample: AbSample, *, known_metrics: Sequence[str], other_problems: Sequence[str] = ()
) -> list[str]:
    """What is missing for an A/B comparison, each in words a person can act on."""
    problems = list(other_problems)
    if sample.metric not in known_metrics:
        known = ", ".join(known_metrics) or "none"
        problems.append(
            f"metric '{sample.metric}' has no outcomes in the event store (known metrics: {known})"
        )
    if not sample.exposed_users and not sample.users_in_several_arms:
        problems.append(
            f"flag '{sample.flag}' has no exposures of {', '.join(map(repr, sample.arms))} "
            f"in the window {_window_words(sample)}"
        )
        return problems
    problems += [
        f"arm '{arm}' has no exposures in the window {_window_words(sample)}"
        for arm, stats in sample.arms.items()
        if stats.users == 0
    ]
    return problems


def _window_words(sample: AbSample) -> str:
    window = sample.window.to_dict()
    return f"[{window['start'] or 'beginning'}, {window['end'] or 'now'})"


def gather_evidence(
    control: ProportionStats,
    treatment: ProportionStats,
    expected_weights: dict[str, float] | None,
    policy: DecisionPolicy,
) -> Evidence:
    """Run the statistics that the data allows (a test needs users in both arms)."""
    counts = {control.arm: control.users, treatment.arm: treatment.users}
    weights = expected_weights or {control.arm: 1.0, treatment.arm: 1.0}
    both = control.users > 0 and treatment.users > 0
    return Evidence(
        control=control,
        treatment=treatment,
        srm=srm_check(counts, weights, policy.srm_threshold) if sum(counts.values()) else None,
        test=two_proportion_test(control, treatment, policy.alpha) if both else None,
        power=(
            power_analysis(control, treatment, policy.alpha, policy.power, policy.target_lift)
            if both
            else None
        ),
    )


def with_metrics(
    ev: Evidence,
    policy: DecisionPolicy,
    *,
    arms: tuple[str, str],
    several: int,
    primary: dict[str, MomentStats] | None,
    goals: dict[str, dict[str, MomentStats]],
    guardrails: dict[str, dict[str, MomentStats]],
) -> Evidence:
    """Add CUPED, sequential, further goals (corrected together) and guardrails to `ev`."""
    compared = ev.test is not None
    staged = policy.engine == "group-sequential"
    # The boundaries are for the unadjusted z: no CUPED under the group-sequential engine.
    cuped = _cuped(primary, arms, policy.alpha) if compared and not staged else None
    sequential = _sequential(ev, policy) if policy.sequential and compared else None
    bayesian = _bayesian(ev, policy) if policy.engine == "bayesian" and compared else None
    looked = None
    if staged and ev.test is not None:
        looked = group_sequential_look(ev.test, policy.plan, policy.alpha)
    goal_effects = {
        metric: found
        for metric, moments in goals.items()
        if (found := _goal(moments, arms, policy.alpha)) is not None
    }
    # The group-sequential boundary already controls the primary metric's error over the
    # looks; the goal metrics are corrected among themselves.
    decisive = None if staged else _decisive_p(ev, cuped, sequential, bayesian)
    # The family: the primary metric first, then the further goals, corrected together.
    raw = [] if decisive is None else [decisive]
    raw += [_decisive_effect(*found).p_value for found in goal_effects.values()]
    adjusted = adjust_p_values(raw, policy.correction) if raw else []
    goal_p = adjusted[1:] if decisive is not None else adjusted
    return replace(
        ev,
        users_in_several_arms=several,
        cuped=cuped,
        sequential=sequential,
        bayesian=bayesian,
        primary_p=adjusted[0] if decisive is not None else None,
        goals=tuple(
            GoalResult(metric, effect, cup, p)
            for (metric, (effect, cup)), p in zip(goal_effects.items(), goal_p, strict=True)
        ),
        guardrails=tuple(
            _guardrail(spec, guardrails.get(spec.name), arms, policy.alpha)
            for spec in policy.guardrails
        ),
        alpha=policy.alpha,
        engine=policy.engine,
        group_sequential=looked,
    )


DEGENERATE_REDUCTION = 0.999


def _cuped(
    moments: dict[str, MomentStats] | None, arms: tuple[str, str], alpha: float
) -> CupedResult | None:
    """CUPED on the primary metric, when every arm has users and some user a pre-period."""
    if not moments or not all(moments[arm].n >= 2 for arm in arms):
        return None
    if sum(moments[arm].sum_x2 for arm in arms) == 0:
        return None  # no pre-exposure values: nothing to adjust by
    result = cuped_test(moments[arms[0]], moments[arms[1]], alpha, metric="converted")
    # The per-user values are converted-or-not: the two-proportion test's estimand.
    result = replace(result, effect=replace(result.effect, estimand=DIFFERENCE))
    # A "pre-period" that explains all of the metric's variance is a copy of the outcome, not
    # a covariate: it would leave nothing to compare, so decide on the unadjusted test.
    return None if result.variance_reduction >= DEGENERATE_REDUCTION else result


def _sequential(ev: Evidence, policy: DecisionPolicy) -> SequentialResult | None:
    assert ev.test is not None
    test = ev.test
    variance = sum(
        arm.conversions / arm.users * (1 - arm.conversions / arm.users) / arm.users
        for arm in (test.control, test.treatment)
    )
    if variance <= 0:
        return None
    # Mixture centred on the effect worth detecting (Johari et al. 2017 tune tau the same way).
    baseline = test.control.conversions / test.control.users
    tau = max(policy.target_lift * baseline, 1e-4)
    return sequential_test(test.difference, math.sqrt(variance), policy.alpha, tau**2)


def _bayesian(ev: Evidence, policy: DecisionPolicy) -> BayesianResult | None:
    assert ev.test is not None
    if not ev.control.conversions or ev.control.conversions == ev.control.users:
        return None  # no variance in control: the lift's posterior is undefined
    return bayesian_proportions(
        ev.control, ev.treatment, policy.alpha, policy.prior, policy.higher_is_better
    )


def _decisive_p(
    ev: Evidence,
    cuped: CupedResult | None,
    sequential: SequentialResult | None,
    bayesian: BayesianResult | None = None,
) -> float | None:
    """The primary metric's p-value the rule uses: mSPRT if sequential; for the Bayesian engine
    the posterior's two-sided tail `2 min(P(win), P(lose))` (below alpha exactly when the chance
    to win passes 1 - alpha/2 either way); else CUPED when there is a pre-period, else the
    two-proportion test. Every one of them is about the difference in conversion rate."""
    if sequential is not None:
        return sequential.p_value
    if bayesian is not None:
        return 2 * min(bayesian.chance_to_win, 1 - bayesian.chance_to_win)
    if cuped is not None:
        return cuped.effect.p_value
    return ev.test.p_value if ev.test is not None else None


def _goal(
    moments: dict[str, MomentStats], arms: tuple[str, str], alpha: float
) -> tuple[EffectResult, CupedResult | None] | None:
    control, treatment = moments.get(arms[0]), moments.get(arms[1])
    if control is None or treatment is None or min(control.n, treatment.n) < 2:
        return None
    effect = welch_test(control, treatment, alpha, metric="")
    has_pre = control.sum_x2 + treatment.sum_x2 > 0
    return effect, cuped_test(control, treatment, alpha) if has_pre else None


def _decisive_effect(effect: EffectResult, cuped: CupedResult | None) -> EffectResult:
    return cuped.effect if cuped is not None else effect


def _guardrail(
    spec: GuardrailSpec,
    moments: dict[str, MomentStats] | None,
    arms: tuple[str, str],
    alpha: float,
) -> GuardrailResult:
    control, treatment = (moments or {}).get(arms[0]), (moments or {}).get(arms[1])
    if control is None or treatment is None or min(control.n, treatment.n) < 2:
        return GuardrailResult(spec, None, None, "fewer than two users in an arm")
    if control.sum_x == 0 or treatment.sum_x == 0:
        return GuardrailResult(spec, None, None, "no requests measured in an arm")
    effect = ratio_test(control, treatment, alpha, metric=spec.name)
    test = non_inferiority(
        effect, spec.margin, relative=spec.relative, higher_is_better=spec.higher_is_better
    )
    return GuardrailResult(spec, effect, test, None)


def _is_better(test: ProportionTestResult, policy: DecisionPolicy) -> bool:
    return (test.difference > 0) == policy.higher_is_better


def _effect(test: ProportionTestResult) -> str:
    diff = test.difference_interval
    lift = f", {test.relative_lift:+.1%} relative" if test.relative_lift is not None else ""
    return (
        f"{_pct(test.treatment.rate)} vs {_pct(test.control.rate)}, "
        f"{test.difference * 100:+.2f} pp ({diff.level:.0%} CI {diff.low * 100:+.2f} to "
        f"{diff.high * 100:+.2f} pp){lift}, {_p(test.p_value)}"
    )


def _arm_counts(ev: Evidence) -> str:
    return f"{ev.control.arm} {ev.control.users:,} users, {ev.treatment.arm} {ev.treatment.users:,}"
