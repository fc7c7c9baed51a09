"""The decision an A/B report ends in, and the `decision.json` that carries it to `rollout`.

`decide_ab` gathers the evidence (sample size, sample ratio mismatch, the test on the primary
metric, power) with `analysis.stats`, then applies the decision rule: an ordered list of rules
where the first one that applies wins. Later checks (guardrail metrics, multiple-testing
corrections, sequential boundaries) slot in as more entries in `Evidence` and `RULES`.

`next_step` is the treatment's share of traffic (percent) to set after applying the decision:
the next ramp step for `ramp`, 0 for `rollback`, the current step for `hold` (null when it is
unknown) and the last step for `ship` (the treatment's bento becomes the flag's default).
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from service.analysis.queries import (
    AbSample,
    CumulativePoint,
    Window,
    ab_sample,
    bucket_seconds_for,
    cumulative_by_bucket,
    guardrail_moments,
    known_metrics,
    metric_moments,
)
from service.analysis.stats import (
    ADJUSTMENT_NAMES,
    DEFAULT_POWER,
    SRM_THRESHOLD,
    CupedResult,
    EffectResult,
    MomentStats,
    NonInferiorityResult,
    PowerResult,
    ProportionStats,
    ProportionTestResult,
    SequentialResult,
    SrmResult,
    adjust_p_values,
    cuped_test,
    non_inferiority,
    power_analysis,
    rate_interval,
    ratio_test,
    sequential_test,
    srm_check,
    two_proportion_test,
    welch_test,
)

SCHEMA_VERSION = 1
RECOMMENDATIONS = ("ramp", "hold", "rollback", "ship")
DEFAULT_RAMP_STEPS: tuple[float, ...] = (5, 25, 50, 100)


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
    sequential: bool = False  # decide on the always-valid mSPRT p-value (safe under peeking)


@dataclass(frozen=True)
class GuardrailSpec:
    """A guardrail metric and its declared non-inferiority margin (treatment worse by less)."""

    name: str
    margin: float
    relative: bool = False  # margin on the relative change (0.2 = 20% worse) or absolute
    higher_is_better: bool = False


# Errors and fallbacks: at most 1 pp more than control; latency: at most 20% slower.
DEFAULT_GUARDRAILS: tuple[GuardrailSpec, ...] = (
    GuardrailSpec("error_rate", 0.01),
    GuardrailSpec("fallback_rate", 0.01),
    GuardrailSpec("latency_ms", 0.20, relative=True),
)


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
class Check:
    """One check in `decision.json`; `passed` says whether it, on its own, supports ramping."""

    name: str
    method: str
    estimate: float | None
    statistic: float | None
    p_value: float | None
    interval: tuple[float, float] | None
    passed: bool
    details: dict[str, Any] = field(default_factory=dict)


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
    primary_p: float | None = None  # the decisive p-value, after the multiple-testing correction
    goals: tuple[GoalResult, ...] = ()
    guardrails: tuple[GuardrailResult, ...] = ()
    alpha: float = 0.05

    @property
    def primary_significant(self) -> bool:
        """The primary goal metric differs, by its decisive (corrected) p-value."""
        p = self.primary_p if self.primary_p is not None else None
        if p is None and self.test is not None:
            p = self.test.p_value
        return p is not None and p < self.alpha


@dataclass(frozen=True)
class Verdict:
    """What to do, where to go next, and why."""

    recommendation: str
    next_step: float | None
    reasons: list[str]


@dataclass(frozen=True)
class Decision:
    """The content of `decision.json` (see `to_dict` for its exact shape)."""

    flag: str
    kind: str
    metric: str
    window: dict[str, str | None]
    arms: list[dict[str, Any]]
    users_in_several_arms: int
    alpha: float
    checks: list[Check]
    recommendation: str
    current_step: float | None
    next_step: float | None
    reasons: list[str]
    summary: str
    generated_at: str
    missing: list[str] = field(default_factory=list)  # inputs or data the report lacked

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready `decision.json` document (NaN and infinities become null)."""
        document = {"schema_version": SCHEMA_VERSION, **asdict(self)}
        return _json_safe(document)


Rule = Callable[[Evidence, DecisionPolicy, float | None], Verdict | None]


def decide_ab(
    sample: AbSample,
    *,
    control: str,
    treatment: str,
    expected_weights: dict[str, float] | None = None,
    current_step: float | None = None,
    policy: DecisionPolicy | None = None,
    primary_moments: dict[str, MomentStats] | None = None,
    goal_moments: dict[str, dict[str, MomentStats]] | None = None,
    guardrail_moments: dict[str, dict[str, MomentStats]] | None = None,
) -> Decision:
    """Evidence, rule and `decision.json` content for one A/B comparison of `sample`.

    `primary_moments` (per arm, with the pre-exposure value as `x`) turns on CUPED for the
    primary metric; `goal_moments` adds continuous goal metrics (corrected together with the
    primary); `guardrail_moments` feeds the guardrails of `policy.guardrails`.
    """
    policy = policy or DecisionPolicy()
    base = gather_evidence(sample.arms[control], sample.arms[treatment], expected_weights, policy)
    evidence = with_metrics(
        base,
        policy,
        arms=(control, treatment),
        several=sample.users_in_several_arms,
        primary=primary_moments,
        goals=goal_moments or {},
        guardrails=guardrail_moments or {},
    )
    verdict = recommend(evidence, policy, current_step)
    window = {
        **sample.window.to_dict(),
        # The data's own bounds, so an unbounded window still says what period it covers.
        "first_exposure": _iso(sample.first_exposure),
        "last_exposure": _iso(sample.last_exposure),
    }
    return Decision(
        flag=sample.flag,
        kind="ab",
        metric=sample.metric,
        window=window,
        arms=arm_rows(evidence, policy.alpha),
        users_in_several_arms=sample.users_in_several_arms,
        alpha=policy.alpha,
        checks=checks(evidence, policy),
        recommendation=verdict.recommendation,
        current_step=current_step,
        next_step=verdict.next_step,
        reasons=verdict.reasons,
        summary=summary_paragraph(sample.flag, sample.metric, evidence, verdict),
        generated_at=datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
    )


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


def hold_for_missing(decision: Decision, problems: Sequence[str]) -> Decision:
    """`decision` turned into a hold that says exactly what is missing."""
    if not problems:
        return decision
    reasons = [f"missing: {p}" for p in problems] + ["hold until the data is there"]
    # What the data said regardless, so a reader sees e.g. a broken split as well.
    otherwise = f" Otherwise the data says: {decision.recommendation}, because " + "; ".join(
        decision.reasons
    )
    summary = (
        f"**HOLD** for `{decision.flag}`: the report cannot decide because data or inputs are "
        f"missing. {' '.join(f'Missing: {p}.' for p in problems)}"
        f"{otherwise if decision.reasons else ''}"
    )
    check = missing_inputs_check(problems)
    return replace(
        decision,
        recommendation="hold",
        next_step=decision.current_step,
        reasons=reasons,
        summary=summary,
        checks=[check, *decision.checks],
        missing=list(problems),
    )


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
    cuped = _cuped(primary, arms, policy.alpha) if compared else None
    sequential = _sequential(ev, policy) if policy.sequential and compared else None
    goal_effects = {
        metric: found
        for metric, moments in goals.items()
        if (found := _goal(moments, arms, policy.alpha)) is not None
    }
    decisive = _decisive_p(ev, cuped, sequential)
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
        primary_p=adjusted[0] if decisive is not None else None,
        goals=tuple(
            GoalResult(metric, effect, cup, p)
            for (metric, (effect, cup)), p in zip(goal_effects.items(), goal_p, strict=True)
        ),
        guardrails=tuple(
            _guardrail(spec, guardrails.get(spec.name), arms) for spec in policy.guardrails
        ),
        alpha=policy.alpha,
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
    result = cuped_test(moments[arms[0]], moments[arms[1]], alpha)
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


def _decisive_p(
    ev: Evidence, cuped: CupedResult | None, sequential: SequentialResult | None
) -> float | None:
    """The primary metric's p-value the rule uses: mSPRT if sequential, else CUPED when there
    is a pre-period, else the two-proportion test."""
    if sequential is not None:
        return sequential.p_value
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
    spec: GuardrailSpec, moments: dict[str, MomentStats] | None, arms: tuple[str, str]
) -> GuardrailResult:
    control, treatment = (moments or {}).get(arms[0]), (moments or {}).get(arms[1])
    if control is None or treatment is None or min(control.n, treatment.n) < 2:
        return GuardrailResult(spec, None, None, "fewer than two users in an arm")
    if control.sum_x == 0 or treatment.sum_x == 0:
        return GuardrailResult(spec, None, None, "no requests measured in an arm")
    effect = ratio_test(control, treatment, metric=spec.name)
    test = non_inferiority(
        effect, spec.margin, relative=spec.relative, higher_is_better=spec.higher_is_better
    )
    return GuardrailResult(spec, effect, test, None)


def recommend(evidence: Evidence, policy: DecisionPolicy, current_step: float | None) -> Verdict:
    """Apply `RULES` in order; the first rule that returns a verdict decides."""
    for rule in RULES:
        verdict = rule(evidence, policy, current_step)
        if verdict is not None:
            return verdict
    raise AssertionError("the last rule always decides")  # pragma: no cover


def _no_exposures(ev: Evidence, _policy: DecisionPolicy, step: float | None) -> Verdict | None:
    if ev.control.users or ev.treatment.users:
        return None
    return Verdict(
        "hold",
        step,
        [
            f"no exposures: no users were exposed to '{ev.control.arm}' or '{ev.treatment.arm}' "
            "in the window; check the flag name, the variant names and the window"
        ],
    )


def _too_few_users(ev: Evidence, policy: DecisionPolicy, step: float | None) -> Verdict | None:
    if min(ev.control.users, ev.treatment.users) >= policy.min_users_per_arm:
        return None
    return Verdict(
        "hold",
        step,
        [
            f"too few users: {_arm_counts(ev)}; need at least {policy.min_users_per_arm:,} per arm "
            "before the comparison means anything"
        ],
    )


def _sample_ratio_mismatch(
    ev: Evidence, _policy: DecisionPolicy, step: float | None
) -> Verdict | None:
    if ev.srm is None or ev.srm.healthy:
        return None
    expected = ", ".join(f"{arm} {n:,.0f}" for arm, n in ev.srm.expected.items())
    return Verdict(
        "hold",
        step,
        [
            f"sample ratio mismatch: {_arm_counts(ev)} against an expected {expected} "
            f"(chi-square p = {ev.srm.p_value:.2g} < {ev.srm.threshold}); the assignment or the "
            "logging is broken, so the comparison cannot be trusted until it is fixed"
        ],
    )


def _users_in_both_arms(ev: Evidence, policy: DecisionPolicy, step: float | None) -> Verdict | None:
    exposed = ev.control.users + ev.treatment.users + ev.users_in_several_arms
    share = ev.users_in_several_arms / exposed if exposed else 0.0
    if share <= policy.max_several_arms_share:
        return None
    return Verdict(
        "hold",
        step,
        [
            f"users in both arms: {ev.users_in_several_arms:,} users ({share:.1%}) were served "
            f"both variants (allowed: {policy.max_several_arms_share:.0%}); assignment is not "
            "sticky, so the arms are not independent"
        ],
    )


def _guardrail_lost(ev: Evidence, _policy: DecisionPolicy, _step: float | None) -> Verdict | None:
    lost = [g for g in ev.guardrails if g.test is not None and g.test.outcome == "inferior"]
    if not lost:
        return None
    return Verdict(
        "rollback",
        0,
        [f"guardrail lost: {_guardrail_words(g)}" for g in lost]
        + [f"roll back: send no traffic to {ev.treatment.arm}"],
    )


def _goal_worse(ev: Evidence, policy: DecisionPolicy, _step: float | None) -> Verdict | None:
    worse = [g for g in ev.goals if g.adjusted_p < policy.alpha and not _goal_better(g, policy)]
    if not worse:
        return None
    return Verdict(
        "rollback",
        0,
        [f"goal metric {g.metric} is significantly worse: {_goal_words(g)}" for g in worse]
        + [f"roll back: send no traffic to {ev.treatment.arm}"],
    )


def _significant_better(ev: Evidence, policy: DecisionPolicy, step: float | None) -> Verdict | None:
    if ev.test is None or not ev.primary_significant or not _primary_better(ev, policy):
        return None
    finding = f"{ev.treatment.arm} is significantly better: {_effect(ev.test)}{_decided_by(ev)}"
    pending = [g for g in ev.guardrails if g.test is None or g.test.outcome != "non_inferior"]
    if pending:
        return Verdict(
            "hold",
            step,
            [finding]
            + [f"guardrail not yet shown non-inferior: {_guardrail_words(g)}" for g in pending]
            + ["hold until every guardrail clears its margin"],
        )
    target = next_ramp_step(step, policy.ramp_steps)
    if target is None:
        return Verdict(
            "ship",
            policy.ramp_steps[-1],
            [finding, f"already at the last rollout step ({_step(step)}): ship it"],
        )
    known = f"from {_step(step)} " if step is not None else "(current step unknown) "
    return Verdict("ramp", target, [finding, f"ramp {known}to {_step(target)}"])


def _significant_worse(
    ev: Evidence, _policy: DecisionPolicy, _step: float | None
) -> Verdict | None:
    if ev.test is None or not ev.primary_significant:
        return None  # a significant result that is not better is worse (the rule order)
    return Verdict(
        "rollback",
        0,
        [
            f"{ev.treatment.arm} is significantly worse: {_effect(ev.test)}{_decided_by(ev)}",
            f"roll back: send no traffic to {ev.treatment.arm}",
        ],
    )


def missing_inputs_check(problems: Sequence[str]) -> Check:
    """The failed `inputs` check that lists what a report could not find."""
    return Check(
        "inputs",
        "parameters and event store contents",
        None,
        None,
        None,
        None,
        False,
        {"missing": list(problems)},
    )


def _inconclusive(ev: Evidence, policy: DecisionPolicy, step: float | None) -> Verdict | None:
    assert ev.test is not None and ev.power is not None  # earlier rules handle empty arms
    # Name what was decided on: the unadjusted effect alone may look significant when the
    # rule went by CUPED, a sequential test or a correction.
    reasons = [f"inconclusive: no significant difference ({_effect(ev.test)}{_decided_by(ev)})"]
    power = ev.power
    if power.power_at_target_lift < policy.power:
        mde = power.minimum_detectable_lift
        detectable = f"{mde:+.1%}" if mde is not None else "none"
        needed = f"{power.users_needed_per_arm:,}" if power.users_needed_per_arm else "unknown"
        reasons.append(
            f"underpowered: power to detect a {power.target_lift:+.0%} lift is "
            f"{power.power_at_target_lift:.0%} (target {policy.power:.0%}); the smallest lift "
            f"detectable now is {detectable}; about {needed} users per arm are needed"
        )
    else:
        reasons.append(
            f"adequately powered: {power.power_at_target_lift:.0%} power to detect a "
            f"{power.target_lift:+.0%} lift, so any effect is likely smaller than that"
        )
    reasons.append(f"hold at {_step(step)} and keep collecting" if step is not None else "hold")
    return Verdict("hold", step, reasons)


RULES: tuple[Rule, ...] = (
    _no_exposures,
    _too_few_users,
    _sample_ratio_mismatch,
    _users_in_both_arms,
    _guardrail_lost,
    _goal_worse,
    _significant_better,
    _significant_worse,
    _inconclusive,
)


def _primary_better(ev: Evidence, policy: DecisionPolicy) -> bool:
    assert ev.test is not None
    difference = ev.test.difference
    if ev.sequential is None and ev.cuped is not None:
        difference = ev.cuped.effect.difference
    return (difference > 0) == policy.higher_is_better


def _decided_by(ev: Evidence) -> str:
    if ev.sequential is not None:
        return f"; decided on the always-valid mSPRT p = {ev.primary_p:.3g}"
    if ev.cuped is not None:
        return (
            f"; decided on CUPED (variance reduced {ev.cuped.variance_reduction:.0%}), "
            f"adjusted p = {ev.primary_p:.3g}"
        )
    if ev.goals:
        return f"; p = {ev.primary_p:.3g} after the multiple-testing correction"
    return ""


def _goal_better(goal: GoalResult, policy: DecisionPolicy) -> bool:
    return (_decisive_effect(goal.effect, goal.cuped).difference > 0) == policy.higher_is_better


def _goal_words(goal: GoalResult) -> str:
    e = _decisive_effect(goal.effect, goal.cuped)
    ci = e.difference_interval
    return (
        f"{e.treatment_estimate:.4g} vs {e.control_estimate:.4g}, difference "
        f"{e.difference:+.4g} ({ci.level:.0%} CI {ci.low:+.4g} to {ci.high:+.4g}), "
        f"corrected p = {goal.adjusted_p:.3g}"
    )


def _guardrail_words(g: GuardrailResult) -> str:
    spec = g.spec
    margin = f"{spec.margin:.0%} relative" if spec.relative else f"{spec.margin:+.4g}"
    if g.test is None or g.effect is None:
        return f"{spec.name}: not measured ({g.missing}); margin {margin}"
    e = g.effect
    change = (
        f"{e.relative_lift:+.1%}"
        if spec.relative and e.relative_lift is not None
        else f"{e.difference:+.4g}"
    )
    bound = g.test.bound
    bound_words = f"{bound:+.1%}" if spec.relative and bound is not None else f"{bound:+.4g}"
    return (
        f"{spec.name} {e.treatment_estimate:.4g} vs {e.control_estimate:.4g} ({change}; "
        f"one-sided {1 - g.test.alpha:.0%} bound {bound_words}, margin {margin}): "
        f"{g.test.outcome.replace('_', '-')}"
    )


def next_ramp_step(current: float | None, steps: Sequence[float]) -> float | None:
    """The first step above `current` (the first step when unknown); None if at the last one."""
    if current is None:
        return steps[0]
    return next((s for s in steps if s > current), None)


def checks(ev: Evidence, policy: DecisionPolicy) -> list[Check]:
    """The checks of `decision.json`, in the order the rule considers them."""
    smallest = min(ev.control.users, ev.treatment.users)
    result = [
        Check(
            name="sample_size",
            method="minimum users per arm",
            estimate=smallest,
            statistic=None,
            p_value=None,
            interval=None,
            passed=smallest >= policy.min_users_per_arm,
            details={"min_users_per_arm": policy.min_users_per_arm},
        )
    ]
    if ev.srm is not None:
        result.append(_srm_check_row(ev.srm))
        result.append(_several_arms_row(ev, policy))
    if ev.test is not None:
        result.extend(_test_check_rows(ev.test, policy))
    if ev.cuped is not None:
        result.append(_effect_row("cuped", ev.cuped.effect, ev.primary_p, policy, ev.cuped))
    if ev.sequential is not None:
        result.append(_sequential_row(ev.sequential))
    if ev.power is not None:
        result.append(_power_check_row(ev.power, policy))
    result.extend(
        _effect_row(
            f"goal_{g.metric}", _decisive_effect(g.effect, g.cuped), g.adjusted_p, policy, g.cuped
        )
        for g in ev.goals
    )
    result.extend(_guardrail_row(g) for g in ev.guardrails)
    return result


def _several_arms_row(ev: Evidence, policy: DecisionPolicy) -> Check:
    exposed = ev.control.users + ev.treatment.users + ev.users_in_several_arms
    share = ev.users_in_several_arms / exposed if exposed else 0.0
    return Check(
        name="users_in_both_arms",
        method="share of users served more than one compared variant",
        estimate=share,
        statistic=None,
        p_value=None,
        interval=None,
        passed=share <= policy.max_several_arms_share,
        details={"users": ev.users_in_several_arms, "allowed": policy.max_several_arms_share},
    )


def _effect_row(
    name: str,
    effect: EffectResult,
    adjusted_p: float | None,
    policy: DecisionPolicy,
    cuped: CupedResult | None,
) -> Check:
    ci, lift = effect.difference_interval, effect.relative_lift_interval
    significant = adjusted_p is not None and adjusted_p < policy.alpha
    details: dict[str, Any] = {
        "control": effect.control_estimate,
        "treatment": effect.treatment_estimate,
        "relative_lift": effect.relative_lift,
        "relative_lift_interval": [lift.low, lift.high] if lift else None,
        "raw_p_value": effect.p_value,
        "correction": ADJUSTMENT_NAMES[policy.correction],
        "degrees_of_freedom": effect.degrees_of_freedom,
    }
    if cuped is not None:
        details |= {
            "variance_reduction": cuped.variance_reduction,
            "theta": cuped.theta,
            "pre_period_correlation": cuped.correlation,
        }
    return Check(
        name=name,
        method=f"{effect.method}; {ci.method} interval",
        estimate=effect.difference,
        statistic=effect.statistic,
        p_value=adjusted_p,
        interval=(ci.low, ci.high),
        passed=significant and (effect.difference > 0) == policy.higher_is_better,
        details=details,
    )


def _sequential_row(seq: SequentialResult) -> Check:
    return Check(
        name="sequential",
        method=seq.method,
        estimate=seq.difference,
        statistic=seq.likelihood_ratio,
        p_value=seq.p_value,
        interval=(seq.interval.low, seq.interval.high),
        passed=seq.reject,
        details={"mixture_variance": seq.mixture_variance, "standard_error": seq.standard_error},
    )


def _guardrail_row(g: GuardrailResult) -> Check:
    spec, effect, test = g.spec, g.effect, g.test
    ci = effect.difference_interval if effect is not None else None
    return Check(
        name=f"guardrail_{spec.name}",
        method=(f"{test.method} on a {effect.method}" if test and effect else "not measured"),
        estimate=(effect.relative_lift if spec.relative else effect.difference) if effect else None,
        statistic=effect.statistic if effect else None,
        p_value=test.p_value if test else None,
        interval=(ci.low, ci.high) if ci else None,
        passed=test is not None and test.outcome == "non_inferior",
        details={
            "outcome": test.outcome if test else "not_measured",
            "margin": spec.margin,
            "relative_margin": spec.relative,
            "one_sided_bound": test.bound if test else None,
            "control": effect.control_estimate if effect else None,
            "treatment": effect.treatment_estimate if effect else None,
            "missing": g.missing,
        },
    )


def _srm_check_row(srm: SrmResult) -> Check:
    return Check(
        name="sample_ratio_mismatch",
        method=srm.method,
        estimate=None,
        statistic=srm.statistic,
        p_value=srm.p_value,
        interval=None,
        passed=srm.healthy,
        details={"threshold": srm.threshold, "observed": srm.observed, "expected": srm.expected},
    )


def _test_check_rows(test: ProportionTestResult, policy: DecisionPolicy) -> list[Check]:
    diff, lift = test.difference_interval, test.relative_lift_interval
    better = _is_better(test, policy)
    lift_passed = lift is not None and (lift.low > 0 if policy.higher_is_better else lift.high < 0)
    return [
        Check(
            name="difference",
            method=f"{test.method}; {diff.method} interval",
            estimate=test.difference,
            statistic=test.statistic,
            p_value=test.p_value,
            interval=(diff.low, diff.high),
            passed=test.significant and better,
            details={"level": diff.level, "higher_is_better": policy.higher_is_better},
        ),
        Check(
            name="relative_lift",
            method=f"{lift.method} interval" if lift else "undefined",
            estimate=test.relative_lift,
            statistic=None,
            p_value=None,
            interval=(lift.low, lift.high) if lift else None,
            passed=lift_passed,
            details={"level": diff.level},
        ),
    ]


def _power_check_row(power: PowerResult, policy: DecisionPolicy) -> Check:
    return Check(
        name="power",
        method=power.method,
        estimate=power.power_at_target_lift,
        statistic=None,
        p_value=None,
        interval=None,
        passed=power.power_at_target_lift >= policy.power,
        details={
            "target_lift": power.target_lift,
            "target_power": power.power,
            "baseline_rate": power.baseline_rate,
            "minimum_detectable_difference": power.minimum_detectable_difference,
            "minimum_detectable_lift": power.minimum_detectable_lift,
            "users_needed_per_arm": power.users_needed_per_arm,
        },
    )


def arm_rows(ev: Evidence, alpha: float) -> list[dict[str, Any]]:
    """Per-arm users, conversions, rate and Wilson interval, control first."""
    rows = []
    for role, arm in (("control", ev.control), ("treatment", ev.treatment)):
        interval = rate_interval(arm, alpha)
        rows.append(
            {
                "role": role,
                "variant": arm.arm,
                "users": arm.users,
                "conversions": arm.conversions,
                "rate": arm.rate,
                "interval": [interval.low, interval.high] if interval else None,
                "interval_method": interval.method if interval else None,
            }
        )
    return rows


def summary_paragraph(flag: str, metric: str, ev: Evidence, verdict: Verdict) -> str:
    """One Markdown paragraph: the decision, the numbers behind it, and why."""
    action = f"**{verdict.recommendation.upper()}**"
    if verdict.recommendation in ("ramp", "ship", "rollback") and verdict.next_step is not None:
        action += f" (next step: {_step(verdict.next_step)})"
    context = f"`{flag}`, {ev.treatment.arm} vs {ev.control.arm} on `{metric}`"
    rates = ""
    if ev.control.users and ev.treatment.users:
        rates = (
            f" Converted: {ev.treatment.arm} {_pct(ev.treatment.rate)} of "
            f"{ev.treatment.users:,} users, {ev.control.arm} {_pct(ev.control.rate)} of "
            f"{ev.control.users:,}."
        )
    why = "; ".join(verdict.reasons)
    return f"{action} for {context}.{rates} Why: {why[0].upper()}{why[1:]}."


def parse_split(text: str | None, arms: Sequence[str]) -> dict[str, float] | None:
    """`"50:50"` (one weight per arm, in order) -> `{arm: weight}`; None means an equal split."""
    if text is None or not str(text).strip():
        return None
    parts = str(text).replace("/", ":").split(":")
    try:
        weights = [float(p) for p in parts]
    except ValueError:
        raise ValueError(f"expected split {text!r} is not numbers separated by ':'") from None
    if len(weights) != len(arms) or min(weights) <= 0:
        raise ValueError(
            f"expected split {text!r} needs one positive weight per arm ({', '.join(arms)})"
        )
    return dict(zip(arms, weights, strict=True))


def parse_ramp_steps(text: str | Sequence[float]) -> tuple[float, ...]:
    """`"5,25,50,100"` -> `(5, 25, 50, 100)`: increasing percentages in (0, 100]."""
    raw = text.split(",") if isinstance(text, str) else list(text)
    steps = tuple(_number(float(s)) for s in raw if str(s).strip())
    if not steps or any(b <= a for a, b in itertools.pairwise(steps)):
        raise ValueError(f"ramp steps {text!r} must be increasing percentages")
    if steps[0] <= 0 or steps[-1] > 100:
        raise ValueError(f"ramp steps {text!r} must lie in (0, 100]")
    return steps


def write_decision(decision: Decision, directory: str | Path) -> Path:
    """Write `decision.json` into `directory` (created if missing) and return its path."""
    path = Path(directory) / "decision.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(decision.to_dict(), indent=2) + "\n", encoding="utf-8")
    return path


def numbers(document: Any, prefix: str = "") -> dict[str, float]:
    """Every number in a `decision.json` document, keyed by its path (for scrapbook glue).

    List items are keyed by their `name` or `role` when they have one (`checks.power.estimate`,
    `arms.control.users`), otherwise by position (`checks.difference.interval.0`).
    """
    found: dict[str, float] = {}
    if isinstance(document, bool) or document is None or isinstance(document, str):
        return found
    if isinstance(document, int | float):
        return {prefix: document}
    items: Any = document.items() if isinstance(document, dict) else enumerate(document)
    for key, value in items:
        if isinstance(value, dict) and ("name" in value or "role" in value):
            key = value.get("name", value.get("role"))
        found.update(numbers(value, f"{prefix}.{key}" if prefix else str(key)))
    return found


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


def _p(p_value: float) -> str:
    return "p < 0.001" if p_value < 0.001 else f"p = {p_value:.3f}"


def _pct(rate: float | None) -> str:
    return f"{rate:.1%}" if rate is not None else "n/a"


def _step(step: float | None) -> str:
    return f"{step:g}%" if step is not None else "unknown"


def _iso(moment: datetime | None) -> str | None:
    # Whole seconds: these bounds describe the data for a reader; the window itself is exact.
    if moment is None:
        return None
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def _number(value: float) -> float:
    # Keep whole percentages as ints so decision.json says 50, not 50.0.
    return int(value) if value.is_integer() else value


def _json_safe(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


# --- the whole A/B analysis, as the notebook runs it ------------------------------------------


@dataclass(frozen=True)
class AbAnalysis:
    """The decision and what the report plots alongside it."""

    decision: Decision
    sample: AbSample
    window: Window
    bucket_seconds: int
    cumulative: list[CumulativePoint]


def analyse_ab(
    engine: sa.Engine, params: dict[str, Any], problems: Sequence[str] = ()
) -> AbAnalysis:
    """Run every query and test for the A/B report; missing inputs make it a hold that says
    what is missing (never an exception for bad parameters or absent data)."""
    problems = list(problems)
    arms = [params["control"], params["treatment"]]
    window = _parsed(
        problems,
        "window",
        lambda: Window.parse(params["window_start"], params["window_end"]),
        Window(),
    )
    policy = _policy(params, problems)
    weights = _parsed(
        problems, "expected_split", lambda: parse_split(params["expected_split"], arms), None
    )
    if len(set(arms)) < 2:
        problems.append(f"control and treatment must differ, both are {arms[0]!r}")
        arms = [arms[0], f"{arms[0]} (treatment)"]
    flag, metric = params["flag"], params["metric"]
    query = {"flag": flag, "arms": arms, "window": window}
    sample = ab_sample(engine, metric=metric, **query)
    known = known_metrics(engine)
    goals = [g.strip() for g in (params["goal_metrics"] or "").split(",") if g.strip()]
    problems += [
        f"goal metric '{g}' has no outcomes in the event store" for g in goals if g not in known
    ]
    decision = decide_ab(
        sample,
        control=arms[0],
        treatment=arms[1],
        expected_weights=weights,
        current_step=params["current_step"],
        policy=policy,
        primary_moments=metric_moments(engine, metric=metric, **query),
        goal_moments={g: metric_moments(engine, metric=g, **query) for g in goals if g in known},
        guardrail_moments=guardrail_moments(engine, **query) if policy.guardrails else None,
    )
    decision = hold_for_missing(
        decision, data_problems(sample, known_metrics=known, other_problems=problems)
    )
    bucket = bucket_seconds_for(
        sample.first_exposure, sample.last_exposure, params["buckets"] or 20
    )
    points = cumulative_by_bucket(engine, metric=metric, bucket_seconds=bucket, **query)
    return AbAnalysis(decision, sample, window, bucket, points)


def _policy(params: dict[str, Any], problems: list[str]) -> DecisionPolicy:
    alpha = params["alpha"]
    if alpha is None or not 0 < alpha < 0.5:
        problems.append(f"alpha={alpha!r} must lie in (0, 0.5); used 0.05")
        alpha = 0.05
    correction = params["correction"]
    if correction not in ADJUSTMENT_NAMES:
        problems.append(
            f"correction {correction!r} is not one of {sorted(ADJUSTMENT_NAMES)}; used holm"
        )
        correction = "holm"
    steps = _parsed(
        problems, "ramp_steps", lambda: parse_ramp_steps(params["ramp_steps"]), DEFAULT_RAMP_STEPS
    )
    return DecisionPolicy(
        alpha=alpha,
        ramp_steps=steps,
        correction=correction,
        guardrails=DEFAULT_GUARDRAILS if params["guardrails"] else (),
        sequential=bool(params["sequential"]),
    )


def _parsed(problems: list[str], name: str, parse: Callable[[], Any], default: Any) -> Any:
    try:
        return parse()
    except (TypeError, ValueError) as exc:
        problems.append(f"{name}: {exc}; used the default")
        return default
