"""The decision rule with guardrails, further goals (Holm / BH), CUPED, sequential mode and
users in both arms, table-driven; every check lands in decision.json."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest

from service.analysis.ab_evidence import DecisionPolicy
from service.analysis.ab_test import DEFAULT_GUARDRAILS, decide_ab
from service.analysis.queries import AbSample, Window
from service.analysis.stats import MomentStats, ProportionStats

WIN = ((5_000, 1_500), (5_000, 1_750))  # +5 pp, p < 0.001
FLAT = ((5_000, 1_500), (5_000, 1_505))


def moments(arm, y, x=None):
    y = np.asarray(y, float)
    x = np.ones_like(y) if x is None else np.asarray(x, float)
    return MomentStats(arm, len(y), y.sum(), y @ y, x.sum(), x @ x, x @ y)


def guardrails(*, errors=(0.0, 0.0), latency=(10.0, 10.0), users=5_000, seed=1):
    """Per-user guardrail sums: 4 requests per user, error probability and mean latency per arm."""
    rng = np.random.default_rng(seed)
    out: dict[str, dict[str, MomentStats]] = {
        "error_rate": {},
        "fallback_rate": {},
        "latency_ms": {},
    }
    for arm, err, lat in zip(("control", "treatment"), errors, latency, strict=True):
        requests = np.full(users, 4.0)
        out["error_rate"][arm] = moments(arm, rng.binomial(4, err, users), requests)
        out["fallback_rate"][arm] = moments(arm, np.zeros(users), requests)
        out["latency_ms"][arm] = moments(arm, rng.gamma(4.0, lat, users), requests)
    return out


def decide(arms, *, several=0, policy=None, **metrics):
    (cu, cc), (tu, tc) = arms
    sample = AbSample(
        flag="churn-model",
        metric="retained",
        window=Window(),
        arms={
            "control": ProportionStats("control", cu, cc),
            "treatment": ProportionStats("treatment", tu, tc),
        },
        users_in_several_arms=several,
        first_exposure=datetime(2026, 11, 2, tzinfo=UTC),
        last_exposure=datetime(2026, 11, 2, tzinfo=UTC),
    )
    return decide_ab(
        sample,
        control="control",
        treatment="treatment",
        current_step=25,
        policy=policy or DecisionPolicy(guardrails=DEFAULT_GUARDRAILS),
        **metrics,
    )


def revenue(shift, *, users=5_000, seed=3, pre_corr=0.0):
    rng = np.random.default_rng(seed)
    out = {}
    for arm, delta in (("control", 0.0), ("treatment", shift)):
        x = rng.normal(10, 2, users)
        y = 10 + pre_corr * (x - 10) + np.sqrt(1 - pre_corr**2) * rng.normal(0, 2, users) + delta
        out[arm] = moments(arm, y, x if pre_corr else np.zeros(users))
    return out


CASES = [
    # id, arms, keyword arguments for decide, recommendation, words in the reasons
    ("win-guardrails-fine", WIN, {"guardrail_moments": guardrails()}, "ramp", "ramp from 25%"),
    (
        "win-errors-up",
        WIN,
        {"guardrail_moments": guardrails(errors=(0.0, 0.05))},
        "rollback",
        "guardrail lost: error_rate",
    ),
    (
        "win-latency-up-50pct",
        WIN,
        {"guardrail_moments": guardrails(latency=(10.0, 15.0))},
        "rollback",
        "latency_ms",
    ),
    (
        "win-latency-near-margin",
        WIN,
        {"guardrail_moments": guardrails(latency=(10.0, 11.9), users=5_000)},
        "hold",
        "not yet shown non-inferior",
    ),
    ("win-guardrails-unmeasured", WIN, {}, "hold", "not measured"),
    (
        "flat-errors-up",
        FLAT,
        {"guardrail_moments": guardrails(errors=(0.0, 0.05))},
        "rollback",
        "guardrail lost",
    ),
    (
        "goal-worse",
        WIN,
        {"guardrail_moments": guardrails(), "goal_moments": {"revenue": revenue(-0.5)}},
        "rollback",
        "goal metric revenue is significantly worse",
    ),
    (
        "goal-flat",
        WIN,
        {"guardrail_moments": guardrails(), "goal_moments": {"revenue": revenue(0.0)}},
        "ramp",
        "after the multiple-testing correction",
    ),
]


@pytest.mark.parametrize(
    ("arms", "metrics", "recommendation", "words"),
    [pytest.param(*case[1:], id=case[0]) for case in CASES],
)
def test_rule_with_guardrails_and_goals(arms, metrics, recommendation, words):
    decision = decide(arms, **metrics)
    assert decision.recommendation == recommendation, decision.reasons
    assert words in " ".join(decision.reasons)


def test_users_in_both_arms_make_it_unhealthy():
    decision = decide(WIN, several=500, guardrail_moments=guardrails())
    assert decision.recommendation == "hold"
    assert "users in both arms" in decision.reasons[0]
    check = {c.name: c for c in decision.checks}["users_in_both_arms"]
    assert not check.passed and check.estimate == pytest.approx(500 / 10_500)


@pytest.mark.parametrize(
    ("correction", "recommendation"),
    # Primary p = 0.031 alone ramps; with two flat goals in the family Holm multiplies the
    # smallest p by 3 and Benjamini-Hochberg's step-up by 3 / 1 too: 0.092, hold.
    [("none", "ramp"), ("holm", "hold"), ("benjamini-hochberg", "hold")],
)
def test_correction_over_goal_metrics(correction, recommendation):
    arms = ((5_000, 1_500), (5_000, 1_600))  # +2 pp, two-proportion p = 0.031
    goals = {"revenue": revenue(0.0, seed=4), "sessions": revenue(0.0, seed=5)}
    policy = DecisionPolicy(correction=correction)
    decision = decide(arms, policy=policy, goal_moments=goals)
    raw = {c.name: c for c in decision.checks}["difference"].p_value
    assert 0.01 < raw < 0.05  # the regime where the correction matters
    assert decision.recommendation == recommendation


def test_cuped_decides_when_there_is_a_pre_period_and_reports_the_reduction():
    # A conversion metric whose users' pre-period retention correlates with the outcome.
    rng = np.random.default_rng(8)
    pre = rng.random((2, 5_000)) < 0.3
    post = np.where(pre, rng.random((2, 5_000)) < 0.8, rng.random((2, 5_000)) < 0.1)
    primary = {arm: moments(arm, post[i], pre[i]) for i, arm in enumerate(("control", "treatment"))}
    arms = ((5_000, int(post[0].sum())), (5_000, int(post[1].sum())))
    decision = decide(arms, policy=DecisionPolicy(), primary_moments=primary)
    cuped = {c.name: c for c in decision.checks}["cuped"]
    assert cuped.method.startswith("CUPED-adjusted Welch t-test")
    assert cuped.details["variance_reduction"] > 0.4
    assert cuped.details["pre_period_correlation"] > 0.6


def test_a_pre_period_identical_to_the_outcome_is_not_used_for_the_decision():
    # The demo's accumulated store: last run's outcome equals this run's, user by user.
    rng = np.random.default_rng(9)
    post = np.stack([rng.random(5_000) < 0.785, rng.random(5_000) < 0.833])
    primary = {
        arm: moments(arm, post[i], post[i]) for i, arm in enumerate(("control", "treatment"))
    }
    arms = ((5_000, int(post[0].sum())), (5_000, int(post[1].sum())))
    decision = decide(arms, policy=DecisionPolicy(), primary_moments=primary)
    assert "cuped" not in {c.name for c in decision.checks}
    assert decision.recommendation == "ramp"


def test_sequential_mode_is_stricter_than_a_fixed_horizon_test():
    arms = ((5_000, 1_500), (5_000, 1_610))  # fixed test: p = 0.017; mSPRT: not yet
    fixed = decide(arms, policy=DecisionPolicy())
    sequential = decide(arms, policy=DecisionPolicy(engine="sequential"))
    assert fixed.recommendation == "ramp"
    assert sequential.recommendation == "hold"
    row = {c.name: c for c in sequential.checks}["sequential"]
    assert row.method.startswith("mixture SPRT") and not row.passed
    assert row.interval[0] < 0 < row.interval[1]


def test_every_check_is_in_decision_json():
    decision = decide(WIN, guardrail_moments=guardrails(), goal_moments={"revenue": revenue(0.2)})
    names = [c["name"] for c in decision.to_dict()["checks"]]
    assert names == [
        "sample_size",
        "sample_ratio_mismatch",
        "users_in_both_arms",
        "difference",
        "relative_lift",
        "power",
        "goal_revenue",
        "guardrail_error_rate",
        "guardrail_fallback_rate",
        "guardrail_latency_ms",
    ]
    for check in decision.to_dict()["checks"]:
        assert check["method"] and "passed" in check
