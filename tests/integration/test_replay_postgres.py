"""Each exposure stored once on a real PostgreSQL without a unique event_id index: the checks of
tests/unit/test_replay_exact.py on a migrated (partitioned) store, and migration 0006 on a
partitioned store at 0005 with data. A fresh database per test, dropped after."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from unit.test_replay_exact import CHECKS, check_a_store_at_0005_with_data_migrates

from service.harness.unleash_server import PostgresServer
from service.store.events import create_engine
from service.store.retention import is_partitioned
from service.store.schema import migrate

pytestmark = pytest.mark.integration


@pytest.fixture
def postgres_url() -> Iterator[str]:
    server = PostgresServer.from_env()
    name = f"rollout_replay_{secrets.token_hex(4)}"
    server.create_database(name)
    yield server.url(name).replace("postgres://", "postgresql+psycopg://", 1)
    server.drop_database(name)


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__.removeprefix("check_"))
def test_on_postgres(check, postgres_url: str, tmp_path: Path) -> None:
    engine = sa.create_engine(postgres_url)
    migrate(engine)  # partitioned by month, as served
    engine = create_engine(postgres_url)
    with engine.connect() as conn:
        assert is_partitioned(conn, "exposures")
    check(engine, tmp_path)
    engine.dispose()


def test_a_partitioned_store_at_0005_with_data_migrates(postgres_url: str, tmp_path: Path) -> None:
    engine = sa.create_engine(postgres_url)
    check_a_store_at_0005_with_data_migrates(engine, tmp_path)
    with engine.connect() as conn:
        assert is_partitioned(conn, "exposures")
        left = conn.execute(
            sa.text(
                "SELECT indexname FROM pg_indexes "
                "WHERE tablename LIKE 'exposures%' AND indexdef LIKE '%event_id%'"
            )
        ).scalars()
        assert list(left) == []  # no partition kept its copy
    engine.dispose()
