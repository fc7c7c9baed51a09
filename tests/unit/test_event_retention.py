"""Event-store migrations and retention on SQLite; the PostgreSQL partitions are exercised in
tests/integration/test_event_store_migrations.py."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from service.errors import ConfigError
from service.store.events import create_engine, event_batches, exposures, outcomes
from service.store.retention import month_starts, parse_age, partition_name, prune
from service.store.schema import current, head, migrate

NOW = datetime(2026, 12, 5, 12, tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    ("text", "seconds"), [("90d", 90 * 86400), ("12h", 43200), ("2w", 14 * 86400), (" 30 m", 1800)]
)
def test_ages(text: str, seconds: int) -> None:
    assert parse_age(text) == seconds


@pytest.mark.parametrize("text", ["90", "0d", "-1d", "90 days", "d"])
def test_a_bad_age_names_the_option(text: str) -> None:
    with pytest.raises(ConfigError, match="--older-than"):
        parse_age(text)


def test_months_run_from_the_oldest_row_to_three_ahead_and_no_further_back_than_two_years() -> None:
    months = month_starts(datetime(2026, 10, 20, tzinfo=UTC).timestamp(), NOW)
    assert [partition_name("exposures", m) for m in months] == [
        "exposures_y2026m10", "exposures_y2026m11", "exposures_y2026m12",
        "exposures_y2027m01", "exposures_y2027m02", "exposures_y2027m03",
    ]  # fmt: skip
    ancient = month_starts(0.0, NOW)
    assert ancient[0] == datetime(2024, 12, 1, tzinfo=UTC) and len(ancient) == 28
    assert month_starts(None, NOW)[0] == datetime(2026, 12, 1, tzinfo=UTC)


def row(ts: float, request_id: str) -> dict[str, object]:
    return {"ts": ts, "request_id": request_id, "flag": "f", "environment": "dev",
            "variant": "control", "reason": "x", "status": 200, "shadow": False,
            "fallback": False}  # fmt: skip


def test_todays_sqlite_store_migrates_and_prunes_rows(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'events.db'}")  # today's create_all path
    with engine.begin() as conn:
        conn.execute(exposures.insert(), [row(NOW - 100 * 86400, "old"), row(NOW, "new")])
        conn.execute(outcomes.insert(), [{"ts": NOW - 100 * 86400, "metric": "m", "value": 1}])
        conn.execute(event_batches.insert(), [{"batch_id": "old", "ts": NOW - 100 * 86400},
                                              {"batch_id": "new", "ts": NOW}])  # fmt: skip
    assert current(engine) is None
    assert migrate(engine) == (None, head())
    assert migrate(engine) == (head(), head())
    pruned = prune(engine, 90 * 86400, now=NOW)
    assert pruned.rows == {"exposures": 1, "outcomes": 1} and pruned.dropped == []
    with engine.connect() as conn:
        assert conn.execute(sa.select(exposures.c.request_id)).scalars().all() == ["new"]
        assert conn.execute(sa.select(event_batches.c.batch_id)).scalars().all() == ["new"]


def test_a_store_with_the_old_exposure_indexes_migrates_to_the_new_ones(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'events.db'}"
    with sa.create_engine(url).begin() as conn:  # as the baseline (0001) indexed exposures
        conn.execute(sa.text("CREATE TABLE exposures (id INTEGER PRIMARY KEY, ts FLOAT NOT NULL, "
                             "request_id VARCHAR(64) NOT NULL, flag VARCHAR(200) NOT NULL, "
                             "user_id VARCHAR(200))"))  # fmt: skip
        for column in ("ts", "request_id", "flag", "user_id"):
            conn.execute(sa.text(f"CREATE INDEX ix_exposures_{column} ON exposures ({column})"))
    engine = create_engine(url)
    assert migrate(engine) == (None, head())
    found = {ix["name"]: ix["column_names"] for ix in sa.inspect(engine).get_indexes("exposures")}
    assert found == {
        "ix_exposures_flag_ts": ["flag", "ts"],
        "ix_exposures_request_id": ["request_id"],
        "ix_exposures_user_id": ["user_id"],
    }  # no index on event_id since 0006: replay finds stored exposures through (flag, ts)
