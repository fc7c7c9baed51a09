"""The whole A/B analysis, as the notebook runs it: parameters in, a decision out.

`analyse_ab` parses the report's parameters, gathers the evidence (`analysis.ab_evidence`),
applies the decision rule (`analysis.ab_rules`) and writes the checks (`analysis.ab_checks`)
into the decision document (`analysis.decision`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from service.analysis.ab_arms_checks import arm_problems, decide_arms
from service.analysis.ab_checks import arm_rows, checks, primary_summary, summary_paragraph
from service.analysis.ab_evidence import (
    ENGINES,
    DecisionPolicy,
    GuardrailSpec,
    data_problems,
    gather_evidence,
    with_metrics,
)
from service.analysis.ab_group_sequential import LookPlan
from service.analysis.ab_rules import recommend
from service.analysis.ab_summary import ab_summary
from service.analysis.decision import (
    Decision,
    _iso,
    hold_for_missing,
    parse_ramp_steps,
)
from service.analysis.queries import (
    AbSample,
    CumulativePoint,
    Window,
    known_metrics,
    metric_moments,
)
from service.analysis.segment_queries import SliceCell, dimensions_of
from service.analysis.stats import (
    ADJUSTMENT_NAMES,
    SRM_THRESHOLD,
    GaussianPrior,
    MomentStats,
)
from service.flags.model import DEFAULT_RAMP_STEPS

# Errors and fallbacks: at most 1 pp more than control; latency: at most 20% slower.
DEFAULT_GUARDRAILS: tuple[GuardrailSpec, ...] = (
    GuardrailSpec("error_rate", 0.01),
    GuardrailSpec("fallback_rate", 0.01),
    GuardrailSpec("latency_ms", 0.20, relative=True),
)


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
        primary=primary_summary(evidence, policy),
    )


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


def parse_treatments(text: str | None) -> list[str]:
    """`"b,c"` -> `["b", "c"]`: the treatment arms, in order (one for an A/B test)."""
    names = [t.strip() for t in str(text or "").split(",") if t.strip()]
    return names or [str(text or "")]


def parse_arm_steps(
    text: str | None, treatments: Sequence[str], common: float | None = None
) -> dict[str, float | None]:
    """`"b=10,c=5"` -> `{"b": 10.0, "c": 5.0}`; arms left out are at `common` (the
    `current_step` given for all of them) or unknown. ValueError names a bad entry."""
    steps: dict[str, float | None] = dict.fromkeys(treatments, common)
    for entry in (e.strip() for e in str(text or "").split(",") if e.strip()):
        arm, _, value = entry.partition("=")
        if arm.strip() not in steps:
            raise ValueError(f"{entry!r} names no treatment arm ({', '.join(treatments)})")
        try:
            step = float(value)
        except ValueError:
            raise ValueError(f"{entry!r} is not arm=percent") from None
        if not 0 <= step <= 100:
            raise ValueError(f"{entry!r}: a step is a percentage 0-100")
        steps[arm.strip()] = step
    return steps


# --- the whole A/B analysis, as the notebook runs it ------------------------------------------


@dataclass(frozen=True)
class AbAnalysis:
    """The decision and what the report plots alongside it."""

    decision: Decision
    sample: AbSample
    window: Window
    bucket_seconds: int
    cumulative: list[CumulativePoint]
    dimensions: tuple[str, ...] = ()
    slice_cells: list[SliceCell] = field(default_factory=list)  # the drill-down's, per arm


def analyse_ab(
    engine: sa.Engine, params: dict[str, Any], problems: Sequence[str] = ()
) -> AbAnalysis:
    """Run every query and test for the A/B report; missing inputs make it a hold that says
    what is missing (never an exception for bad parameters or absent data)."""
    problems = list(problems)
    arms = [params["control"], *parse_treatments(params["treatment"])]
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
    if len(set(arms)) < len(arms):
        problems.append(
            f"control and treatment must differ, both are {arms[0]!r}"
            if len(arms) == 2
            else f"control and treatment arms must all differ: {', '.join(arms)}"
        )
        arms = list(dict.fromkeys(arms))
        arms = arms if len(arms) >= 2 else [arms[0], f"{arms[0]} (treatment)"]
        weights = None
    flag, metric = params["flag"], params["metric"]
    query = {"flag": flag, "arms": arms, "window": window}
    # One pass over the exposures for the sample, primary moments, guardrails, the series and
    # the drill-down's cells.
    dimensions = dimensions_of(params.get("dimensions"))
    summary = ab_summary(
        engine, metric=metric, buckets=params["buckets"] or 20, dimensions=dimensions, **query
    )
    sample = summary.sample
    known = known_metrics(engine)
    goals = [g.strip() for g in (params["goal_metrics"] or "").split(",") if g.strip()]
    problems += [
        f"goal metric '{g}' has no outcomes in the event store" for g in goals if g not in known
    ]
    # Converted or not per user, before and after exposure: the very quantity the
    # two-proportion test compares, so CUPED only narrows its interval.
    primary = summary.primary_moments
    guardrails = summary.guardrail_moments if policy.guardrails else None
    if len(arms) > 2:
        problems += arm_problems(arms[1:], policy, goals)
        steps = _parsed(
            problems,
            "current_steps",
            lambda: parse_arm_steps(params["current_steps"], arms[1:], params["current_step"]),
            dict.fromkeys(arms[1:]),
        )
        decision = decide_arms(
            sample, control=arms[0], treatments=arms[1:], expected_weights=weights,
            steps=steps, policy=policy, primary_moments=primary, guardrail_moments=guardrails,
        )  # fmt: skip
    else:
        decision = decide_ab(
            sample,
            control=arms[0],
            treatment=arms[1],
            expected_weights=weights,
            current_step=params["current_step"],
            policy=policy,
            goal_moments={
                g: metric_moments(engine, metric=g, **query) for g in goals if g in known
            },
            primary_moments=primary,
            guardrail_moments=guardrails,
        )
    decision = hold_for_missing(
        decision, data_problems(sample, known_metrics=known, other_problems=problems)
    )
    return AbAnalysis(
        decision,
        sample,
        window,
        summary.bucket_seconds,
        summary.points,
        dimensions,
        summary.slice_cells,
    )


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
    engine = "sequential" if params.get("sequential") else params.get("engine") or "frequentist"
    if engine not in ENGINES:
        problems.append(f"engine {engine!r} is not one of {sorted(ENGINES)}; used frequentist")
        engine = "frequentist"
    threshold = params.get("srm_threshold")
    if threshold is None or not 0 < threshold <= 0.5:
        problems.append(f"srm_threshold={threshold!r} must lie in (0, 0.5]; used {SRM_THRESHOLD}")
        threshold = SRM_THRESHOLD
    return DecisionPolicy(
        alpha=alpha,
        srm_threshold=threshold,
        ramp_steps=steps,
        correction=correction,
        guardrails=DEFAULT_GUARDRAILS if params["guardrails"] else (),
        engine=engine,
        prior=_prior(params, problems),
        plan=_plan(params, problems) if engine == "group-sequential" else LookPlan(),
    )


def _plan(params: dict[str, Any], problems: list[str]) -> LookPlan:
    """The group-sequential engine's looks; a plan it cannot use is named and the report holds."""
    looks = params.get("looks")
    plan = LookPlan(5 if looks is None else looks, params.get("look"), params.get("planned_users"))
    problems += plan.problems()
    return plan


def _prior(params: dict[str, Any], problems: list[str]) -> GaussianPrior:
    """The Bayesian prior on the relative lift: flat unless a positive variance is given."""
    mean, variance = params.get("prior_mean"), params.get("prior_variance")
    if variance is None:
        return GaussianPrior()
    if not variance > 0:
        problems.append(f"prior_variance={variance!r} must be positive; used a flat prior")
        return GaussianPrior()
    return GaussianPrior(mean or 0.0, variance, proper=True)


def _parsed(problems: list[str], name: str, parse: Callable[[], Any], default: Any) -> Any:
    try:
        return parse()
    except (TypeError, ValueError) as exc:
        problems.append(f"{name}: {exc}; used the default")
        return default
