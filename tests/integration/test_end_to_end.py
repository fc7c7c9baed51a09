"""End to end through real processes: `bentoml serve` per bento, `rollout serve` (granian)
on the embedded flags in flags/, HTTP in front. Nothing here is mocked."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sqlalchemy as sa
import urllib3

from service.harness.simulate import simulate
from service.processes import ManagedProcess, free_port, selector_process
from service.registry import population as pop
from service.store.events import exposures, outcomes

pytestmark = pytest.mark.integration

EU_ENTERPRISE = {"userId": "u-eu", "properties": {"region": "eu", "segment": "enterprise"}}
http = urllib3.PoolManager(timeout=urllib3.Timeout(total=10), retries=False)


def post(url: str, body: object) -> tuple[int, dict]:
    response = http.request(
        "POST", url, body=json.dumps(body), headers={"Content-Type": "application/json"}
    )
    return response.status, json.loads(response.data)


def start_selector(tmp_path: Path, bento_urls: str) -> ManagedProcess:
    port = free_port()
    env = {
        "ROLLOUT_DATA_DIR": str(tmp_path / "data"),
        "ROLLOUT_BENTO_URLS": bento_urls,
        "UNLEASH_URL": "",
        "ROLLOUT_UNLEASH_URL": "",
    }
    selector = selector_process(port, tmp_path / "selector.log", env).start()
    selector.wait_ready(60)
    return selector


def selector_url(selector: ManagedProcess) -> str:
    return selector.ready_url.removesuffix("/readyz")


@pytest.fixture
def selector(tmp_path, bento_urls):
    process = start_selector(tmp_path, bento_urls)
    yield process
    process.stop()


def rows(tmp_path: Path, table: sa.Table) -> list[dict]:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'data' / 'events.db'}")
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(sa.select(table))]


def test_predict_is_forwarded_to_the_bento_the_flag_picks(selector, bento_servers) -> None:
    user = pop.population(1)[0]
    status, body = post(
        f"{selector_url(selector)}/v1/models/churn-model/predict",
        {"context": EU_ENTERPRISE, "inputs": [user.features()]},
    )
    assert status == 200, body
    assert (body["variant"], body["bento"], body["reason"]) == (
        "canary",
        "churn:v2",
        "strategy_variant",
    )
    _, direct = post(f"{bento_servers['churn:v2'].url}/predict", {"inputs": [user.features()]})
    assert body["prediction"] == direct


def test_inputs_the_model_rejects_are_a_422_naming_the_field(selector) -> None:
    features = {**pop.population(1)[0].features(), "tenure_months": -5}
    status, body = post(
        f"{selector_url(selector)}/v1/models/churn-model/predict",
        {"context": EU_ENTERPRISE, "inputs": [features]},
    )
    assert status == 422
    assert "tenure_months" in body["error"]["message"]


def test_simulated_traffic_is_logged_completely_through_a_graceful_stop(
    tmp_path, bento_urls
) -> None:
    selector = start_selector(tmp_path, bento_urls)
    try:
        summary = simulate(
            selector_url(selector), "churn-model", 600, concurrency=8, progress=lambda _: None
        )
    finally:
        assert selector.stop() == 0  # SIGTERM: gunicorn drains, workers flush their events
    assert not summary.errors and summary.outcomes_posted == 600
    assert {"control", "treatment", "default"} <= set(summary.variants)
    logged = rows(tmp_path, exposures)
    assert len(logged) == 600 and all(r["status"] == 200 for r in logged)
    assert len({r["request_id"] for r in logged}) == 600
    assert {r["request_id"] for r in rows(tmp_path, outcomes)} == {r["request_id"] for r in logged}


def test_a_dead_canary_bento_is_replaced_by_the_default(
    tmp_path, built_bentos, bento_servers
) -> None:
    from service.registry.bento_process import BentoProcess

    canary = BentoProcess("churn:v2", settings=built_bentos.settings).start()
    canary.wait_ready(90)
    urls = f"churn:v1={bento_servers['churn:v1'].url},churn:v2={canary.url}"
    selector = start_selector(tmp_path, urls)
    try:
        url = f"{selector_url(selector)}/v1/models/churn-model/predict"
        body = {"context": EU_ENTERPRISE, "inputs": [pop.population(1)[0].features()]}
        assert post(url, body)[1]["bento"] == "churn:v2"
        canary.stop()
        status, reply = post(url, body)
        assert status == 200, reply
        assert (reply["bento"], reply["fallback"], reply["reason"]) == (
            "churn:v1",
            True,
            "fallback_after_error",
        )
        assert reply["variant"] == "canary"
    finally:
        canary.stop()
        selector.stop()
