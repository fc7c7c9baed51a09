"""A/B/n: several treatment arms against one control, and which arm the decision is about.

The evidence: a sample ratio check over all k arms against the intended split (chi-square,
k - 1 degrees of freedom), Pearson's chi-square over the k x 2 table (informational), and each
treatment against control with the two-arm evidence (`analysis.ab_evidence`). The primary
metric's p-values are corrected across the treatments with the report's correction, and each
arm's intervals are at the level that agrees with its corrected p-value
(`stats.corrections.interval_alphas`). Guardrails stay at the report's alpha for every arm: a
harm is never explained away by the number of arms.

The rule, on top of the two-arm rules (`analysis.ab_rules`) run for each arm:

1. anything that makes an arm's comparison untrustworthy (no exposures, too few users, users in
   several arms) or a k-arm sample ratio mismatch holds the whole test;
2. an arm that loses a guardrail or is significantly worse (after correction) is rolled back,
   the first such arm in the order given (the next report rolls back the next one);
3. of the arms significantly better after correction with every guardrail non-inferior, the one
   with the largest effect is ramped one step from its own step (shipped at the last step);
4. otherwise hold: a winner whose guardrails are not yet non-inferior, or nothing significant.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from service.analysis.ab_evidence import (
    DecisionPolicy,
    Evidence,
    _guardrail,
    gather_evidence,
    with_metrics,
)
from service.analysis.ab_rules import (
    Verdict,
    _no_exposures,
    _too_few_users,
    _users_in_both_arms,
    deciding_rule,
)
from service.analysis.queries import AbSample
from service.analysis.stats import (
    ArmsResult,
    MomentStats,
    SrmResult,
    adjust_p_values,
    compare_arms,
    interval_alphas,
    srm_check,
)

# The rules of the two-arm decision that say "this comparison cannot be trusted yet".
_UNTRUSTWORTHY = (_no_exposures, _too_few_users, _users_in_both_arms)
# The engines defined for more than one treatment (a p-value per arm to correct).
ARM_ENGINES = ("frequentist",)


@dataclass(frozen=True)
class ArmEvidence:
    """One treatment against control: its evidence (primary p corrected across the arms) and
    the level of its intervals."""

    arm: str
    evidence: Evidence
    raw_p: float | None
    interval_level: float  # 1 - the alpha its intervals are at
    step: float | None  # the arm's share of traffic now (percent), if known


@dataclass(frozen=True)
class ArmsEvidence:
    """Everything the A/B/n rule reads."""

    control: str
    arms: tuple[ArmEvidence, ...]
    srm: SrmResult | None
    independence: ArmsResult | None  # k-arm chi-square; None when an arm has no users


@dataclass(frozen=True)
class ArmsVerdict:
    """What to do, to which arm (None: to none), where it goes next, and why."""

    arm: str | None
    verdict: Verdict


def gather_arms(
    sample: AbSample,
    *,
    control: str,
    treatments: Sequence[str],
    expected_weights: dict[str, float] | None,
    steps: dict[str, float | None],
    policy: DecisionPolicy,
    primary_moments: dict[str, MomentStats] | None,
    guardrail_moments: dict[str, dict[str, MomentStats]] | None,
) -> ArmsEvidence:
    """Each treatment against `control`, corrected across the treatments (see the docstring)."""
    arms = [control, *treatments]
    counts = {arm: sample.arms[arm].users for arm in arms}
    weights = expected_weights or dict.fromkeys(arms, 1.0)
    srm = srm_check(counts, weights, policy.srm_threshold) if sum(counts.values()) else None
    raw = [_pair(sample, control, t, policy, primary_moments).primary_p for t in treatments]
    family = [1.0 if p is None else p for p in raw]  # an arm without users is never a finding
    adjusted = adjust_p_values(family, policy.correction)
    alphas = interval_alphas(family, policy.alpha, policy.correction)
    found = []
    for arm, p, corrected, level in zip(treatments, raw, adjusted, alphas, strict=True):
        at_level = replace(policy, alpha=level)
        ev = _pair(sample, control, arm, at_level, primary_moments)
        guardrails = tuple(
            _guardrail(spec, (guardrail_moments or {}).get(spec.name), (control, arm), policy.alpha)
            for spec in policy.guardrails
        )
        ev = replace(
            ev,
            primary_p=corrected if p is not None else None,
            alpha=policy.alpha,
            guardrails=guardrails,
            users_in_several_arms=sample.users_in_several_arms,
        )
        found.append(ArmEvidence(arm, ev, p, 1 - level, steps.get(arm)))
    everyone = [sample.arms[arm] for arm in arms]
    independence = None
    if all(a.users for a in everyone):
        independence = compare_arms(everyone[0], everyone[1:], policy.alpha, policy.correction)
    return ArmsEvidence(control, tuple(found), srm, independence)


def _pair(
    sample: AbSample,
    control: str,
    arm: str,
    policy: DecisionPolicy,
    primary_moments: dict[str, MomentStats] | None,
) -> Evidence:
    """The two-arm evidence of `arm` against control, uncorrected (the caller corrects)."""
    alone = replace(policy, correction="none", guardrails=())
    return with_metrics(
        gather_evidence(sample.arms[control], sample.arms[arm], None, alone),
        alone,
        arms=(control, arm),
        several=sample.users_in_several_arms,
        primary=primary_moments,
        goals={},
        guardrails={},
    )


def recommend_arms(evidence: ArmsEvidence, policy: DecisionPolicy) -> ArmsVerdict:
    """The A/B/n rule (see the module docstring); the first matching step decides."""
    decided = [(a, *deciding_rule(a.evidence, policy, a.step)) for a in evidence.arms]
    untrusted = [(a, v) for a, rule, v in decided if rule in _UNTRUSTWORTHY]
    if untrusted:
        reasons = [f"{a.arm}: {r}" for a, v in untrusted for r in v.reasons]
        return ArmsVerdict(None, Verdict("hold", None, [*reasons, "hold every arm"]))
    if evidence.srm is not None and not evidence.srm.healthy:
        return ArmsVerdict(None, Verdict("hold", None, [_srm_words(evidence.srm)]))
    harmful = [(a, v) for a, _rule, v in decided if v.recommendation == "rollback"]
    if harmful:
        arm, verdict = harmful[0]
        also = [a.arm for a, _ in harmful[1:]]
        later = [f"also harmful, to roll back next: {', '.join(also)}"] if also else []
        return ArmsVerdict(arm.arm, replace(verdict, reasons=[*verdict.reasons, *later]))
    winners = [(a, v) for a, _rule, v in decided if v.recommendation in ("ramp", "ship")]
    if winners:
        best, verdict = max(winners, key=lambda w: _effect_size(w[0], policy))
        others = [a.arm for a, _ in winners if a is not best]
        if others:
            note = f"{best.arm} has the largest effect; also winning: {', '.join(others)}"
            verdict = replace(verdict, reasons=[*verdict.reasons, note])
        return ArmsVerdict(best.arm, verdict)
    reasons = [f"{a.arm}: {v.reasons[0]}" for a, _rule, v in decided]
    return ArmsVerdict(
        None, Verdict("hold", None, [*reasons, "hold every arm and keep collecting"])
    )


def _effect_size(arm: ArmEvidence, policy: DecisionPolicy) -> float:
    ev = arm.evidence
    assert ev.test is not None  # a winner was compared
    difference = ev.cuped.effect.difference if ev.cuped is not None else ev.test.difference
    return difference if policy.higher_is_better else -difference


def _srm_words(srm: SrmResult) -> str:
    observed = ", ".join(f"{arm} {n:,}" for arm, n in srm.observed.items())
    expected = ", ".join(f"{arm} {n:,.0f}" for arm, n in srm.expected.items())
    return (
        f"sample ratio mismatch over {len(srm.observed)} arms: {observed} users against an "
        f"expected {expected} (chi-square p = {srm.p_value:.2g} < {srm.threshold}); the "
        "assignment or the logging is broken, so no arm can be compared until it is fixed"
    )
