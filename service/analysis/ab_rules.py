"""The A/B decision rule: an ordered list of small rules over the evidence; first match wins.

The list, `RULES`, is the documentation: each rule returns a verdict (ramp, hold, rollback,
ship, with the reason in words) or None to let the next one decide.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from service.analysis.ab_evidence import (
    DecisionPolicy,
    Evidence,
    GoalResult,
    GuardrailResult,
    _arm_counts,
    _decisive_effect,
    _effect,
)
from service.analysis.decision import _step, next_ramp_step


@dataclass(frozen=True)
class Verdict:
    """What to do, where to go next, and why."""

    recommendation: str
    next_step: float | None
    reasons: list[str]


Rule = Callable[[Evidence, DecisionPolicy, float | None], Verdict | None]


def recommend(evidence: Evidence, policy: DecisionPolicy, current_step: float | None) -> Verdict:
    """Apply `RULES` in order; the first rule that returns a verdict decides."""
    return deciding_rule(evidence, policy, current_step)[1]


def deciding_rule(
    evidence: Evidence, policy: DecisionPolicy, current_step: float | None
) -> tuple[Rule, Verdict]:
    """The first rule of `RULES` that returns a verdict, and its verdict."""
    for rule in RULES:
        verdict = rule(evidence, policy, current_step)
        if verdict is not None:
            return rule, verdict
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
    if ev.group_sequential is not None and not ev.group_sequential.final:
        reasons = [
            f"continue collecting: no boundary crossed ({_effect(ev.test)}{_decided_by(ev)}); "
            f"the next look may spend more of alpha"
        ]
    elif ev.group_sequential is not None:
        reasons = [
            f"final look: no boundary crossed ({_effect(ev.test)}{_decided_by(ev)}); the test "
            "has spent all of alpha without finding a difference"
        ]
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
    if ev.bayesian is not None:
        return ev.bayesian.chance_to_win > 0.5  # already oriented by higher_is_better
    difference = ev.test.difference
    if ev.sequential is None and ev.cuped is not None:
        difference = ev.cuped.effect.difference
    return (difference > 0) == policy.higher_is_better


def _decided_by(ev: Evidence) -> str:
    if ev.group_sequential is not None:
        g = ev.group_sequential
        return (
            f"; group-sequential look {g.look} of {g.looks} (information {g.information[-1]:.0%}"
            f"): |z| = {abs(g.statistic):.2f} against the boundary {g.bound:.2f}, alpha spent "
            f"{g.alpha_spent:.3g} of {g.alpha:g}"
        )
    if ev.sequential is not None:
        return f"; decided on the always-valid mSPRT p = {ev.primary_p:.3g}"
    if ev.bayesian is not None:
        b = ev.bayesian
        return (
            f"; decided by the Bayesian engine: chance to win {b.chance_to_win:.1%} "
            f"(needs beyond {1 - ev.alpha / 2:.1%} either way), relative lift {b.expected:+.1%} "
            f"({b.interval.level:.0%} credible interval {b.interval.low:+.1%} to "
            f"{b.interval.high:+.1%})"
        )
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
    if g.test is None or g.effect is None:
        margin = f"{spec.margin:.0%} of control" if spec.relative else f"{spec.margin:+.4g}"
        return f"{spec.name}: not measured ({g.missing}); margin {margin}"
    e, test = g.effect, g.test
    allowed = f"{test.null_value:+.4g}"
    margin = f"{spec.margin:.0%} of control, {allowed}" if spec.relative else allowed
    lift = f", {e.relative_lift:+.1%}" if e.relative_lift is not None else ""
    return (
        f"{spec.name} {e.treatment_estimate:.4g} vs {e.control_estimate:.4g} (difference "
        f"{e.difference:+.4g}{lift}; one-sided {1 - test.alpha:.0%} bound {test.bound:+.4g}, "
        f"margin {margin}): {test.outcome.replace('_', '-')}"
    )
