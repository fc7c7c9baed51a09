"""The A/B/n decision document: the k-arm checks, then each treatment's checks against control.

Each treatment's checks are the two-arm checks (`analysis.ab_checks`) named `<check>:<arm>`,
their estimand prefixed with the comparison (`b vs control: difference in conversion rate ...`)
and the primary metric's deciding check carrying its p-value corrected across the arms.
`decision.json` names the arm the decision is about in `arm`, and each treatment's step in
`arm_steps`; `current_step` and `next_step` are the named arm's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from service.analysis.ab_arms import (
    ARM_ENGINES,
    ArmEvidence,
    ArmsEvidence,
    ArmsVerdict,
    gather_arms,
    recommend_arms,
)
from service.analysis.ab_checks import arm_rows, checks, primary_summary
from service.analysis.ab_evidence import DecisionPolicy
from service.analysis.decision import Check, Decision, _iso, _pct, _step
from service.analysis.queries import AbSample
from service.analysis.stats import (
    ADJUSTMENT_NAMES,
    ArmsResult,
    MomentStats,
    SrmResult,
    adjust_p_values,
)

# Checks about the pair that the k-arm checks replace.
_SHARED = ("sample_size", "sample_ratio_mismatch", "users_in_both_arms")


def decide_arms(
    sample: AbSample,
    *,
    control: str,
    treatments: Sequence[str],
    expected_weights: dict[str, float] | None,
    steps: dict[str, float | None],
    policy: DecisionPolicy,
    primary_moments: dict[str, MomentStats] | None = None,
    guardrail_moments: dict[str, dict[str, MomentStats]] | None = None,
) -> Decision:
    """Evidence, rule and `decision.json` of an A/B/n test of `sample` (analysis.ab_arms)."""
    evidence = gather_arms(
        sample,
        control=control,
        treatments=treatments,
        expected_weights=expected_weights,
        steps=steps,
        policy=policy,
        primary_moments=primary_moments,
        guardrail_moments=guardrail_moments,
    )
    return arms_decision(sample, evidence, recommend_arms(evidence, policy), policy)


def arms_decision(
    sample: AbSample, evidence: ArmsEvidence, verdict: ArmsVerdict, policy: DecisionPolicy
) -> Decision:
    """`decision.json` of an A/B/n test."""
    named = next((a for a in evidence.arms if a.arm == verdict.arm), None)
    step = named.step if named is not None else None
    v = verdict.verdict
    next_step = v.next_step if named is not None else None
    return Decision(
        flag=sample.flag,
        kind="ab",
        metric=sample.metric,
        window={
            **sample.window.to_dict(),
            "first_exposure": _iso(sample.first_exposure),
            "last_exposure": _iso(sample.last_exposure),
        },
        arms=_arm_rows(evidence, policy.alpha),
        users_in_several_arms=sample.users_in_several_arms,
        alpha=policy.alpha,
        checks=_checks(sample, evidence, policy),
        recommendation=v.recommendation,
        current_step=step,
        next_step=next_step,
        reasons=v.reasons,
        summary=_summary(sample, evidence, verdict),
        generated_at=datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        primary=_primary(evidence, verdict, policy),
        arm=verdict.arm,
        arm_steps={a.arm: a.step for a in evidence.arms},
    )


def _arm_rows(evidence: ArmsEvidence, alpha: float) -> list[dict[str, Any]]:
    """Control, then each treatment (named by `name`, so decision paths say `arms.b.users`)."""
    rows = [arm_rows(evidence.arms[0].evidence, alpha)[0]]
    for a in evidence.arms:
        row = arm_rows(a.evidence, alpha)[1]
        rows.append({**row, "name": a.arm, "step": a.step})
    return rows


def _checks(sample: AbSample, evidence: ArmsEvidence, policy: DecisionPolicy) -> list[Check]:
    users = [
        sample.arms[evidence.control].users,
        *(sample.arms[a.arm].users for a in evidence.arms),
    ]
    result = [
        Check(
            "sample_size",
            "minimum users per arm",
            min(users),
            None,
            None,
            None,
            min(users) >= policy.min_users_per_arm,
            {"min_users_per_arm": policy.min_users_per_arm, "arms": len(users)},
        )
    ]
    if evidence.srm is not None:
        result.append(_srm_row(evidence.srm))
    if evidence.independence is not None:
        result.append(_independence_row(evidence.independence, policy))
    per_arm = [
        [_for_arm(c, arm, evidence.control, policy) for c in _pair_checks(arm, policy)]
        for arm in evidence.arms
    ]
    for base in ("difference", "relative_lift"):
        per_arm = _corrected_across_arms(per_arm, base, policy)
    for arm_checks in per_arm:
        result += arm_checks
    return result


def _corrected_across_arms(
    per_arm: list[list[Check]], base: str, policy: DecisionPolicy
) -> list[list[Check]]:
    """Each arm's `base` check, when it is not the deciding one (already corrected), with its
    p-value corrected across the arms like the deciding one, so that its p-value and its
    interval (already at the arm's corrected level) agree."""
    found = [
        next(
            (
                i
                for i, c in enumerate(cs)
                if c.name.partition(":")[0] == base and c.details.get("corrected") is False
            ),
            None,
        )
        for cs in per_arm
    ]
    # An arm without the test counts as p = 1: never a finding, and the family keeps its size.
    raw = [
        _p_or_one(cs[i] if i is not None else None) for cs, i in zip(per_arm, found, strict=True)
    ]
    adjusted = adjust_p_values(raw, policy.correction)
    result = []
    for cs, i, p in zip(per_arm, found, adjusted, strict=True):
        if i is None or cs[i].p_value is None:
            result.append(cs)
            continue
        check = cs[i]
        details = {
            **check.details,
            "raw_p_value": check.p_value,
            "correction": f"{ADJUSTMENT_NAMES[policy.correction]} across the treatment arms",
            "corrected": True,
        }
        fixed = replace(check, p_value=p, passed=check.passed and p < policy.alpha, details=details)
        result.append([*cs[:i], fixed, *cs[i + 1 :]])
    return result


def _p_or_one(check: Check | None) -> float:
    return 1.0 if check is None or check.p_value is None else check.p_value


def _pair_checks(arm: ArmEvidence, policy: DecisionPolicy) -> list[Check]:
    return [c for c in checks(arm.evidence, policy) if c.name not in _SHARED]


def _for_arm(check: Check, arm: ArmEvidence, control: str, policy: DecisionPolicy) -> Check:
    decisive = primary_summary(arm.evidence, policy).get("check")
    details = {**check.details, "arm": arm.arm, "control_arm": control}
    p_value, passed = check.p_value, check.passed
    if check.name == decisive:
        details |= {
            "raw_p_value": arm.raw_p,
            "correction": f"{ADJUSTMENT_NAMES[policy.correction]} across the treatment arms",
            "interval_level": arm.interval_level,
        }
        p_value = arm.evidence.primary_p
        passed = check.passed and p_value is not None and p_value < policy.alpha
    elif check.name.startswith(("difference", "relative_lift")):
        details |= {"interval_level": arm.interval_level, "corrected": False}
    estimand = f"{arm.arm} vs {control}: {check.estimand}" if check.estimand else None
    return replace(
        check,
        name=f"{check.name}:{arm.arm}",
        p_value=p_value,
        passed=passed,
        details=details,
        estimand=estimand,
    )


def _srm_row(srm: SrmResult) -> Check:
    return Check(
        name="sample_ratio_mismatch",
        method=f"{srm.method} over {len(srm.observed)} arms",
        estimate=None,
        statistic=srm.statistic,
        p_value=srm.p_value,
        interval=None,
        passed=srm.healthy,
        details={
            "threshold": srm.threshold,
            "observed": srm.observed,
            "expected": srm.expected,
            "degrees_of_freedom": srm.degrees_of_freedom,
        },
        estimand="users per arm against the intended split",
    )


def _independence_row(result: ArmsResult, policy: DecisionPolicy) -> Check:
    return Check(
        name="arms_chi_square",
        method=result.method,
        estimate=None,
        statistic=result.statistic,
        p_value=result.p_value,
        interval=None,
        passed=result.p_value < policy.alpha,
        details={"degrees_of_freedom": result.degrees_of_freedom, "informational": True},
        estimand="whether the conversion rate differs between any of the arms",
    )


def _primary(
    evidence: ArmsEvidence, verdict: ArmsVerdict, policy: DecisionPolicy
) -> dict[str, Any]:
    arms = {}
    for a in evidence.arms:
        summary = primary_summary(a.evidence, policy)
        arms[a.arm] = {
            "check": f"{summary['check']}:{a.arm}" if summary["check"] else None,
            "p_value": a.evidence.primary_p,
            "raw_p_value": a.raw_p,
            "interval_level": a.interval_level,
            "significant": a.evidence.primary_significant,
        }
    named = arms.get(verdict.arm or "", {})
    return {
        "engine": policy.engine,
        "arm": verdict.arm,
        "check": named.get("check"),
        "p_value": named.get("p_value"),
        "significant": bool(named.get("significant")),
        "correction": policy.correction,
        "arms": arms,
    }


def _summary(sample: AbSample, evidence: ArmsEvidence, verdict: ArmsVerdict) -> str:
    v = verdict.verdict
    action = f"**{v.recommendation.upper()}**"
    if verdict.arm is not None:
        action += f" {verdict.arm}"
        if v.next_step is not None:
            action += f" (next step: {_step(v.next_step)})"
    arms = [evidence.control, *(a.arm for a in evidence.arms)]
    rates = ", ".join(
        f"{arm} {_pct(sample.arms[arm].rate)} of {sample.arms[arm].users:,}" for arm in arms
    )
    why = "; ".join(v.reasons)
    return (
        f"{action} for `{sample.flag}`, A/B/n: {', '.join(arms[1:])} vs {arms[0]} on "
        f"`{sample.metric}`. Converted: {rates}. Why: {why[0].upper()}{why[1:]}."
    )


def arm_problems(
    treatments: Sequence[str], policy: DecisionPolicy, goals: Sequence[str]
) -> list[str]:
    """What an A/B/n report cannot do, each naming the parameter."""
    found = []
    if policy.engine not in ARM_ENGINES:
        found.append(
            f"engine {policy.engine!r} is not defined for more than one treatment "
            f"({', '.join(treatments)}); use {' or '.join(ARM_ENGINES)}"
        )
    if goals:
        found.append(
            "goal_metrics are not supported with more than one treatment: the correction "
            "across arms covers the primary metric; run one report per goal metric"
        )
    return found
