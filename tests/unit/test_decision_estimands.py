"""One estimand per test, and the report's alpha everywhere (issue 13, points 2 and 3).

Each case failed before: CUPED tested a different quantity from the conversion test, the
guardrails kept a 95% bound at alpha 0.01, and the relative lift's interval sat beside the
difference's p-value.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

import numpy as np
import pytest
import sqlalchemy as sa
from unit.test_decision_metrics import decide, moments

from service.analysis.ab_evidence import DecisionPolicy, GuardrailSpec
from service.analysis.ab_test import decide_ab
from service.analysis.queries import Window, ab_sample, metric_moments
from service.analysis.stats import MomentStats, ProportionStats, ratio_test
from service.analysis.stats.proportions import DIFFERENCE, RELATIVE
from service.store.events import create_engine, exposures, outcomes

T0 = datetime(2026, 11, 2, tzinfo=UTC).timestamp()
_ids = itertools.count()


def _exposure(user: str, arm: str) -> dict:
    return {
        "ts": T0,
        "request_id": f"r-{next(_ids)}",
        "flag": "churn-model",
        "environment": "test",
        "user_id": user,
        "variant": arm,
        "bento": f"churn:{arm}",
        "reason": "strategy_variant",
        "status": 200,
        "latency_ms": 5.0,
        "shadow": False,
        "fallback": False,
    }


def _outcome(user: str, ts: float) -> dict:
    return {"ts": ts, "request_id": None, "user_id": user, "flag": "churn-model",
            "metric": "retained", "value": 1.0}  # fmt: skip


@pytest.fixture
def engine(tmp_path):
    engine = create_engine(f"sqlite:///{tmp_path / 'events.db'}")
    yield engine
    engine.dispose()


def test_cuped_tests_conversion_not_the_number_of_outcome_rows(engine: sa.Engine) -> None:
    """Both arms convert 40 of 200 users, but each converting treatment user logs three outcome
    rows. The report used to say ramp ("20.0% vs 20.0% ... p = 1.000; decided on CUPED ...
    adjusted p = 8e-06"): CUPED summed outcome values while the conversion test counted users."""
    rows, results = [], []
    rng = np.random.default_rng(5)
    for arm in ("control", "treatment"):
        for n in range(200):
            user = f"{arm}-{n}"
            rows.append(_exposure(user, arm))
            if rng.random() < 0.5:  # a pre-period, for CUPED to have something to adjust by
                results.append(_outcome(user, T0 - 3_600))
            if n < 40:
                results += [
                    _outcome(user, T0 + 60 + k) for k in range(3 if arm == "treatment" else 1)
                ]
    with engine.begin() as conn:
        conn.execute(exposures.insert(), rows)
        conn.execute(outcomes.insert(), results)
    query = {"flag": "churn-model", "arms": ["control", "treatment"], "window": Window()}
    sample = ab_sample(engine, metric="retained", **query)
    primary = metric_moments(engine, metric="retained", binary=True, **query)
    assert primary["treatment"].sum_y == 40  # converted users, not outcome rows
    decision = decide_ab(
        sample,
        control="control",
        treatment="treatment",
        current_step=25,
        policy=DecisionPolicy(min_users_per_arm=100),
        primary_moments=primary,
    )
    checks = {c.name: c for c in decision.checks}
    assert decision.recommendation == "hold", decision.reasons
    assert checks["cuped"].estimand == checks["difference"].estimand == DIFFERENCE
    assert abs(checks["cuped"].estimate) < 0.02  # both convert 20%: no effect, adjusted or not


def test_every_check_names_its_estimand_and_its_p_value_is_for_it() -> None:
    decision = decide(((5_000, 1_500), (5_000, 1_560)))
    rows = {c["name"]: c for c in decision.to_dict()["checks"]}
    for name in ("difference", "relative_lift", "sample_ratio_mismatch", "power"):
        assert rows[name]["estimand"], name
    assert rows["relative_lift"]["estimand"] == RELATIVE
    lift = rows["relative_lift"]
    # The relative lift's p-value is its own test's: significant exactly when its interval
    # excludes 0 (they used to disagree: p = 0.020 beside an interval containing 0).
    assert (lift["p_value"] < 0.05) == (not lift["interval"][0] <= 0 <= lift["interval"][1])
    assert lift["p_value"] != rows["difference"]["p_value"]


@pytest.mark.parametrize("diff_ms", np.linspace(-0.3, 0.3, 13))
def test_relative_lift_p_and_interval_agree_on_every_sample(diff_ms) -> None:
    rng = np.random.default_rng(int(diff_ms * 100) + 50)
    control = ProportionStats("control", 3_000, int(rng.binomial(3_000, 0.2)))
    treatment = ProportionStats(
        "treatment", 3_000, int(rng.binomial(3_000, 0.2 * (1 + diff_ms / 3)))
    )
    decision = decide(((3_000, control.conversions), (3_000, treatment.conversions)))
    lift = {c.name: c for c in decision.checks}["relative_lift"]
    low, high = lift.interval
    assert (lift.p_value < 0.05) == (not low <= 0 <= high)


def _guardrail(margin_hits: float) -> dict[str, dict[str, MomentStats]]:
    """Error counts per user (4 requests each) with treatment errors `margin_hits` higher."""
    rng = np.random.default_rng(2)
    users, requests = 5_000, np.full(5_000, 4.0)
    return {
        "error_rate": {
            "control": moments("control", rng.binomial(4, 0.01, users), requests),
            "treatment": moments("treatment", rng.binomial(4, 0.01 + margin_hits, users), requests),
        }
    }


def test_guardrails_use_the_reports_alpha() -> None:
    """A guardrail whose one-sided 95% bound clears the margin but whose 99% bound does not is
    non-inferior at alpha 0.05 and inconclusive at alpha 0.01 (it used to stay at 95%)."""
    moments_ = _guardrail(0.0)["error_rate"]
    effect = ratio_test(moments_["control"], moments_["treatment"])
    # A margin two standard errors above the difference: inside the 99% bound (2.33 se), outside
    # the 95% one (1.64 se).
    spec = (GuardrailSpec("error_rate", effect.difference + 2.0 * effect.standard_error),)
    found = {}
    for alpha in (0.05, 0.01):
        policy = DecisionPolicy(alpha=alpha, guardrails=spec)
        decision = decide(
            ((5_000, 1_500), (5_000, 1_700)), policy=policy, guardrail_moments=_guardrail(0.0)
        )
        row = {c.name: c for c in decision.checks}["guardrail_error_rate"]
        found[alpha] = row
    bound_95, bound_99 = (found[a].details["one_sided_bound"] for a in (0.05, 0.01))
    assert bound_99 > bound_95  # a stricter level, a wider bound
    assert found[0.05].details["outcome"] == "non_inferior"
    assert found[0.01].details["outcome"] == "inconclusive"
