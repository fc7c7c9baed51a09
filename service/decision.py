"""The decision an A/B report ends in, and the `decision.json` that carries it to `rollout`.

`decide_ab` gathers the evidence (sample size, sample ratio mismatch, the test on the primary
metric, power) with `service.stats`, then applies the decision rule: an ordered list of rules
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
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from service.analysis import AbSample
from service.stats import (
    DEFAULT_POWER,
    SRM_THRESHOLD,
    PowerResult,
    ProportionStats,
    ProportionTestResult,
    SrmResult,
    power_analysis,
    rate_interval,
    srm_check,
    two_proportion_test,
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
) -> Decision:
    """Evidence, rule and `decision.json` content for one A/B comparison of `sample`."""
    policy = policy or DecisionPolicy()
    evidence = gather_evidence(
        sample.arms[control], sample.arms[treatment], expected_weights, policy
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


def _significant_better(ev: Evidence, policy: DecisionPolicy, step: float | None) -> Verdict | None:
    if ev.test is None or not ev.test.significant or not _is_better(ev.test, policy):
        return None
    finding = f"{ev.treatment.arm} is significantly better: {_effect(ev.test)}"
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
    if ev.test is None or not ev.test.significant:
        return None  # a significant result that is not better is worse (the rule order)
    return Verdict(
        "rollback",
        0,
        [
            f"{ev.treatment.arm} is significantly worse: {_effect(ev.test)}",
            f"roll back: send no traffic to {ev.treatment.arm}",
        ],
    )


def _inconclusive(ev: Evidence, policy: DecisionPolicy, step: float | None) -> Verdict | None:
    assert ev.test is not None and ev.power is not None  # earlier rules handle empty arms
    reasons = [f"inconclusive: no significant difference ({_effect(ev.test)})"]
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
    _significant_better,
    _significant_worse,
    _inconclusive,
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
    if ev.test is not None:
        result.extend(_test_check_rows(ev.test, policy))
    if ev.power is not None:
        result.append(_power_check_row(ev.power, policy))
    return result


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
