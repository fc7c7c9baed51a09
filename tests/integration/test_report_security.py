"""Reports are safe to serve: `<script>` payloads sent through the API (segment, region, metric)
or set in Unleash (a variant name) appear escaped in report.html and reports/index.html, and the
event store's password appears in no file `report ab` / `report validation` write.

The selector runs in-process on a real PostgreSQL store (trust auth: the password in the URL is
distinctive, not checked) with real bentos; the reports run the real notebooks.
"""

from __future__ import annotations

import secrets
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from service.cli import main
from service.harness.unleash_server import PostgresServer
from service.registry import population as pop
from service.serving.app import create_app
from service.store.events import create_engine, exposures

pytestmark = pytest.mark.integration

PASSWORD = f"Distinctive-Pa55-{secrets.token_hex(6)}"
SEGMENT = "<script>alert('segment')</script>"
REGION = "<img src=x onerror=alert('region')>"
METRIC = "<script>alert('metric')</script>"
VARIANT = "<script>alert('variant')</script>"


@pytest.fixture
def store_url():
    server = PostgresServer.from_env()
    name = f"rollout_xss_{secrets.token_hex(4)}"
    server.create_database(name)
    yield f"postgresql+psycopg://{server.user}:{PASSWORD}@{server.host}:{server.port}/{name}"
    server.drop_database(name)


def serve_payloads(settings, bento_urls: str, url: str) -> None:
    app = create_app({**settings.__dict__, "database_url": url, "bento_urls": bento_urls})
    client = app.test_client()
    for user in pop.population(60):
        context = {"userId": user.user_id, "properties": {"segment": SEGMENT, "region": REGION}}
        reply = client.post(
            "/v1/models/churn-model/predict",
            json={"context": context, "inputs": [user.features()]},
        )
        assert reply.status_code == 200, reply.json
        for metric in (METRIC, "retained"):
            outcome = {"metric": metric, "value": 1, "request_id": reply.json["request_id"]}
            assert client.post("/v1/outcomes", json=outcome).status_code == 202
    app.extensions["selector"].close()
    # A variant named in the Unleash UI: written as the selector would log it.
    with create_engine(url).begin() as conn:
        conn.execute(
            exposures.insert(),
            [
                {
                    "ts": time.time(),
                    "request_id": f"v{i}",
                    "flag": "churn-model",
                    "environment": "development",
                    "user_id": f"variant-user-{i}",
                    "variant": VARIANT,
                    "bento": "churn:v1",
                    "reason": "strategy_variant",
                    "status": 200,
                    "shadow": False,
                    "fallback": False,
                }
                for i in range(20)
            ],
        )


def run(tmp_path: Path, url: str, *args: str):
    env = {
        "ROLLOUT_REPORTS_DIR": str(tmp_path / "reports"),
        "ROLLOUT_DATA_DIR": str(tmp_path / "data"),
    }
    return CliRunner().invoke(main, ["report", *args, "--event-store-url", url], env=env)


def test_payloads_are_escaped_and_the_password_is_written_nowhere(
    tmp_path, settings, bento_urls, store_url
) -> None:
    serve_payloads(settings, bento_urls, store_url)
    ab = run(
        tmp_path,
        store_url,
        "ab",
        "--flag",
        "churn-model",
        "--control",
        VARIANT,
        "--treatment",
        "treatment",
        "--metric",
        METRIC,
        "--goal-metrics",
        "retained",
    )
    assert ab.exit_code in (0, 3), ab.output
    validation = run(
        tmp_path, store_url, "validation", "--flag", "churn-model", "--bento", "churn:v1"
    )
    assert validation.exit_code in (0, 3), validation.output

    written = [p for p in (tmp_path / "reports").rglob("*") if p.is_file()]
    assert {p.name for p in written} >= {
        "report.ipynb",
        "report.html",
        "decision.json",
        "index.html",
    }
    for path in written:
        assert PASSWORD not in path.read_text(errors="replace"), path
    pages = [p for p in written if p.suffix == ".html"]
    for page in pages:
        text = page.read_text()
        for payload in ("<script>alert", "<img src=x"):  # as markup; as text they are fine
            assert payload not in text, (page, payload)
        assert "Content-Security-Policy" in text  # and no script would run if one slipped in
    shown = "".join(p.read_text() for p in pages)
    # The payloads reached the pages, as text: the metric, the variant, the segment, the region.
    assert shown.count("&lt;script&gt;alert") >= 3 and "&lt;img src=x" in shown


def test_a_flag_name_that_is_no_plain_name_is_refused(tmp_path) -> None:
    result = run(tmp_path, f"sqlite:///{tmp_path / 'e.db'}", "ab", "--flag", "../../<script>")
    assert result.exit_code == 2 and "must be letters, digits" in result.output
    assert not (tmp_path / "reports").exists() or not list((tmp_path / "reports").rglob("*.html"))
