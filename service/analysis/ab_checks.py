"""The A/B report's rows: each piece of evidence as a named check, the arms table, the summary."""

from __future__ import annotations

from typing import Any

from service.analysis.ab_evidence import (
    DecisionPolicy,
    Evidence,
    GuardrailResult,
    _decisive_effect,
    _is_better,
)
from service.analysis.ab_group_sequential import GroupSequentialLook
from service.analysis.ab_rules import Verdict
from service.analysis.decision import Check, _pct, _step
from service.analysis.stats import (
    ADJUSTMENT_NAMES,
    BayesianResult,
    CupedResult,
    EffectResult,
    PowerResult,
    ProportionTestResult,
    SequentialResult,
    SrmResult,
    rate_interval,
)
from service.analysis.stats.proportions import DIFFERENCE, RELATIVE


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
    if ev.bayesian is not None:
        result.append(_bayesian_row(ev.bayesian, policy))
    if ev.group_sequential is not None:
        result.append(_group_sequential_row(ev.group_sequential, policy))
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
        "relative_lift_p_value": effect.relative_lift_p_value,
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
        estimand=effect.estimand,
    )


def _bayesian_row(b: BayesianResult, policy: DecisionPolicy) -> Check:
    win = b.chance_to_win
    return Check(
        name="bayesian",
        method=b.method,
        estimate=b.expected,
        statistic=None,
        p_value=None,
        interval=(b.interval.low, b.interval.high),
        passed=win >= 1 - policy.alpha / 2,
        details={
            "chance_to_win": win,
            "risk_control": b.risk_control,
            "risk_treatment": b.risk_treatment,
            "posterior_sd": b.standard_deviation,
            "prior": {
                "mean": b.prior.mean,
                "variance": b.prior.variance,
                "proper": b.prior.proper,
            },
        },
        estimand=b.estimand,
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
        estimand=DIFFERENCE,
    )


def _group_sequential_row(g: GroupSequentialLook, policy: DecisionPolicy) -> Check:
    return Check(
        name="group_sequential",
        method=g.method,
        estimate=g.difference,
        statistic=g.statistic,
        p_value=g.p_value,
        interval=(g.interval.low, g.interval.high),
        passed=g.crossed and (g.difference > 0) == policy.higher_is_better,
        details={
            "engine": "group-sequential",
            "look": g.look,
            "looks": g.looks,
            "final": g.final,
            "information": list(g.information),
            "bound": g.bound,
            "nominal_alpha": g.nominal_alpha,
            "alpha_spent": g.alpha_spent,
            "alpha": g.alpha,
            "crossed": g.crossed,
            "interval_method": g.interval.method,
        },
        estimand=DIFFERENCE,
    )


def _guardrail_row(g: GuardrailResult) -> Check:
    spec, effect, test = g.spec, g.effect, g.test
    ci = effect.difference_interval if effect is not None else None
    return Check(
        name=f"guardrail_{spec.name}",
        method=(f"{test.method} on a {effect.method}" if test and effect else "not measured"),
        estimate=effect.difference if effect else None,
        statistic=effect.statistic if effect else None,
        p_value=test.p_value if test else None,
        interval=(ci.low, ci.high) if ci else None,
        passed=test is not None and test.outcome == "non_inferior",
        estimand=test.estimand if test else None,
        details={
            "outcome": test.outcome if test else "not_measured",
            "margin": spec.margin,
            "relative_margin": spec.relative,
            "margin_as_difference": test.null_value if test else None,
            "one_sided_bound": test.bound if test else None,
            "relative_lift": effect.relative_lift if effect else None,
            "relative_lift_interval": _pair(effect.relative_lift_interval) if effect else None,
            "control": effect.control_estimate if effect else None,
            "treatment": effect.treatment_estimate if effect else None,
            "missing": g.missing,
        },
    )


def _pair(interval: Any) -> list[float] | None:
    return [interval.low, interval.high] if interval is not None else None


def primary_summary(ev: Evidence, policy: DecisionPolicy) -> dict[str, Any]:
    """How the primary metric was decided: `engine`, the deciding `check` of decision.json and
    its decisive `p_value` (corrected across the goal metrics; for the Bayesian engine the
    posterior's two-sided tail), and whether it was `significant` at alpha."""
    if ev.test is None:
        return {"engine": policy.engine, "check": None, "p_value": None, "significant": False}
    check = "difference"
    if ev.group_sequential is not None:
        g = ev.group_sequential
        return {
            "engine": policy.engine,
            "check": "group_sequential",
            "p_value": g.p_value,
            "significant": ev.primary_significant,
            "bound": g.bound,
            "nominal_alpha": g.nominal_alpha,
            "alpha_spent": g.alpha_spent,
            "look": g.look,
            "looks": g.looks,
        }
    if ev.sequential is not None:
        check = "sequential"
    elif ev.bayesian is not None:
        check = "bayesian"
    elif ev.cuped is not None:
        check = "cuped"
    return {
        "engine": policy.engine,
        "check": check,
        "p_value": ev.primary_p,
        "significant": ev.primary_significant,
    }


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
        estimand="users per arm against the intended split",
    )


def _test_check_rows(test: ProportionTestResult, policy: DecisionPolicy) -> list[Check]:
    """The difference and the relative lift, each with its own test and interval."""
    diff, lift = test.difference_interval, test.relative_lift_interval
    better = _is_better(test, policy)
    lift_p = test.relative_lift_p_value
    lift_better = test.relative_lift is not None and (test.relative_lift > 0) == (
        policy.higher_is_better
    )
    others = {i.method: [i.low, i.high] for i in test.other_intervals.values()}
    return [
        Check(
            name="difference",
            method=f"{test.method}; {diff.method} interval",
            estimate=test.difference,
            statistic=test.statistic,
            p_value=test.p_value,
            interval=(diff.low, diff.high),
            passed=test.significant and better,
            details={
                "level": diff.level,
                "higher_is_better": policy.higher_is_better,
                "other_intervals": others,
            },
            estimand=DIFFERENCE,
        ),
        Check(
            name="relative_lift",
            method=f"z-test of the log risk ratio; {lift.method} interval" if lift else "undefined",
            estimate=test.relative_lift,
            statistic=None,
            p_value=lift_p,
            interval=(lift.low, lift.high) if lift else None,
            passed=lift_p is not None and lift_p < policy.alpha and lift_better,
            details={"level": diff.level},
            estimand=RELATIVE,
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
        estimand=f"power to detect a {power.target_lift:+.0%} relative lift",
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
