"""`rollout serve` as in production: granian with several workers, real bentos behind it.

- /metrics sums every worker's samples (prometheus_client multiprocess mode);
- shadow bentos get a mirrored copy of each request, logged paired with the live exposure;
- /readyz names each bento's circuit, /openapi.json describes the API of the running server.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
import urllib3

from service.processes import ManagedProcess, free_port, selector_process
from service.registry.population import population
from service.store.events import exposures

pytestmark = pytest.mark.integration

SHADOW_FLAG = """
flag: shadowed
default: churn:v1
shadows: [churn:v2]
variants: {control: churn:v1}
environments:
  development:
    enabled: true
    strategies:
      - name: everyone
        variants: {control: 100}
"""
http = urllib3.PoolManager(timeout=urllib3.Timeout(total=10), retries=False)


@pytest.fixture(scope="module")
def served(tmp_path_factory, bento_urls):
    """One `rollout serve` (3 workers) on a flags folder with a shadowed flag."""
    tmp = tmp_path_factory.mktemp("serving")
    flags = tmp / "flags"
    flags.mkdir()
    repo_flags = Path(__file__).resolve().parents[2] / "flags"
    (flags / "context.yaml").write_text((repo_flags / "context.yaml").read_text())
    (flags / "shadowed.yaml").write_text(SHADOW_FLAG)
    env = {
        "ROLLOUT_DATA_DIR": str(tmp / "data"),
        "ROLLOUT_FLAGS_DIR": str(flags),
        "ROLLOUT_BENTO_URLS": bento_urls,
        "ROLLOUT_UNLEASH_URL": "",
        "UNLEASH_URL": "",
    }
    process = selector_process(free_port(), tmp / "selector.log", env, workers=3, threads=4)
    process.start().wait_ready(60)
    yield process, tmp / "data"
    process.stop()


def url(process: ManagedProcess, path: str) -> str:
    return process.ready_url.removesuffix("/readyz") + path


def predict(process: ManagedProcess, user, request_id: str) -> dict:
    response = http.request(
        "POST",
        url(process, "/v1/models/shadowed/predict"),
        body=json.dumps({"context": {"userId": user.user_id}, "inputs": [user.features()]}),
        headers={"Content-Type": "application/json", "X-Request-ID": request_id},
    )
    assert response.status == 200, (response.data, process.log_tail())
    return json.loads(response.data)


def metric(text: str, name: str, **labels: str) -> float:
    """The sum of a metric's samples whose labels include `labels`."""
    total = 0.0
    for line in text.splitlines():
        match = re.match(rf"^{name}(?:{{(.*)}})? (\S+)$", line)
        if match:
            found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(1) or ""))
            if labels.items() <= found.items():
                total += float(match.group(2))
    return total


def scrape(process: ManagedProcess) -> str:
    return http.request("GET", url(process, "/metrics")).data.decode()


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)  # poll interval, not a wait for the condition
    raise AssertionError(f"{what} not seen within {timeout:.0f}s")


def test_shadow_predictions_are_logged_paired_and_metrics_sum_every_worker(served) -> None:
    process, data_dir = served
    users = population(60, seed=5)
    live = {f"shadow-{i}": predict(process, u, f"shadow-{i}") for i, u in enumerate(users)}
    assert {(b["bento"], b["variant"]) for b in live.values()} == {("churn:v1", "control")}

    # Every scrape, whichever worker answers it, counts all 60 requests of all 3 workers.
    for _ in range(5):
        text = scrape(process)
        assert metric(text, "selector_requests_total", flag="shadowed", status="200") == 60
    wait_for(
        lambda: metric(scrape(process), "selector_shadow_requests_total", outcome="ok") == 60,
        15,
        "60 shadow answers",
    )
    text = scrape(process)
    assert metric(text, "selector_shadow_agreement_total", bento="churn:v2") == 60
    assert metric(text, "selector_request_latency_seconds_count", flag="shadowed") == 60

    engine = sa.create_engine(f"sqlite:///{data_dir / 'events.db'}")

    def shadow_rows() -> list[dict]:
        query = sa.select(exposures).where(exposures.c.flag == "shadowed")
        with engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(query)]

    wait_for(lambda: len(shadow_rows()) == 120, 15, "120 exposures in the store")
    rows = shadow_rows()
    shadows = {r["request_id"]: r for r in rows if r["shadow"]}
    lives = {r["request_id"]: r for r in rows if not r["shadow"]}
    assert set(shadows) == set(lives) == set(live)
    for request_id, row in shadows.items():
        assert (row["variant"], row["bento"], row["reason"], row["status"]) == (
            "shadow",
            "churn:v2",
            "shadow",
            200,
        )
        assert row["inputs"] == lives[request_id]["inputs"] and row["latency_ms"] > 0
        # Paired for the validation report: two versions, two different scores.
        assert row["prediction"] not in (None, lives[request_id]["prediction"])


def test_readyz_names_each_bentos_circuit_and_openapi_is_served(served) -> None:
    process, _ = served
    ready = json.loads(http.request("GET", url(process, "/readyz")).data)
    assert {tag: b["circuit"] for tag, b in ready["bentos"].items()} == {
        "churn:v1": "closed",
        "churn:v2": "closed",
    }
    document = json.loads(http.request("GET", url(process, "/openapi.json")).data)
    assert document["components"]["schemas"]["FlagName"]["enum"] == ["shadowed"]


def test_bad_input_is_a_json_4xx_naming_the_problem(served) -> None:
    process, _ = served
    user = population(1)[0]
    cases = [
        ("application/json", b"{nope", 400, "not valid JSON"),
        ("text/plain", b"x", 415, "application/json"),
        ("application/json", b"[" + b"1," * 600_000 + b"1]", 413, "larger than"),
        (
            "application/json",
            json.dumps(
                {"context": {"userId": "u"}, "inputs": [{**user.features(), "tenure_months": -1}]}
            ).encode(),
            422,
            "inputs[0].tenure_months",
        ),
    ]
    for content_type, body, status, words in cases:
        response = http.request(
            "POST",
            url(process, "/v1/models/shadowed/predict"),
            body=body,
            headers={"Content-Type": content_type},
        )
        assert response.status == status
        assert words in json.loads(response.data)["error"]["message"]
    response = http.request("GET", url(process, "/v1/models/nope/resolve"))
    assert response.status == 404 and "nope" in json.loads(response.data)["error"]["message"]
