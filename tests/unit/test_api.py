"""The selector's HTTP API with the bento transport faked (unit scope) and a real event store."""

from __future__ import annotations

import json
from typing import Any

import pytest
import sqlalchemy as sa

from service.errors import InputRejected
from service.serving.app import create_app
from service.serving.forwarding import BentoCallFailed, BentoReply
from service.store.events import exposures, outcomes

EU_ENTERPRISE = {"userId": "u1", "properties": {"region": "eu", "segment": "enterprise"}}
RECORD = {
    "tenure_months": 3,
    "monthly_spend": 42.5,
    "support_tickets": 1,
    "days_since_last_login": 2,
    "sessions_per_week": 3.0,
    "region": "eu",
    "segment": "enterprise",
}


class FakeForwarder:
    """Stands in for the HTTP pool: answers per bento URL, or fails as told."""

    def __init__(self) -> None:
        self.down: set[str] = set()
        self.reject = False
        self.calls: list[str] = []

    def predict(self, base_url: str, inputs: Any, request_id: str) -> BentoReply:
        self.calls.append(base_url)
        if self.reject:
            raise InputRejected("the model rejected the inputs: tenure_months: must be >= 0")
        if base_url in self.down:
            raise BentoCallFailed(f"{base_url}: connection refused")
        return BentoReply(
            {"predictions": [{"churn_probability": 0.7, "offer": True}], "bento": base_url}, 1.0
        )

    def answers(self, base_url: str) -> bool:
        return base_url not in self.down

    def close(self) -> None:
        pass


@pytest.fixture
def app(settings):
    app = create_app({**settings.__dict__, "bento_urls": "churn:v1=http://v1,churn:v2=http://v2"})
    app.extensions["selector"].forwarder = FakeForwarder()
    yield app
    app.extensions["selector"].close()


@pytest.fixture
def client(app):
    return app.test_client()


def stored(app, table: sa.Table) -> list[dict]:
    selector = app.extensions["selector"]
    selector.events.flush()
    with selector.events.engine.connect() as conn:
        return [dict(row._mapping) for row in conn.execute(sa.select(table))]


def predict(client, body: Any = None, **kwargs: Any):
    if body is None:
        body = {"context": EU_ENTERPRISE, "inputs": [RECORD]}
    return client.post("/v1/models/churn-model/predict", json=body, **kwargs)


def test_predict_returns_prediction_bento_variant_and_reason(app, client) -> None:
    response = predict(client, headers={"X-Request-ID": "req-1"})
    assert response.status_code == 200
    body = response.json
    assert (body["bento"], body["variant"], body["reason"]) == (
        "churn:v2",
        "canary",
        "strategy_variant",
    )
    assert body["prediction"]["predictions"][0]["churn_probability"] == 0.7
    assert body["request_id"] == "req-1" and body["fallback"] is False
    [row] = stored(app, exposures)
    assert (row["request_id"], row["variant"], row["bento"], row["status"]) == (
        "req-1",
        "canary",
        "churn:v2",
        200,
    )
    assert (row["region"], row["segment"], row["prediction"]) == ("eu", "enterprise", 0.7)
    assert row["inputs"] == [RECORD]


def test_a_failing_bento_is_served_by_the_default_in_the_same_call(app, client) -> None:
    app.extensions["selector"].forwarder.down.add("http://v2")
    body = predict(client).json
    assert (body["bento"], body["reason"], body["fallback"]) == (
        "churn:v1",
        "fallback_after_error",
        True,
    )
    [row] = stored(app, exposures)
    assert row["fallback"] and row["variant"] == "canary" and "connection refused" in row["error"]


def test_no_bento_can_serve_gives_503_and_logs_it(app, client) -> None:
    app.extensions["selector"].forwarder.down.update({"http://v1", "http://v2"})
    response = predict(client)
    assert response.status_code == 503
    assert response.json["error"]["code"] == "bento_unavailable"
    assert "churn:v1" in response.json["error"]["message"]
    assert [r["status"] for r in stored(app, exposures)] == [503]


def test_inputs_the_model_rejects_are_a_422_not_a_fallback(app, client) -> None:
    app.extensions["selector"].forwarder.reject = True
    response = predict(client)
    assert response.status_code == 422
    assert "tenure_months" in response.json["error"]["message"]
    assert app.extensions["selector"].forwarder.calls == ["http://v2"]
    assert [r["status"] for r in stored(app, exposures)] == [422]


@pytest.mark.parametrize(
    ("kwargs", "status", "words"),
    [
        pytest.param(
            {"data": "{nope", "content_type": "application/json"},
            400,
            "not valid JSON",
            id="malformed-json",
        ),
        pytest.param(
            {"data": "x", "content_type": "text/plain"},
            415,
            "application/json",
            id="wrong-content-type",
        ),
        pytest.param({"json": {"inputs": []}}, 400, "'context' is required", id="no-context"),
        pytest.param(
            {"json": {"context": {"userId": "u"}}}, 400, "'inputs' is required", id="no-inputs"
        ),
        pytest.param(
            {"json": {"context": "u1", "inputs": []}},
            400,
            "'context' must be an object",
            id="context-not-object",
        ),
        pytest.param(
            {"json": {"context": {"userId": {"a": 1}}, "inputs": []}},
            400,
            "context.userId",
            id="context-field-wrong-type",
        ),
        pytest.param(
            {"json": {"context": {"properties": []}, "inputs": []}},
            400,
            "context.properties",
            id="properties-not-object",
        ),
        pytest.param({"json": [1, 2]}, 400, "JSON object", id="body-not-object"),
        pytest.param(
            {"data": "[" + "1," * 600_000 + "1]", "content_type": "application/json"},
            413,
            "larger than",
            id="oversized-body",
        ),
    ],
)
def test_caller_mistakes_are_4xx_json_errors_and_log_nothing(
    app, client, kwargs, status, words
) -> None:
    response = client.post("/v1/models/churn-model/predict", **kwargs)
    assert response.status_code == status
    assert words in response.json["error"]["message"]
    assert stored(app, exposures) == []


def test_unknown_flag_is_404(client) -> None:
    response = client.post("/v1/models/nope/predict", json={"context": {}, "inputs": []})
    assert response.status_code == 404
    assert response.json["error"] == {"code": "unknown_flag", "message": "unknown flag 'nope'"}


def test_resolve_maps_query_parameters_to_the_unleash_context(client) -> None:
    body = client.get(
        "/v1/models/churn-model/resolve?userId=u1&region=eu&properties[segment]=enterprise"
    ).json
    assert (body["variant"], body["bento"]) == ("canary", "churn:v2")


def test_outcomes_one_or_a_batch(app, client) -> None:
    for request_id in ("r1", "r2"):  # outcomes must join exposures the selector served
        assert predict(client, headers={"X-Request-ID": request_id}).status_code == 200
    one = client.post(
        "/v1/outcomes",
        json={"metric": "retained", "value": True, "user_id": "u1", "flag": "churn-model"},
    )
    batch = client.post(
        "/v1/outcomes",
        json={
            "outcomes": [
                {"metric": "retained", "value": 0, "request_id": "r1", "flag": "churn-model"},
                {"metric": "retained", "value": 1, "request_id": "r2"},
            ]
        },
    )
    assert (one.status_code, one.json) == (202, {"accepted": 1})
    assert (batch.status_code, batch.json) == (202, {"accepted": 2})
    rows = stored(app, outcomes)
    assert sorted((r["request_id"] or r["user_id"], r["value"]) for r in rows) == [
        ("r1", 0.0),
        ("r2", 1.0),
        ("u1", 1.0),
    ]


@pytest.mark.parametrize(
    ("body", "words"),
    [
        pytest.param({"value": 1, "request_id": "r"}, "outcomes[0].metric", id="no-metric"),
        pytest.param(
            {"metric": "m", "value": "yes", "request_id": "r"},
            "outcomes[0].value",
            id="value-not-number",
        ),
        pytest.param(
            {"metric": "m", "value": 1}, "request_id, or user_id and flag", id="no-join-key"
        ),
        pytest.param(
            {"metric": "m", "value": 1, "user_id": "u"}, "user_id and flag", id="user-no-flag"
        ),
        pytest.param(
            [{"metric": "m", "value": 1, "request_id": "r"}, {"metric": "m"}],
            "outcomes[1].value",
            id="second-item-bad",
        ),
        pytest.param([], "non-empty", id="empty-batch"),
    ],
)
def test_a_bad_outcome_rejects_the_whole_batch(app, client, body, words) -> None:
    response = client.post("/v1/outcomes", json=body)
    assert response.status_code == 400
    assert words in response.json["error"]["message"]
    assert stored(app, outcomes) == []


def test_health_and_readiness(client) -> None:
    assert client.get("/healthz").json == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json["flags"] == ["churn-model"] and ready.json["mode"] == "embedded"


def test_not_ready_without_any_bento(settings) -> None:
    app = create_app({**settings.__dict__, "bento_urls": ""})
    try:
        assert app.test_client().get("/readyz").status_code == 503
    finally:
        app.extensions["selector"].close()


def test_not_ready_while_no_bento_answers(app, client) -> None:
    app.extensions["selector"].forwarder.down.update({"http://v1", "http://v2"})
    answer = client.get("/readyz")
    assert answer.status_code == 503 and answer.json["answering_bento"] is None
    app.extensions["selector"].forwarder.down.discard("http://v2")
    answer = client.get("/readyz")
    assert answer.status_code == 200 and answer.json["answering_bento"] == "churn:v2"


def test_inputs_outside_the_family_schema_are_a_422_before_any_bento_is_called(app, client) -> None:
    response = predict(client, {"context": EU_ENTERPRISE, "inputs": [{**RECORD, "region": "x"}]})
    assert response.status_code == 422
    assert "inputs[0].region" in response.json["error"]["message"]
    assert app.extensions["selector"].forwarder.calls == []
    assert [r["status"] for r in stored(app, exposures)] == [422]


def test_an_open_circuit_sends_the_chosen_bentos_traffic_to_the_default(app, client) -> None:
    selector = app.extensions["selector"]
    selector.forwarder.down.add("http://v2")
    threshold = selector.settings.circuit_failures
    for _ in range(threshold + 3):
        response = predict(client)
        assert (response.status_code, response.json["bento"]) == (200, "churn:v1")
    # Only the failures that opened the circuit reached the dead bento.
    assert selector.forwarder.calls.count("http://v2") == threshold
    assert "circuit breaker is open" in response.json["detail"]
    bentos = client.get("/readyz").json["bentos"]
    assert (bentos["churn:v2"]["circuit"], bentos["churn:v1"]["circuit"]) == ("open", "closed")


def test_metrics_are_prometheus_text_per_flag_variant_and_bento(app, client) -> None:
    predict(client)
    app.extensions["selector"].forwarder.down.add("http://v2")
    predict(client)
    response = client.get("/metrics")
    assert response.status_code == 200 and response.mimetype == "text/plain"
    text = response.get_data(as_text=True)
    for line in (
        'selector_requests_total{bento="churn:v2",flag="churn-model",status="200",'
        'variant="canary"} 1.0',
        'selector_fallbacks_total{bento="churn:v1",failed_bento="churn:v2",'
        'flag="churn-model",variant="canary"} 1.0',
        'selector_circuit_state{bento="churn:v2"} 0.0',
        'selector_routing_decisions_total{flag="churn-model",reason="strategy_variant"} 2.0',
        "selector_event_queue_depth ",
        'selector_request_latency_seconds_bucket{bento="churn:v2",flag="churn-model",le="0.001"',
    ):
        assert line in text, line


def test_openapi_document_names_every_route(client) -> None:
    document = client.get("/openapi.json").json
    assert document["openapi"].startswith("3.1")
    assert set(document["paths"]) == {
        "/v1/models/{flag}/predict",
        "/v1/models/{flag}/resolve",
        "/v1/outcomes",
        "/healthz",
        "/readyz",
        "/metrics",
        "/openapi.json",
    }
    schemas = document["components"]["schemas"]
    assert schemas["FlagName"]["enum"] == ["churn-model"]
    assert "tenure_months" in json.dumps(schemas["PredictRequest"]["properties"]["inputs"])
