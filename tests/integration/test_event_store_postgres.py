"""The event store on PostgreSQL: the selector logs there when given a database URL, and the
report's SQL aggregation reads it back. A fresh database per test, dropped afterwards."""

from __future__ import annotations

import json
import secrets

import pytest
import sqlalchemy as sa

from service.analysis.queries import ab_sample
from service.harness.unleash_server import PostgresServer
from service.registry import population as pop
from service.serving.app import create_app
from service.store.events import create_engine, exposures, outcomes

pytestmark = pytest.mark.integration


@pytest.fixture
def postgres_url():
    server = PostgresServer.from_env()
    name = f"rollout_events_{secrets.token_hex(4)}"
    server.create_database(name)
    url = server.url(name).replace("postgres://", "postgresql+psycopg://", 1)
    yield url
    server.drop_database(name)


def test_the_selector_logs_to_postgresql_and_the_report_reads_it(
    settings, bento_urls, postgres_url
) -> None:
    app = create_app({**settings.__dict__, "database_url": postgres_url, "bento_urls": bento_urls})
    client = app.test_client()
    users = pop.population(120)
    for user in users:
        context = {
            "userId": user.user_id,
            "properties": {"region": user.region, "segment": user.segment},
        }
        reply = client.post(
            "/v1/models/churn-model/predict", json={"context": context, "inputs": [user.features()]}
        )
        assert reply.status_code == 200, reply.json
        outcome = {"metric": "retained", "value": 1, "request_id": reply.json["request_id"]}
        assert client.post("/v1/outcomes", json=outcome).status_code == 202
    app.extensions["selector"].close()  # graceful: writes everything buffered

    engine = create_engine(postgres_url)
    with engine.connect() as conn:
        logged = conn.execute(sa.select(exposures.c.variant, exposures.c.inputs)).all()
        assert conn.execute(sa.select(sa.func.count()).select_from(outcomes)).scalar() == 120
    assert len(logged) == 120
    as_text = sorted(json.dumps(inputs, sort_keys=True) for _, inputs in logged)
    assert as_text == sorted(json.dumps([u.features()], sort_keys=True) for u in users)
    sample = ab_sample(engine, flag="churn-model", arms=["control", "treatment"], metric="retained")
    expected = sum(1 for variant, _ in logged if variant in ("control", "treatment"))
    assert sum(arm.users for arm in sample.arms.values()) == expected > 0
    assert all(arm.conversions == arm.users for arm in sample.arms.values())
