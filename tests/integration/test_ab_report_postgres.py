"""The report's SQL on a real PostgreSQL 15: the same checks as on SQLite (tests/unit)."""

from __future__ import annotations

import importlib.util
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from service.errors import ConfigError
from service.harness.unleash_server import PostgresServer
from service.store.events import create_engine

pytestmark = pytest.mark.integration


def _unit_checks():
    # tests/ is not a package; load the SQLite unit test module by path to share its checks.
    path = Path(__file__).parents[1] / "unit" / "test_analysis_metrics.py"
    spec = importlib.util.spec_from_file_location("analysis_checks", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


CHECKS = _unit_checks()


@pytest.fixture
def pg_engine() -> Iterator[sa.Engine]:
    server, name = PostgresServer.from_env(), f"reports_{uuid.uuid4().hex[:10]}"
    try:
        server.create_database(name)
    except ConfigError as exc:
        pytest.fail(f"{exc}; start it with `pg_ctlcluster 15 main start`", pytrace=False)
    engine = create_engine(server.url(name).replace("postgres://", "postgresql+psycopg://", 1))
    try:
        yield engine
    finally:
        engine.dispose()
        server.drop_database(name)


@pytest.mark.parametrize(
    "check",
    [
        CHECKS.check_metric_moments,
        CHECKS.check_guardrail_moments,
        CHECKS.check_summary_matches_the_queries,
    ],
)
def test_aggregation_on_postgresql(pg_engine, check):
    check(pg_engine)
