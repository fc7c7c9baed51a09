"""The event writer on a real PostgreSQL: binary COPY stores exactly what SQLite stores, refuses
(dead-letters) what a column cannot hold instead of storing it wrong, and migrations 0005 and
0006 leave exposures with the indexes their readers look up. A fresh database per test, dropped
after."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from service.harness.unleash_server import PostgresServer
from service.store.events import Exposure, Outcome, create_engine, exposures, outcomes
from service.store.schema import migrate
from service.store.writer import EventWriter

pytestmark = pytest.mark.integration


@pytest.fixture
def postgres_url() -> Iterator[str]:
    server = PostgresServer.from_env()
    name = f"rollout_writer_{secrets.token_hex(4)}"
    server.create_database(name)
    yield server.url(name).replace("postgres://", "postgresql+psycopg://", 1)
    server.drop_database(name)


def exposure(request_id: str, **fields: Any) -> Exposure:
    base: dict[str, Any] = {
        "flag": "churn-model",
        "environment": "development",
        "variant": "control",
        "bento": "churn:v1",
        "reason": "strategy_variant",
        "status": 200,
    }
    return Exposure(request_id=request_id, **{**base, **fields})


# Values that each take a different path through the row maker and the binary format.
VARIED = [
    exposure("plain", user_id="u1"),
    exposure(
        "full",
        user_id="ü-ß-用户",
        session_id="s\t1\n",  # what text COPY would have to escape
        region="eu",
        segment="smb",
        properties={"region": "eu", "note": 'quote " and \\ backslash'},
        latency_ms=3.25,
        prediction=0.125,
        inputs=[{"tenure_months": 3, "monthly_spend": 28.5, "big": 2**70, 1: "int key"}],
        shadow=True,
        fallback=True,
        error="boom",
        ts=1_793_577_600.123456,
    ),
    exposure("empty-json", properties={}, inputs=None, status=503, latency_ms=0),
]


def stored(engine: sa.Engine) -> list[dict[str, Any]]:
    columns = [c for c in exposures.columns if c.name != "id"]
    with engine.connect() as conn:
        rows = conn.execute(sa.select(*columns).order_by(exposures.c.request_id)).mappings()
        return [dict(row) for row in rows]


def write(url: str, events: list[Exposure | Outcome], dead_letter: Path) -> EventWriter:
    writer = EventWriter(create_engine(url), dead_letter=dead_letter)
    for event in events:
        writer.record(event)
    writer.close()
    return writer


def test_binary_copy_stores_what_sqlite_stores(postgres_url: str, tmp_path: Path) -> None:
    sqlite_url = f"sqlite:///{tmp_path / 'e.db'}"
    results = [Outcome(metric="retained", value=1, request_id="plain", user_id="u1")]
    for url in (postgres_url, sqlite_url):
        writer = write(url, [*VARIED, *results], tmp_path / "dead.jsonl")
        assert writer.written == 4 and writer.dead_lettered == 0
    on_postgres, on_sqlite = stored(create_engine(postgres_url)), stored(create_engine(sqlite_url))
    assert on_postgres == on_sqlite
    full = next(row for row in on_postgres if row["request_id"] == "full")
    assert full["user_id"] == "ü-ß-用户" and full["session_id"] == "s\t1\n"
    assert full["properties"] == VARIED[1].properties
    assert full["inputs"] == json.loads(json.dumps(VARIED[1].inputs))  # int keys become text
    assert (full["shadow"], full["fallback"], full["ts"]) == (True, True, 1_793_577_600.123456)
    empty = next(row for row in on_postgres if row["request_id"] == "empty-json")
    assert (empty["properties"], empty["inputs"], empty["status"]) == ({}, None, 503)
    with create_engine(postgres_url).connect() as conn:
        assert conn.execute(sa.select(outcomes.c.value, outcomes.c.user_id)).one() == (1.0, "u1")


def test_a_value_its_column_cannot_hold_is_dead_lettered_not_stored_wrong(
    postgres_url: str, tmp_path: Path
) -> None:
    # The binary int4 format would silently wrap 2**40 to 0; text COPY refused it, so must we.
    wrapped = exposure("too-big", status=2**40)
    not_a_number = exposure("not-a-number", prediction="high")  # type: ignore[arg-type]
    dead_letter = tmp_path / "dead.jsonl"
    writer = write(postgres_url, [VARIED[0], wrapped, not_a_number, VARIED[2]], dead_letter)
    assert writer.written == 2 and writer.dead_lettered == 2
    assert [row["request_id"] for row in stored(create_engine(postgres_url))] == [
        "empty-json",
        "plain",
    ]
    dead = sorted(json.loads(line)["request_id"] for line in dead_letter.open())
    assert dead == ["not-a-number", "too-big"]


def indexes(engine: sa.Engine) -> dict[str, str]:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'exposures'")
        )
        return {row.indexname: row.indexdef for row in rows}


def test_migrated_exposures_keep_the_indexes_their_readers_use(
    postgres_url: str, tmp_path: Path
) -> None:
    engine = sa.create_engine(postgres_url)
    migrate(engine)  # an empty database: 0001 makes the old single-column indexes, 0005 these
    found = indexes(engine)
    assert "ix_exposures_ts" not in found and "ix_exposures_flag" not in found
    assert "(flag, ts)" in found["ix_exposures_flag_ts"]
    assert "USING hash (request_id)" in found["ix_exposures_request_id"]
    assert "USING hash (user_id)" in found["ix_exposures_user_id"]
    assert not any("event_id" in definition for definition in found.values())  # 0006
    # The outcome check's look-ups (request ids, users, in lists) can use the hash indexes.
    with engine.connect() as conn:
        conn.exec_driver_sql("SET enable_seqscan = off")
        for column in ("request_id", "user_id"):
            plan = conn.exec_driver_sql(
                f"EXPLAIN SELECT flag FROM exposures WHERE {column} IN ('a', 'b', 'c')"
            ).scalars()
            # (on each monthly partition: its copy of the index is named after the partition)
            assert f"Index Cond: (({column})::text = ANY" in "\n".join(plan)
    # The service's start-up adds nothing back, and binary COPY routes rows into the partitions.
    writer = write(postgres_url, VARIED, tmp_path / "dead.jsonl")
    assert writer.written == len(VARIED) and indexes(engine) == found
    assert [row["request_id"] for row in stored(engine)] == ["empty-json", "full", "plain"]
