"""analyse_ab on bad input: every problem becomes a hold that says exactly what is missing."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from service.analysis.ab_test import analyse_ab
from service.analysis.parameters import AB_PARAMETERS, coerce_parameters
from service.analysis.reports import exit_code
from service.store.events import create_engine, exposures, outcomes

T0 = 1_793_577_600.0  # 2026-11-02T00:00:00Z


@pytest.fixture(scope="module")
def engine(tmp_path_factory) -> Iterator[sa.Engine]:
    engine = create_engine(f"sqlite:///{tmp_path_factory.mktemp('e') / 'events.db'}")
    rows, wins = [], []
    for n in range(600):
        variant = ("control", "treatment")[n % 2]
        rows.append(
            {
                "ts": T0 + n,
                "request_id": f"r{n}",
                "flag": "churn-model",
                "environment": "t",
                "user_id": f"u{n}",
                "variant": variant,
                "bento": "churn:v1",
                "reason": "strategy_variant",
                "status": 200,
                "latency_ms": 5.0,
                "shadow": False,
                "fallback": False,
            }
        )
        if n % 3 == 0:
            wins.append({"ts": T0 + n, "request_id": f"r{n}", "metric": "retained", "value": 1.0})
    with engine.begin() as conn:
        conn.execute(exposures.insert(), rows)
        conn.execute(outcomes.insert(), wins)
    yield engine
    engine.dispose()


def analyse(engine, **overrides):
    params, problems = coerce_parameters({"flag": "churn-model", **overrides}, AB_PARAMETERS)
    return analyse_ab(engine, params, problems).decision


@pytest.mark.parametrize(
    ("overrides", "missing"),
    [
        pytest.param(
            {"flag": "no-such-flag"},
            "flag 'no-such-flag' has no exposures",
            id="flag-without-events",
        ),
        pytest.param({"window_start": "2030-01-01"}, "has no exposures", id="empty-window"),
        pytest.param({"treatment": "canary"}, "arm 'canary' has no exposures", id="empty-arm"),
        pytest.param(
            {"metric": "revenue"}, "metric 'revenue' has no outcomes", id="unknown-metric"
        ),
        pytest.param(
            {"goal_metrics": "revenue"}, "goal metric 'revenue' has no outcomes", id="unknown-goal"
        ),
        pytest.param({"alpha": "abc"}, "alpha='abc' is not a valid float", id="alpha-type"),
        pytest.param({"alpha": 2}, "alpha=2.0 must lie in (0, 0.5)", id="alpha-range"),
        pytest.param({"buckets": "many"}, "buckets='many'", id="buckets-type"),
        pytest.param({"guardrails": "maybe"}, "guardrails='maybe'", id="bool-type"),
        pytest.param({"window_start": "last tuesday"}, "window", id="window-text"),
        pytest.param({"expected_split": "50"}, "expected_split", id="split"),
        pytest.param({"ramp_steps": "50,5"}, "ramp_steps", id="ramp-steps"),
        pytest.param({"correction": "bonferroni"}, "correction 'bonferroni'", id="correction"),
        pytest.param({"treatment": "control"}, "must differ", id="same-arms"),
    ],
)
def test_bad_input_holds_and_names_what_is_missing(engine, overrides, missing):
    decision = analyse(engine, **overrides)
    assert decision.recommendation == "hold"
    assert any(missing in item for item in decision.missing), decision.missing
    assert decision.checks[0].name == "inputs"
    assert "Missing:" in decision.summary
    assert exit_code(decision.to_dict()) == 3


def test_good_input_has_nothing_missing(engine):
    decision = analyse(engine, current_step="25")
    assert decision.missing == []
    assert decision.current_step == 25
    assert exit_code(decision.to_dict()) == 0


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"alpha": "0.1"}, 0.1),
        ({"alpha": None}, None),
        ({"buckets": "30"}, 30),
        ({"sequential": "yes"}, True),
        ({"sequential": False}, False),
    ],
)
def test_parameters_are_coerced(raw, expected):
    values, problems = coerce_parameters(raw, AB_PARAMETERS)
    assert values[next(iter(raw))] == expected
    assert problems == []
