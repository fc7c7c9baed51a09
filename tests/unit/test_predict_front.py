"""The predict front (service.serving.api.fast_predict) answers as the Flask route does.

The same requests go once through the front (Content-Type: application/json) and once through
Flask (application/vnd.rollout+json, which Flask reads as JSON and the front leaves to it);
the answers must match, field for field, errors included.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from test_api import EU_ENTERPRISE, RECORD, FakeForwarder

from service.serving.granian_server import whole_bodies

FRONT = "application/json"
FLASK = "application/vnd.rollout+json"
PATH = "/v1/models/churn-model/predict"


@pytest.fixture
def app(settings):
    from service.serving.app import create_app

    app = create_app({**settings.__dict__, "bento_urls": "churn:v1=http://v1,churn:v2=http://v2"})
    app.extensions["selector"].forwarder = FakeForwarder()
    app.extensions["flask_requests"] = []

    @app.before_request
    def count() -> None:  # runs only for requests Flask answers
        app.extensions["flask_requests"].append(1)

    yield app
    app.extensions["selector"].close()


def post(app, body: bytes, content_type: str, **headers: str):
    return app.test_client().post(PATH, data=body, content_type=content_type, headers=headers)


def comparable(response) -> dict[str, Any]:
    answer = response.get_json()
    answer.pop("request_id", None)
    answer.pop("latency_ms", None)
    return {"status": response.status_code, "body": answer}


def test_an_ordinary_predict_skips_flask_and_answers_as_flask_would(app) -> None:
    body = json.dumps({"context": EU_ENTERPRISE, "inputs": [RECORD]}).encode()
    front = post(app, body, FRONT, **{"X-Request-ID": "req-front"})
    assert app.extensions["flask_requests"] == []
    flask = post(app, body, FLASK, **{"X-Request-ID": "req-flask"})
    assert app.extensions["flask_requests"] == [1]
    assert comparable(front) == comparable(flask)
    assert front.status_code == 200 and front.get_json()["request_id"] == "req-front"
    assert front.headers["Content-Type"] == "application/json"
    assert int(front.headers["Content-Length"]) == len(front.data)


@pytest.mark.parametrize(
    "body",
    [
        b"[1, 2]",
        b'{"inputs": []}',
        b'{"context": {"userId": "u1"}}',
        b'{"context": "u1", "inputs": []}',
        b"{not json",
        b'{"context": {"userId": NaN}, "inputs": []}',
        b"[" * 200 + b"]" * 200,
    ],
)
def test_caller_mistakes_get_the_same_error_either_way(app, body: bytes) -> None:
    front, flask = post(app, body, FRONT), post(app, body, FLASK)
    assert 400 <= front.status_code < 500
    assert comparable(front) == comparable(flask)
    assert set(front.get_json()["error"]) == {"code", "message"}


def test_a_missing_key_gets_the_same_401_and_challenge_either_way(settings, tmp_path) -> None:
    from service.serving.app import create_app

    app = create_app({**settings.__dict__, "require_keys": "predict"})
    try:
        body = json.dumps({"context": EU_ENTERPRISE, "inputs": [RECORD]}).encode()
        front, flask = post(app, body, FRONT), post(app, body, FLASK)
        assert front.status_code == 401
        assert comparable(front) == comparable(flask)
        assert front.headers["WWW-Authenticate"] == flask.headers["WWW-Authenticate"]
    finally:
        app.extensions["selector"].close()


def test_what_the_front_does_not_handle_still_gets_flasks_answer(app) -> None:
    client = app.test_client()
    assert client.get(PATH).status_code == 405
    assert client.post(PATH, data=b"x=1", content_type="text/plain").status_code == 415
    too_big = b"{" + b" " * (app.config["MAX_CONTENT_LENGTH"] + 1) + b"}"
    assert client.post(PATH, data=too_big, content_type=FRONT).status_code == 413
    assert client.post("/v1/models/a%20b/predict", json={}).status_code in (400, 404)
    assert len(app.extensions["flask_requests"]) == 4


def test_an_unexpected_failure_is_a_500_json_without_details(app) -> None:
    def broken(*args: Any) -> None:
        raise RuntimeError("secret internals")

    app.extensions["selector"].predict = broken
    body = json.dumps({"context": EU_ENTERPRISE, "inputs": [RECORD]}).encode()
    response = post(app, body, FRONT)
    assert response.status_code == 500
    assert response.get_json()["error"]["code"] == "internal_error"
    assert b"secret" not in response.data


class Closing:
    """A response body that is not a list and must be closed (as Flask's are)."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks, self.closed = chunks, False

    def __iter__(self):
        return iter(self.chunks)

    def close(self) -> None:
        self.closed = True


def test_granian_gets_a_sized_body_in_one_chunk_and_the_body_is_closed() -> None:
    body = Closing([b'{"a":', b"1}"])

    def app(environ, start_response):
        start_response("200 OK", [("Content-Length", "7")])
        return body

    out = whole_bodies(app)({}, lambda *a: None)
    assert out == [b'{"a":1}'] and body.closed


def test_a_stream_without_a_length_passes_through_unjoined() -> None:
    body = Closing([b"data: 1\n\n", b"data: 2\n\n"])

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/event-stream")])
        return body

    assert whole_bodies(app)({}, lambda *a: None) is body
