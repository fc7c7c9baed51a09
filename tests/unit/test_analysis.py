"""service.analysis.queries against a real (temporary SQLite) event store."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from service.analysis.queries import Window, ab_sample, cumulative_by_bucket
from service.analysis.segment_queries import slice_cells
from service.analysis.stats import ProportionStats
from service.store.events import create_engine, exposures, outcomes

FLAG = "churn-model"
ARMS = ("control", "treatment")
DAY = 86_400
T0 = datetime(2026, 11, 2, tzinfo=UTC).timestamp()  # a midnight, so days are easy to read

_ids = itertools.count()


@pytest.fixture
def engine(tmp_path) -> Iterator[sa.Engine]:
    engine = create_engine(f"sqlite:///{tmp_path / 'events.db'}")
    yield engine
    engine.dispose()


def expose(engine, user, variant, *, ts=T0, flag=FLAG, shadow=False, request_id=None):
    """Insert one exposure and return its request id."""
    request_id = request_id or f"req-{next(_ids)}"
    row = {
        "ts": ts,
        "request_id": request_id,
        "flag": flag,
        "environment": "test",
        "user_id": user,
        "variant": variant,
        "bento": f"churn:{variant}",
        "reason": "strategy_variant",
        "status": 200,
        "shadow": shadow,
        "fallback": False,
    }
    with engine.begin() as conn:
        conn.execute(exposures.insert(), [row])
    return request_id


def outcome(engine, *, request_id=None, user=None, flag=None, metric="retained", value=1, ts=T0):
    row = {"ts": ts, "request_id": request_id, "user_id": user, "flag": flag}
    with engine.begin() as conn:
        conn.execute(outcomes.insert(), [{**row, "metric": metric, "value": value}])


def sample(engine, window=None, metric="retained"):
    return ab_sample(engine, flag=FLAG, arms=ARMS, metric=metric, window=window)


def test_counts_distinct_users_and_converting_users(engine):
    for _ in range(3):  # repeat visits: still one user
        expose(engine, "u1", "control")
    request = expose(engine, "u2", "control")
    outcome(engine, request_id=request)
    outcome(engine, request_id=request)  # two outcomes, one converting user
    expose(engine, "u3", "treatment")
    result = sample(engine)
    assert result.arms == {
        "control": ProportionStats("control", 2, 1),
        "treatment": ProportionStats("treatment", 1, 0),
    }
    assert list(result.arms) == ["control", "treatment"]
    assert result.exposed_users == 3
    assert result.users_in_several_arms == 0


@pytest.mark.parametrize(
    ("outcome_kwargs", "converts"),
    [
        pytest.param({"user": "u1", "flag": FLAG}, True, id="user-and-flag"),
        pytest.param({"user": "u1", "flag": FLAG, "ts": T0 - 1}, False, id="before-exposure"),
        pytest.param({"user": "u1", "flag": "other-flag"}, False, id="other-flag"),
        pytest.param({"user": "u1", "flag": None}, False, id="no-flag"),
        pytest.param({"user": "u2", "flag": FLAG}, False, id="other-user"),
        pytest.param({"user": "u1", "flag": FLAG, "metric": "clicked"}, False, id="other-metric"),
        pytest.param({"user": "u1", "flag": FLAG, "value": 0}, False, id="zero-value"),
        pytest.param({"request_id": "elsewhere", "user": "u1", "flag": FLAG}, False, id="req-wins"),
    ],
)
def test_outcomes_without_request_id_join_on_user_and_flag(engine, outcome_kwargs, converts):
    expose(engine, "u1", "treatment", ts=T0)
    expose(engine, "u2", "control", ts=T0)
    outcome(engine, **outcome_kwargs)
    assert sample(engine).arms["treatment"].conversions == int(converts)


def test_outcome_by_request_id_must_match_the_metric_and_be_positive(engine):
    requests = [expose(engine, f"u{i}", "control") for i in range(4)]
    outcome(engine, request_id=requests[0])
    outcome(engine, request_id=requests[1], value=0)
    outcome(engine, request_id=requests[2], metric="clicked")
    outcome(engine, request_id=requests[3], value=0.5)  # any positive value converts
    assert sample(engine).arms["control"] == ProportionStats("control", 4, 2)


def test_shadow_and_anonymous_exposures_are_not_counted(engine):
    request = expose(engine, "u1", "treatment", shadow=True)
    outcome(engine, request_id=request)
    expose(engine, None, "treatment")
    expose(engine, "u2", "control")
    assert sample(engine).arms["treatment"].users == 0


def test_users_in_both_arms_are_excluded_and_counted(engine):
    expose(engine, "u1", "control")
    outcome(engine, request_id=expose(engine, "u1", "treatment"))
    expose(engine, "u2", "control")
    # An arm outside the comparison (the default bento) does not contaminate.
    expose(engine, "u3", "treatment")
    expose(engine, "u3", "default")
    result = sample(engine)
    assert result.users_in_several_arms == 1
    assert result.arms["control"] == ProportionStats("control", 1, 0)
    assert result.arms["treatment"] == ProportionStats("treatment", 1, 0)


def test_other_flags_and_variants_are_ignored(engine):
    expose(engine, "u1", "control", flag="other-flag")
    expose(engine, "u2", "canary")
    result = sample(engine)
    assert result.exposed_users == 0
    assert result.first_exposure is None


def test_window_is_half_open_on_exposure_time(engine):
    for day in range(4):
        outcome(engine, request_id=expose(engine, f"u{day}", "control", ts=T0 + day * DAY))
    window = Window.parse("2026-11-03T00:00:00Z", "2026-11-05")  # days 1 and 2
    result = sample(engine, window)
    assert result.arms["control"] == ProportionStats("control", 2, 2)
    assert result.first_exposure == datetime(2026, 11, 3, tzinfo=UTC)
    assert result.last_exposure == datetime(2026, 11, 4, tzinfo=UTC)
    # An outcome of a windowed exposure counts even when it lands after the window.
    expose(engine, "late", "treatment", ts=T0 + DAY)
    outcome(engine, user="late", flag=FLAG, ts=T0 + 10 * DAY)
    assert sample(engine, window).arms["treatment"] == ProportionStats("treatment", 1, 1)


def test_empty_store_gives_empty_arms(engine):
    result = sample(engine)
    assert result.arms == {arm: ProportionStats(arm, 0, 0) for arm in ARMS}
    assert result.last_exposure is None


def test_needs_two_distinct_arms(engine):
    with pytest.raises(ValueError, match="two distinct arms"):
        ab_sample(engine, flag=FLAG, arms=("control", "control"), metric="retained")


def test_cumulative_series_ends_at_the_totals(engine):
    # Day 0: 2 control users (1 converts); day 1: 1 treatment user (converts) and a control
    # user already seen on day 0 (cohorted on first exposure, so not new); day 2: 1 control.
    outcome(engine, request_id=expose(engine, "a", "control", ts=T0 + 10))
    expose(engine, "b", "control", ts=T0 + 20)
    outcome(engine, request_id=expose(engine, "c", "treatment", ts=T0 + DAY + 5))
    expose(engine, "a", "control", ts=T0 + DAY + 6)
    expose(engine, "d", "control", ts=T0 + 2 * DAY + DAY - 1)
    points = cumulative_by_bucket(engine, flag=FLAG, arms=ARMS, metric="retained")
    series = [(p.bucket_start.day, p.arm, p.users, p.conversions) for p in points]
    assert series == [(2, "control", 2, 1), (3, "treatment", 1, 1), (4, "control", 3, 1)]
    totals = sample(engine).arms
    for arm in ARMS:
        last = [p for p in points if p.arm == arm][-1]
        assert (last.users, last.conversions) == (totals[arm].users, totals[arm].conversions)


@pytest.mark.parametrize(
    ("start", "end", "expected"),
    [
        pytest.param(None, None, {"start": None, "end": None}, id="unbounded"),
        pytest.param(
            "2026-11-01",
            "2026-11-08T12:00:00+01:00",
            {"start": "2026-11-01T00:00:00Z", "end": "2026-11-08T11:00:00Z"},
            id="naive-is-utc",
        ),
        pytest.param("", "", {"start": None, "end": None}, id="empty-strings"),
    ],
)
def test_window_parse(start, end, expected):
    assert Window.parse(start, end).to_dict() == expected


def test_window_rejects_start_after_end():
    with pytest.raises(ValueError, match="not before"):
        Window.parse("2026-11-08", "2026-11-01")


def test_slice_cells_count_users_and_conversions_as_the_sample_does(engine):
    """The drill-down's one query (arm as an integer, conversions by request and by user) agrees
    with ab_sample on every path: by request, by user after the first exposure, an outcome
    before it (not counted), zero values, and a user in both arms (left out)."""
    outcome(engine, request_id=expose(engine, "u1", "control"))
    expose(engine, "u2", "control", ts=T0 + 10)
    outcome(engine, user="u2", flag=FLAG, ts=T0 + 20)  # by user, after exposure: counts
    expose(engine, "u3", "treatment", ts=T0 + 10)
    outcome(engine, user="u3", flag=FLAG, ts=T0)  # before the first exposure: does not
    outcome(engine, request_id=expose(engine, "u4", "treatment"), value=0)
    outcome(engine, request_id=expose(engine, "u5", "treatment"))
    expose(engine, "u6", "control")
    expose(engine, "u6", "treatment")  # in both arms
    whole = sample(engine)
    cells = slice_cells(engine, flag=FLAG, arms=ARMS, metric="retained", dimensions=["region"])
    by_arm = {c.arm: (c.users, c.conversions) for c in cells}
    assert (
        by_arm
        == {arm: (whole.arms[arm].users, whole.arms[arm].conversions) for arm in ARMS}
        == {"control": (2, 2), "treatment": (3, 1)}
    )
