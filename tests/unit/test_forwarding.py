"""Forwarding against a tiny local HTTP server standing in for a bento (unit scope)."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from service.errors import InputRejected
from service.processes import free_port
from service.serving.bento_http import StaleConnection
from service.serving.forwarding import BentoCallFailed, BentoForwarder


class Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        mode = body["inputs"]
        status, reply = {
            "ok": (200, {"predictions": [{"churn_probability": 0.2}], "seen": self.path}),
            "bad": (400, {"error": "inputs.0.tenure_months: must be >= 0"}),
            "boom": (500, {"error": "model crashed"}),
            "garbage": (200, "not json"),
        }.get(mode, (200, {}))
        if mode == "slow":
            time.sleep(1.0)
        data = reply.encode() if isinstance(reply, str) else json.dumps(reply).encode()
        # The "slow" caller has timed out and gone by now; that is the point of the test.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self.send_response(status)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def bento_url():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_a_good_reply_is_returned_with_its_latency(bento_url) -> None:
    reply = BentoForwarder().predict(bento_url, "ok", "r1")
    assert reply.body["seen"] == "/predict" and reply.latency_ms > 0


def test_a_4xx_is_the_callers_mistake(bento_url) -> None:
    with pytest.raises(InputRejected, match="tenure_months"):
        BentoForwarder().predict(bento_url, "bad", "r1")


@pytest.mark.parametrize("mode", ["boom", "garbage"])
def test_a_5xx_or_unreadable_reply_is_a_bento_failure(bento_url, mode) -> None:
    with pytest.raises(BentoCallFailed):
        BentoForwarder().predict(bento_url, mode, "r1")


def test_a_timeout_is_a_bento_failure(bento_url) -> None:
    with pytest.raises(BentoCallFailed, match=r"ReadTimeout|timed out"):
        BentoForwarder(timeout=0.2).predict(bento_url, "slow", "r1")


def test_a_refused_connection_is_a_bento_failure() -> None:
    with pytest.raises(BentoCallFailed, match=r"127\.0\.0\.1"):
        BentoForwarder().predict(f"http://127.0.0.1:{free_port()}", "ok", "r1")


def test_bentoml_validation_errors_name_each_field() -> None:
    from service.serving.forwarding import _message

    reply = json.dumps(
        {
            "error": "2 validation errors",
            "detail": [
                {"loc": ["inputs", 0, "tenure_months"], "msg": "Input should be >= 0"},
                {"loc": ["inputs", 1, "extra"], "msg": "Extra inputs are not permitted"},
            ],
        }
    ).encode()
    assert _message(reply) == (
        "inputs[0].tenure_months: Input should be >= 0; "
        "inputs[1].extra: Extra inputs are not permitted"
    )


def test_a_connection_the_bento_closed_while_idle_is_resent_once(bento_url, monkeypatch) -> None:
    forwarder = BentoForwarder()
    real_post, calls = forwarder._post, []

    def reset_first(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise StaleConnection("ConnectionResetError: [Errno 104] Connection reset by peer")
        return real_post(*args, **kwargs)

    monkeypatch.setattr(forwarder, "_post", reset_first)
    assert forwarder.predict(bento_url, "ok", "r1").body["seen"] == "/predict"
    assert len(calls) == 2


def test_a_bento_that_keeps_resetting_is_a_failure(bento_url, monkeypatch) -> None:
    forwarder = BentoForwarder()

    def always_reset(*args, **kwargs):
        raise StaleConnection("ConnectionResetError: [Errno 104] Connection reset by peer")

    monkeypatch.setattr(forwarder, "_post", always_reset)
    with pytest.raises(BentoCallFailed, match="StaleConnection"):
        forwarder.predict(bento_url, "ok", "r1")
