"""Every attack on the selector's HTTP API from issue 14, through the API (bentos faked).

Unauthenticated and wrong-scope writes, keys revoked or added while the app runs, outcomes for
users or requests never served, NaN/Infinity, huge and deeply nested bodies, values longer than
the store's columns, and a 405 that names what is allowed.
"""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from unit.test_api import EU_ENTERPRISE, RECORD, FakeForwarder, stored

from service.api_keys import digest
from service.cli import main
from service.serving.app import create_app
from service.serving.keys import KeyFile
from service.store.events import outcomes

PREDICT = "/v1/models/churn-model/predict"


def make_app(settings, **overrides):
    app = create_app(
        {
            **settings.__dict__,
            "bento_urls": "churn:v1=http://v1,churn:v2=http://v2",
            **overrides,
        }
    )
    app.extensions["selector"].forwarder = FakeForwarder()
    app.extensions["outcome_check"].grace = 0  # one process: nothing is on its way
    return app


@pytest.fixture
def app(settings):
    app = make_app(settings)
    yield app
    app.extensions["selector"].close()


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def served_request(client, headers=None) -> str:
    reply = client.post(
        PREDICT, json={"context": EU_ENTERPRISE, "inputs": [RECORD]}, headers=headers
    )
    assert reply.status_code == 200, reply.json
    return reply.json["request_id"]


def create_key(settings, name: str, scopes: str) -> str:
    env = {"ROLLOUT_API_KEYS_FILE": str(settings.keys_file)}
    result = CliRunner().invoke(main, ["keys", "create", name, "--scopes", scopes], env=env)
    assert result.exit_code == 0, result.output
    return result.stdout.strip().splitlines()[-1]  # the key alone on the last line


def test_keys_cli_stores_only_hashes_and_lists_and_revokes(settings) -> None:
    key = create_key(settings, "sim", "outcomes,predict")
    text = settings.keys_file.read_text()
    assert key not in text and digest(key) in text
    assert oct(settings.keys_file.stat().st_mode & 0o777) == "0o600"
    env = {"ROLLOUT_API_KEYS_FILE": str(settings.keys_file)}
    listed = CliRunner().invoke(main, ["keys", "list", "--json"], env=env)
    assert json.loads(listed.stdout)[0]["scopes"] == ["outcomes", "predict"]
    assert key not in listed.stdout and digest(key) not in listed.stdout
    again = CliRunner().invoke(main, ["keys", "create", "sim"], env=env)
    assert again.exit_code == 1 and "exists" in again.output
    revoked = CliRunner().invoke(main, ["keys", "revoke", "sim"], env=env)
    assert revoked.exit_code == 0 and KeyFile(settings.keys_file).keys() == []


def test_outcomes_need_a_key_of_scope_outcomes_once_any_key_exists(settings, app) -> None:
    client = app.test_client()
    request_id = served_request(client)
    outcome = {"metric": "retained", "value": 1, "request_id": request_id}
    predict_only = create_key(settings, "reader", "predict")  # picked up without a restart
    writer = create_key(settings, "writer", "outcomes")
    missing = client.post("/v1/outcomes", json=outcome)
    unknown = client.post("/v1/outcomes", json=outcome, headers=bearer("rk_made-up"))
    wrong = client.post("/v1/outcomes", json=outcome, headers=bearer(predict_only))
    assert (missing.status_code, unknown.status_code, wrong.status_code) == (401, 401, 403)
    assert missing.headers["WWW-Authenticate"].startswith("Bearer")
    assert "rk_made-up" not in unknown.get_data(as_text=True)
    assert "scope outcomes" in wrong.json["error"]["message"]
    assert client.post("/v1/outcomes", json=outcome, headers=bearer(writer)).status_code == 202
    KeyFile(settings.keys_file).revoke("writer")  # revoked: refused from the next call on
    assert client.post("/v1/outcomes", json=outcome, headers=bearer(writer)).status_code == 401
    assert len(stored(app, outcomes)) == 1


def test_require_keys_predict_guards_predict_and_resolve_not_health(settings) -> None:
    key = create_key(settings, "app", "predict")
    app = make_app(settings, require_keys="predict", protect_metrics=True)
    try:
        client = app.test_client()
        assert client.post(PREDICT, json={"context": {}, "inputs": []}).status_code == 401
        assert client.get("/v1/models/churn-model/resolve?userId=u1").status_code == 401
        assert client.get("/metrics").status_code == 401
        served_request(client, bearer(key))
        resolved = client.get("/v1/models/churn-model/resolve?userId=u1", headers=bearer(key))
        assert resolved.status_code == 200
        assert client.get("/metrics", headers=bearer(key)).status_code == 403  # no metrics scope
        assert client.get("/healthz").status_code == 200
        assert client.get("/readyz").status_code == 200
    finally:
        app.extensions["selector"].close()


def test_a_broken_keys_file_refuses_instead_of_opening_up(settings, app) -> None:
    settings.keys_file.parent.mkdir(parents=True, exist_ok=True)
    settings.keys_file.write_text("{not json")
    reply = app.test_client().post("/v1/outcomes", json={"metric": "m", "value": 1})
    assert reply.status_code == 503 and reply.json["error"]["code"] == "keys_unavailable"


@pytest.mark.parametrize(
    ("outcome", "words"),
    [
        pytest.param({"request_id": "made-up"}, "request_id 'made-up'", id="unknown-request"),
        pytest.param(
            {"user_id": "never-seen", "flag": "churn-model"}, "user 'never-seen'", id="unknown-user"
        ),
        pytest.param({"user_id": "u1", "flag": "other-flag"}, "user 'u1'", id="user-other-flag"),
    ],
)
def test_outcomes_for_exposures_never_served_are_refused(app, outcome, words) -> None:
    client = app.test_client()
    real = served_request(client)  # u1 was exposed in churn-model
    batch = [
        {"metric": "retained", "value": 1, "request_id": real},
        {"metric": "retained", "value": 0, **outcome},
    ]
    reply = client.post("/v1/outcomes", json=batch)
    assert reply.status_code == 422, reply.json
    assert reply.json["error"]["code"] == "unknown_exposure"
    assert (
        "outcomes[1]" in reply.json["error"]["message"] and words in reply.json["error"]["message"]
    )
    assert stored(app, outcomes) == []  # all or nothing


def test_a_request_id_of_another_flag_is_refused(app) -> None:
    client = app.test_client()
    real = served_request(client)
    reply = client.post(
        "/v1/outcomes", json={"metric": "m", "value": 1, "request_id": real, "flag": "x"}
    )
    assert reply.status_code == 422


DEEP = "[" * 3000 + "]" * 3000


@pytest.mark.parametrize(
    ("path", "body", "words"),
    [
        pytest.param(
            "/v1/outcomes",
            '{"metric": "m", "value": NaN, "request_id": "r"}',
            "'value' must be a finite",
            id="nan-outcome",
        ),
        pytest.param(
            "/v1/outcomes",
            '{"metric": "m", "value": Infinity, "request_id": "r"}',
            "'value' must be a finite",
            id="infinity-outcome",
        ),
        pytest.param(
            "/v1/outcomes",
            '{"metric": "m", "value": 1, "ts": -Infinity, "request_id": "r"}',
            "'ts' must be a finite",
            id="infinite-ts",
        ),
        pytest.param(
            "/v1/outcomes",
            '{"metric": "m", "value": 1' + "0" * 400 + ', "request_id": "r"}',
            "out of range",
            id="huge-number",
        ),
        pytest.param(
            PREDICT,
            '{"context": {}, "inputs": [{"tenure_months": NaN}]}',
            "'inputs[0].tenure_months' must be a finite",
            id="nan-input",
        ),
        pytest.param(PREDICT, DEEP, "nests deeper than 32", id="deep-array"),
        pytest.param(
            PREDICT,
            '{"context": {}, "inputs": ' + DEEP + "}",
            "nests deeper than 32",
            id="deep-inputs",
        ),
        pytest.param(PREDICT, '{"a":' * 5000 + "1" + "}" * 5000, "nests deeper", id="deep-objects"),
        pytest.param(
            PREDICT,
            json.dumps({"context": {"userId": "u" * 1000}, "inputs": []}),
            "context.userId' is longer than 200",
            id="long-user-id",
        ),
        pytest.param(
            PREDICT,
            json.dumps({"context": {"properties": {"segment": "s" * 101}}, "inputs": []}),
            "context.properties.segment' is longer than 100",
            id="long-segment",
        ),
        pytest.param(
            PREDICT,
            json.dumps({"context": {"properties": {"k" * 65: "v"}}, "inputs": []}),
            "(its name)",
            id="long-property-name",
        ),
        pytest.param(
            PREDICT,
            json.dumps(
                {"context": {"properties": {f"p{i}": "v" for i in range(33)}}, "inputs": []}
            ),
            "at most 32",
            id="too-many-properties",
        ),
        pytest.param(
            "/v1/outcomes",
            json.dumps({"metric": "m" * 201, "value": 1, "request_id": "r"}),
            "metric' is longer than 200",
            id="long-metric",
        ),
        pytest.param(
            "/v1/outcomes",
            json.dumps({"metric": "m", "value": 1, "request_id": "r" * 65}),
            "request_id' is longer than 64",
            id="long-request-id",
        ),
        pytest.param(
            "/v1/outcomes",
            json.dumps({"metric": "m", "value": 1, "user_id": "u" * 201, "flag": "f"}),
            "user_id' is longer than 200",
            id="long-user-outcome",
        ),
        pytest.param(
            "/v1/outcomes",
            json.dumps({"metric": "m", "value": 1, "request_id": "r", "ts": 4e9}),
            "not in the future",
            id="future-ts",
        ),
    ],
)
def test_unbounded_or_non_finite_input_is_a_400_naming_the_field(app, path, body, words) -> None:
    reply = app.test_client().post(path, data=body, content_type="application/json")
    assert reply.status_code == 400, reply.get_data(as_text=True)[:300]
    assert words in reply.json["error"]["message"]


def test_long_query_values_are_refused_on_resolve(app) -> None:
    reply = app.test_client().get("/v1/models/churn-model/resolve?userId=" + "u" * 201)
    assert reply.status_code == 400 and "query.userId" in reply.json["error"]["message"]


def test_a_405_names_the_allowed_methods(app) -> None:
    reply = app.test_client().get("/v1/outcomes")
    assert reply.status_code == 405
    assert "POST" in reply.headers["Allow"]
    assert reply.json["error"]["code"] == "method_not_allowed"
