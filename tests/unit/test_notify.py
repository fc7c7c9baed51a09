"""Webhook notifications against a real local HTTP server scripted to fail, refuse or stall."""

from __future__ import annotations

import contextlib
import json
import logging
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from service.errors import ConfigError
from service.processes import free_port
from service.rollout.notify import Notification, Notifier, notifier_from_environment

SECRET = "s3cret"


class Webhook:
    """What the test server answers (`statuses` in turn, then 200) and what it received."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.statuses: list[int] = []
        self.bodies: list[dict[str, Any]] = []
        self.arrived = threading.Event()  # set when any request has been read
        self.gate: threading.Event | None = None  # when given, answers wait until it is set


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            hook.bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            hook.arrived.set()
            if hook.gate is not None:
                hook.gate.wait(10)
            status = hook.statuses.pop(0) if hook.statuses else 200
            # A notifier that timed out has gone by now; that is what the stalling tests want.
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    hook = Webhook(f"http://127.0.0.1:{server.server_address[1]}/hook?token={SECRET}")
    thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    yield hook
    if hook.gate is not None:
        hook.gate.set()
    server.shutdown()
    server.server_close()
    thread.join(5)


def rollback(**details: Any) -> Notification:
    return Notification(
        flag="churn-model",
        action="rollback",
        summary="error rate 4.1% over the 2% guardrail; back to churn:v1",
        actor="guardrail-monitor",
        details=details or {"error_rate": 0.041, "threshold": 0.02},
    )


def test_body_has_every_field_and_a_slack_text_line() -> None:
    body = rollback().body()
    assert body["text"] == (
        "[churn-model] rollback: error rate 4.1% over the 2% guardrail; back to churn:v1"
    )
    assert {k: body[k] for k in ("flag", "action", "actor")} == {
        "flag": "churn-model",
        "action": "rollback",
        "actor": "guardrail-monitor",
    }
    assert body["details"] == {"error_rate": 0.041, "threshold": 0.02}
    assert json.loads(json.dumps(body)) == body


def test_time_is_utc_now_to_the_second_with_a_z() -> None:
    stamp = rollback().time
    assert len(stamp) == 20 and stamp.endswith("Z")
    sent = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert abs((datetime.now(UTC) - sent).total_seconds()) < 5


@pytest.mark.parametrize("statuses", [[500, 500], [503, 429]], ids=["5xx", "5xx-then-429"])
def test_a_failing_webhook_is_retried_until_it_arrives_once(webhook, statuses) -> None:
    webhook.statuses = list(statuses)
    with Notifier(webhook.url, attempts=5, backoff=0.01) as notifier:
        notifier.send(rollback())
    assert len(webhook.bodies) == len(statuses) + 1  # every try carried the same body
    assert all(body == rollback().body() | {"time": body["time"]} for body in webhook.bodies)
    assert (notifier.delivered, notifier.failed, notifier.dropped) == (1, 0, 0)


def test_a_webhook_that_always_fails_is_given_up_after_every_attempt(webhook) -> None:
    webhook.statuses = [500] * 10
    with Notifier(webhook.url, attempts=3, backoff=0.01) as notifier:
        notifier.send(rollback())
    assert len(webhook.bodies) == 3
    assert (notifier.delivered, notifier.failed) == (0, 1)


@pytest.mark.parametrize("status", [400, 404, 301])
def test_a_refusal_is_not_retried_and_is_logged_without_the_secret(webhook, caplog, status) -> None:
    webhook.statuses = [status]
    with Notifier(webhook.url, attempts=5, backoff=0.01) as notifier:
        notifier.send(rollback())
    assert len(webhook.bodies) == 1
    assert (notifier.delivered, notifier.failed) == (0, 1)
    warning = next(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert f"HTTP {status}" in warning and "127.0.0.1" in warning
    assert "/hook" not in warning  # a Slack webhook's path is its secret
    assert SECRET not in caplog.text


def test_a_refused_connection_is_retried_and_never_logs_the_query_string(caplog) -> None:
    caplog.set_level(logging.INFO, logger="service.rollout.notify")
    url = f"http://user:pw@127.0.0.1:{free_port()}/hook?token={SECRET}"
    with Notifier(url, attempts=3, backoff=0.01) as notifier:
        notifier.send(rollback())
    assert (notifier.delivered, notifier.failed) == (0, 1)
    assert caplog.text.count("ConnectionError") == 3  # two retries and the giving up
    assert SECRET not in caplog.text and "pw@" not in caplog.text


def test_a_timeout_is_retried(webhook) -> None:
    webhook.gate = threading.Event()  # never answers within the notifier's timeout
    with Notifier(webhook.url, attempts=2, backoff=0.01, timeout=0.2) as notifier:
        notifier.send(rollback())
    assert len(webhook.bodies) == 2
    assert (notifier.delivered, notifier.failed) == (0, 1)


def returns_while_stuck(webhook, call) -> bool:
    """`call` returns while the webhook still holds a delivery (no clock involved: a call that
    waited for the delivery could not return before the gate opens)."""
    done = threading.Event()
    threading.Thread(target=lambda: (call(), done.set()), daemon=True).start()
    returned = done.wait(5)
    return returned and not webhook.gate.is_set()


def test_send_returns_at_once_while_the_webhook_is_slow(webhook) -> None:
    webhook.gate = threading.Event()
    notifier = Notifier(webhook.url, timeout=10)
    assert returns_while_stuck(webhook, lambda: notifier.send(rollback()))  # starts the thread
    assert webhook.arrived.wait(5)
    # A second one while the first delivery is stuck in the webhook.
    assert returns_while_stuck(webhook, lambda: notifier.send(rollback()))
    webhook.gate.set()
    notifier.close()
    assert notifier.delivered == 2


def test_a_full_queue_drops_and_counts_instead_of_blocking(webhook) -> None:
    webhook.gate = threading.Event()
    notifier = Notifier(webhook.url, max_queue=2, timeout=10)
    notifier.send(rollback())
    assert webhook.arrived.wait(5)  # the first one is in flight, so the queue is empty again
    for _ in range(5):
        notifier.send(rollback())
    assert notifier.dropped == 3
    webhook.gate.set()
    notifier.close()
    assert (notifier.delivered, len(webhook.bodies)) == (3, 3)


def test_close_gives_up_waiting_after_its_timeout(webhook, caplog) -> None:
    webhook.gate = threading.Event()
    notifier = Notifier(webhook.url, timeout=10)
    notifier.send(rollback())
    notifier.send(rollback())
    assert webhook.arrived.wait(5)
    assert returns_while_stuck(webhook, lambda: notifier.close(timeout=0.2))
    assert "1 notifications abandoned" in caplog.text and SECRET not in caplog.text


def test_close_twice_and_send_after_close_are_safe(webhook) -> None:
    with Notifier(webhook.url) as notifier:
        notifier.send(rollback())
    notifier.close()
    notifier.send(rollback())
    assert (notifier.delivered, notifier.dropped, len(webhook.bodies)) == (1, 1, 1)


def test_details_json_cannot_encode_are_sent_as_text(webhook) -> None:
    with Notifier(webhook.url) as notifier:
        notifier.send(rollback(report=Path("reports/churn-model/run/report.html")))
    assert webhook.bodies[0]["details"] == {"report": "reports/churn-model/run/report.html"}
    assert notifier.delivered == 1


def test_the_thread_starts_on_first_send_and_not_before(webhook) -> None:
    before = set(threading.enumerate())
    notifier = Notifier(webhook.url)
    assert set(threading.enumerate()) <= before
    notifier.send(rollback())
    assert "notifier" in {t.name for t in set(threading.enumerate()) - before}
    notifier.close()


def test_without_a_url_everything_is_a_no_op() -> None:
    before = set(threading.enumerate())
    with Notifier(None) as notifier:
        notifier.send(rollback())
    assert set(threading.enumerate()) <= before
    assert (notifier.delivered, notifier.failed, notifier.dropped) == (0, 0, 0)


@pytest.mark.parametrize(
    "url",
    [
        "ftp://127.0.0.1/hook",
        "127.0.0.1/hook",
        "http:///hook",
        "http://127.0.0.1:port/hook",
        "http://[::1/hook",
        "",
    ],
)
def test_a_bad_url_is_a_config_error_naming_the_variable(url) -> None:
    with pytest.raises(ConfigError, match="ROLLOUT_WEBHOOK_URL") as raised:
        Notifier(f"{url}?token={SECRET}" if url else url)
    assert SECRET not in raised.value.message


def test_the_url_comes_from_the_argument_then_the_environment(monkeypatch) -> None:
    monkeypatch.setenv("ROLLOUT_WEBHOOK_URL", "http://127.0.0.1:9/from-env")
    assert notifier_from_environment().url == "http://127.0.0.1:9/from-env"
    assert notifier_from_environment("http://127.0.0.1:9/given").url == "http://127.0.0.1:9/given"
    monkeypatch.setenv("ROLLOUT_WEBHOOK_URL", "not a url")
    with pytest.raises(ConfigError, match="ROLLOUT_WEBHOOK_URL"):
        notifier_from_environment()
    monkeypatch.delenv("ROLLOUT_WEBHOOK_URL")
    assert notifier_from_environment().url is None
