"""The event store under Alembic on a real PostgreSQL: today's schema upgraded in place,
exposures and outcomes partitioned by month, the A/B numbers unchanged across partitions, and
`rollout events prune --older-than 90d` dropping whole partitions. A fresh database each test.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from click.testing import CliRunner, Result

from service.analysis.queries import ab_sample
from service.cli import main
from service.config import Settings
from service.harness.unleash_server import PostgresServer
from service.store.events import create_engine, exposures, outcomes
from service.store.retention import is_partitioned
from service.store.schema import current, head

pytestmark = pytest.mark.integration

DAY = 86400.0
AGES = (200, 100, 40, 1)  # days: two months that prune removes, two it keeps


@pytest.fixture
def postgres_url() -> Iterator[str]:
    server = PostgresServer.from_env()
    name = f"rollout_migrate_{secrets.token_hex(4)}"
    server.create_database(name)
    yield server.url(name).replace("postgres://", "postgresql+psycopg://", 1)
    server.drop_database(name)


def rollout(settings: Settings, url: str, *args: str) -> Result:
    configured = Settings.load({**settings.__dict__, "database_url": url})
    return CliRunner().invoke(main, list(args), obj={"settings": configured})


def todays_store(url: str) -> sa.Engine:
    """A store as the selector makes it today (create_all), with traffic of several months."""
    engine = create_engine(url)
    now = time.time()
    rows, results = [], []
    for age in AGES:
        for i in range(40):
            arm = "control" if i % 2 else "treatment"
            request = f"r-{age}-{i}"
            rows.append(
                {
                    "ts": now - age * DAY + i,
                    "request_id": request,
                    "flag": "churn-model",
                    "environment": "development",
                    "user_id": f"u-{age}-{i}",
                    "variant": arm,
                    "bento": "churn:v1" if arm == "control" else "churn:v2",
                    "reason": "strategy_variant",
                    "status": 200,
                    "shadow": False,
                    "fallback": False,
                    "inputs": [{"tenure_months": i}],
                }
            )
            if i % 3 == 0:
                results.append(
                    {
                        "ts": now - age * DAY + i + 1,
                        "request_id": request,
                        "metric": "retained",
                        "value": 1.0,
                        "flag": "churn-model",
                        "user_id": f"u-{age}-{i}",
                    }
                )
    with engine.begin() as conn:
        conn.execute(exposures.insert(), rows)
        conn.execute(outcomes.insert(), results)
    return engine


def sample(engine: sa.Engine) -> dict[str, tuple[int, float]]:
    found = ab_sample(engine, flag="churn-model", arms=["control", "treatment"], metric="retained")
    return {name: (arm.users, arm.conversions) for name, arm in found.arms.items()}


def count(engine: sa.Engine, table: sa.Table) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()


def test_todays_store_upgrades_in_place_and_partitions_by_month(
    settings: Settings, postgres_url: str
) -> None:
    engine = todays_store(postgres_url)
    before = sample(engine)
    assert current(engine) is None and before["control"][0] == 80

    result = rollout(settings, postgres_url, "events", "migrate")
    assert result.exit_code == 0, result.output
    assert f"from revision (none) to {head()}" in result.output
    assert current(engine) == head()
    with engine.connect() as conn:
        assert is_partitioned(conn, "exposures") and is_partitioned(conn, "outcomes")
        homes = conn.execute(
            sa.text("SELECT DISTINCT tableoid::regclass::text FROM exposures")
        ).scalars()
        assert len(set(homes)) == len(AGES)  # one monthly partition per age here
    assert count(engine, exposures) == 40 * len(AGES)
    assert sample(engine) == before  # the report reads across the partitions unchanged

    # The selector's start-up path on a migrated store, and a new row: ids carry on.
    engine = create_engine(postgres_url)
    with engine.begin() as conn:
        conn.execute(
            exposures.insert(),
            [
                {
                    "ts": time.time(),
                    "request_id": "new",
                    "flag": "churn-model",
                    "environment": "development",
                    "variant": "control",
                    "reason": "x",
                    "status": 200,
                    "shadow": False,
                    "fallback": False,
                }
            ],
        )
        new_id = conn.execute(sa.select(exposures.c.id).where(exposures.c.request_id == "new"))
        assert new_id.scalar_one() == 40 * len(AGES) + 1

    again = rollout(settings, postgres_url, "events", "migrate")
    assert "nothing to do" in again.output


def test_prune_drops_old_partitions_and_the_report_still_works(
    settings: Settings, postgres_url: str
) -> None:
    engine = todays_store(postgres_url)
    assert rollout(settings, postgres_url, "events", "migrate").exit_code == 0

    result = rollout(settings, postgres_url, "events", "prune", "--older-than", "90d")
    assert result.exit_code == 0, result.output
    assert (
        "exposures: 80 rows" in result.output and "partitions dropped: exposures_y" in result.output
    )
    with engine.connect() as conn:
        oldest = conn.execute(sa.select(sa.func.min(exposures.c.ts))).scalar_one()
    assert oldest > time.time() - 90 * DAY
    assert count(engine, exposures) == 80
    kept = sample(engine)
    assert kept["control"][0] + kept["treatment"][0] == 80
    assert sum(c for _, c in kept.values()) > 0

    bad = rollout(settings, postgres_url, "events", "prune", "--older-than", "ninety days")
    assert bad.exit_code == 1 and "error: --older-than: 'ninety days' is not an age" in bad.output


def test_an_empty_database_gets_the_whole_schema(settings: Settings, postgres_url: str) -> None:
    assert rollout(settings, postgres_url, "events", "migrate").exit_code == 0
    engine = sa.create_engine(postgres_url)
    tables = set(sa.inspect(engine).get_table_names())
    assert {"exposures", "outcomes", "flag_audit", "guard_leases", "alembic_version"} <= tables
    with engine.connect() as conn:
        assert is_partitioned(conn, "exposures")
    engine.dispose()
