"""service.analysis.queries: continuous metrics with their pre-period, guardrails, adaptive buckets.

`check_*` functions take an engine so the PostgreSQL integration test runs the same checks.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator
from dataclasses import astuple
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from service.analysis.ab_summary import ab_summary
from service.analysis.queries import (
    DAY_SECONDS,
    Window,
    ab_sample,
    bucket_seconds_for,
    cumulative_by_bucket,
    guardrail_moments,
    known_metrics,
    metric_moments,
)
from service.analysis.segment_queries import slice_cells
from service.analysis.stats import MomentStats
from service.store.events import create_engine, exposures, outcomes

FLAG = "churn-model"
ARMS = ("control", "treatment")
T0 = datetime(2026, 11, 2, tzinfo=UTC).timestamp()
_ids = itertools.count()


@pytest.fixture
def engine(tmp_path) -> Iterator[sa.Engine]:
    engine = create_engine(f"sqlite:///{tmp_path / 'events.db'}")
    yield engine
    engine.dispose()


def exposure_row(user, variant, *, ts=T0, status=200, latency=10.0, fallback=False, shadow=False):
    return {
        "ts": ts,
        "request_id": f"req-{next(_ids)}",
        "flag": FLAG,
        "environment": "test",
        "user_id": user,
        "variant": variant,
        "bento": f"churn:{variant}",
        "reason": "strategy_variant",
        "status": status,
        "latency_ms": latency,
        "shadow": shadow,
        "fallback": fallback,
        "region": None,
        "properties": {},
    }


def outcome_row(*, request_id=None, user=None, flag=None, metric="revenue", value=1.0, ts=T0):
    return {
        "ts": ts,
        "request_id": request_id,
        "user_id": user,
        "flag": flag,
        "metric": metric,
        "value": value,
    }


def insert(engine, exposure_rows, outcome_rows=()):
    with engine.begin() as conn:
        if exposure_rows:
            conn.execute(exposures.insert(), list(exposure_rows))
        if outcome_rows:
            conn.execute(outcomes.insert(), list(outcome_rows))


def check_metric_moments(engine):
    a1, a2 = exposure_row("a", "control", ts=T0 + 10), exposure_row("a", "control", ts=T0 + 20)
    b1 = exposure_row("b", "treatment", ts=T0 + 10)
    c1 = exposure_row("c", "treatment", ts=T0 + 10)
    both = [exposure_row("d", "control"), exposure_row("d", "treatment")]
    insert(
        engine,
        [a1, a2, b1, c1, *both],
        [
            outcome_row(request_id=a1["request_id"], value=3.0),
            outcome_row(request_id=a2["request_id"], value=2.0),
            outcome_row(user="b", flag=FLAG, value=7.0, ts=T0 + 11),  # after exposure: counts
            outcome_row(user="b", value=4.0, ts=T0 + 1),  # before exposure: pre-period x
            outcome_row(user="a", value=1.0, ts=T0),  # pre-period for a
            outcome_row(request_id=b1["request_id"], metric="other", value=100.0),
        ],
    )
    result = metric_moments(engine, flag=FLAG, arms=ARMS, metric="revenue")
    # control: a only (d is in both arms): y = 5 (+ the pre-period outcome of a has no flag
    # and no request id, so it is only x), x = 1.
    assert result["control"] == MomentStats("control", 1, 5.0, 25.0, 1.0, 1.0, 5.0)
    # treatment: b (y 7, x 4) and c (y 0, x 0).
    assert result["treatment"] == MomentStats("treatment", 2, 7.0, 49.0, 4.0, 16.0, 28.0)


def check_guardrail_moments(engine):
    insert(
        engine,
        [
            exposure_row("a", "control", latency=10.0),
            exposure_row("a", "control", latency=30.0, status=503, fallback=True),
            exposure_row("b", "treatment", latency=5.0),
            exposure_row("b", "treatment", latency=None, status=500),
            exposure_row("b", "treatment", latency=7.0),
            exposure_row("x", "treatment", shadow=True, status=599),  # shadow: not served
        ],
    )
    result = guardrail_moments(engine, flag=FLAG, arms=ARMS)
    # error_rate: y = errors per user, x = requests per user.
    assert result["error_rate"]["control"] == MomentStats("control", 1, 1.0, 1.0, 2.0, 4.0, 2.0)
    assert result["error_rate"]["treatment"] == MomentStats("treatment", 1, 1.0, 1.0, 3.0, 9.0, 3.0)
    assert result["fallback_rate"]["treatment"].sum_y == 0.0
    # latency: y = latency sum, x = requests with a latency.
    assert result["latency_ms"]["control"] == MomentStats(
        "control", 1, 40.0, 1600.0, 2.0, 4.0, 80.0
    )
    assert result["latency_ms"]["treatment"].sum_y == 12.0
    assert result["latency_ms"]["treatment"].sum_x == 2.0


def check_summary_matches_the_queries(engine):
    """ab_summary's one pass gives exactly what the four separate queries give."""
    rng = random.Random(7)
    exposure_rows, outcome_rows = [], []
    for n in range(300):
        user = f"u{n}"
        variants = ["control", "treatment"] if n % 37 == 0 else [rng.choice(ARMS)]
        for k in range(rng.randint(1, 4)):
            row = exposure_row(
                user,
                rng.choice(variants),
                ts=T0 + rng.uniform(0, 7200),
                status=rng.choice([200, 200, 200, 503]),
                latency=rng.choice([None, rng.uniform(1, 50)]),
                fallback=rng.random() < 0.1,
                shadow=k == 3,
            )
            # Dimensions: a region column (some users move, some have none) and a context field.
            row["region"] = rng.choice(["eu", "us", None]) if n % 5 else None
            row["properties"] = {"plan": rng.choice(["free", "pro"])} if n % 3 else {}
            exposure_rows.append(row)
            if rng.random() < 0.3:
                value = rng.choice([0.0, 1.0, 2.0])
                outcome_rows.append(outcome_row(request_id=row["request_id"], value=value))
        if rng.random() < 0.2:  # by user: before or after the first exposure, flag or not
            outcome_rows.append(
                outcome_row(
                    user=user, flag=rng.choice([FLAG, None]), ts=T0 + rng.uniform(-600, 7200)
                )
            )
    exposure_rows.append(exposure_row(None, "control"))  # anonymous: no unit
    exposure_rows.append(exposure_row("early", "other", ts=T0 - 900))  # another variant, earlier
    exposure_rows.append(exposure_row("early", "control", ts=T0 + 60))
    outcome_rows.append(outcome_row(user="early", value=5.0, ts=T0 - 300))  # after first ever
    insert(engine, exposure_rows, outcome_rows)
    windows = [None, Window.parse("2026-11-02T00:20:00", "2026-11-02T01:40:00")]
    for window in windows:
        query = {"flag": FLAG, "arms": ARMS, "window": window, "metric": "revenue"}
        summary = ab_summary(engine, dimensions=DIMENSIONS, **query)
        sample = ab_sample(engine, **query)
        # The drill-down's cells from the same pass, as its own query reads them.
        cells = slice_cells(engine, dimensions=DIMENSIONS, **query)
        assert {c.values for c in cells} >= {("(none)", "(none)"), ("eu", "pro")}
        expected = _cells_by_key(cells)
        assert _cells_by_key(summary.slice_cells).keys() == expected.keys()
        for key, values in _cells_by_key(summary.slice_cells).items():
            assert values == pytest.approx(expected[key], rel=1e-12), key
        assert ab_summary(engine, **query).slice_cells == []  # none unless asked for
        assert summary.sample == sample
        assert summary.primary_moments == metric_moments(engine, binary=True, **query)
        del query["metric"]
        guardrails = guardrail_moments(engine, **query)
        for name, by_arm in summary.guardrail_moments.items():
            for arm, moments in by_arm.items():  # sums of floats: the order of addition differs
                expected = astuple(guardrails[name][arm])
                assert astuple(moments)[1:] == pytest.approx(expected[1:], rel=1e-12)
        bucket = bucket_seconds_for(sample.first_exposure, sample.last_exposure)
        assert summary.bucket_seconds == bucket
        points = cumulative_by_bucket(engine, metric="revenue", bucket_seconds=bucket, **query)
        # Within a bucket the separate query leaves the arms' order open.
        assert summary.points == sorted(points, key=lambda p: (p.bucket_start, p.arm))
        assert summary.sample.users_in_several_arms > 0 and summary.points


DIMENSIONS = ("region", "plan")


def _cells_by_key(cells):
    """(values, arm) -> users, conversions, then every guardrail's sums, as one flat list."""
    return {
        (c.values, c.arm): [c.users, c.conversions]
        + [x for m in c.guardrails.values() for x in astuple(m)[1:]]
        for c in cells
    }


def test_ab_summary_matches_the_separate_queries(engine):
    check_summary_matches_the_queries(engine)


def test_metric_moments_sum_post_and_pre_exposure_values(engine):
    check_metric_moments(engine)


def test_guardrail_moments_are_per_user_ratios_from_exposures(engine):
    check_guardrail_moments(engine)


def test_empty_store_gives_empty_moments(engine):
    result = metric_moments(engine, flag=FLAG, arms=ARMS, metric="revenue")
    assert result["control"] == MomentStats("control", 0, 0.0, 0.0)
    assert guardrail_moments(engine, flag=FLAG, arms=ARMS)["latency_ms"]["treatment"].n == 0


def test_known_metrics(engine):
    insert(engine, [], [outcome_row(metric="retained"), outcome_row(metric="revenue")] * 2)
    assert known_metrics(engine) == ["retained", "revenue"]


START = datetime(2026, 11, 2, tzinfo=UTC)


@pytest.mark.parametrize(
    ("span", "expected"),
    [
        pytest.param(timedelta(minutes=2), 10, id="demo-2-minutes"),
        pytest.param(timedelta(seconds=15), 1, id="seconds"),
        pytest.param(timedelta(hours=1), 300, id="an-hour"),
        pytest.param(timedelta(days=3), 21_600, id="three-days"),
        pytest.param(timedelta(days=60), DAY_SECONDS, id="months"),
        pytest.param(timedelta(0), DAY_SECONDS, id="one-instant"),
    ],
)
def test_bucket_width_adapts_to_the_window(span, expected):
    assert bucket_seconds_for(START, START + span) == expected


def test_bucket_width_unknown_without_data():
    assert bucket_seconds_for(None, None) == DAY_SECONDS


def test_outcomes_after_an_earlier_exposure_are_not_pre_exposure_values(engine):
    """A user exposed before the window: their outcomes from then are effects of the
    treatment, not a covariate; only outcomes before the first exposure ever count."""
    window_start = T0 + DAY_SECONDS
    earlier = exposure_row("u1", "treatment", ts=T0)
    insert(
        engine,
        [earlier, exposure_row("u1", "treatment", ts=window_start + 60)],
        [
            outcome_row(user="u1", value=5.0, ts=T0 - 60),  # before any exposure: covariate
            outcome_row(request_id=earlier["request_id"], value=7.0, ts=T0 + 60),  # an effect
        ],
    )
    from service.analysis.queries import Window

    window = Window.parse(datetime.fromtimestamp(window_start, UTC), None)
    moments = metric_moments(engine, flag=FLAG, arms=ARMS, metric="revenue", window=window)
    assert moments["treatment"].sum_x == 5.0
