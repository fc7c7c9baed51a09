"""The console against a real Unleash (server mode), in a real browser.

flags/ is applied to the session's Unleash server (its flag description carries a script tag);
the guard's pending promotion is recorded as the guard writes it. The console, started with
UNLEASH_URL and the admin token, must show the flag as Unleash holds it, refuse the approval
without an operator key, and with one approve it through the Admin API: Unleash changes, a
selector in server mode follows, the audit names the operator and the timeline shows Unleash's
own events.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from integration.console_fixtures import (
    REPO,
    console_url,
    current_step,
    operator_key,
    propose_promotion,
    sign_in,
    start_console,
)
from playwright.sync_api import Browser, expect

from service.flags.audit import AuditStore
from service.flags.definitions import load_flags
from service.flags.server_state import read_server
from service.flags.sync import Who, apply
from service.flags.unleash_admin import UnleashAdmin
from service.harness.unleash_server import UnleashServer
from service.serving.app import create_app
from service.store.events import create_engine

pytestmark = pytest.mark.integration
SCRIPT = "<script>alert(1)</script>"
USERS = [f"us-user-{i}" for i in range(60)]
DEADLINE = 15.0


@pytest.fixture
def project(tmp_path: Path, unleash_admin: UnleashAdmin, unleash_server: UnleashServer) -> Any:
    flag = f"console-{time.monotonic_ns() % 10**8}"
    flags = tmp_path / "flags"
    flags.mkdir()
    (flags / "context.yaml").write_text((REPO / "flags" / "context.yaml").read_text())
    text = (REPO / "flags" / "churn-model.yaml").read_text()
    text = text.replace("flag: churn-model", f"flag: {flag}")
    text = text.replace("approval: false", "approval: true")
    text = text.replace("description: Churn-risk model;", f'description: "{SCRIPT} model;')
    text = text.replace("get a retention offer.", 'get a retention offer."', 1)
    (flags / "flag.yaml").write_text(text)
    database = f"sqlite:///{tmp_path / 'events.db'}"
    store = AuditStore(create_engine(database))
    apply(unleash_admin, load_flags(flags), store, Who("test", "console against Unleash"))
    propose_promotion(database, unleash_server.url, flag, 40, 50)
    keys = tmp_path / "operators.json"
    return {
        "flag": flag,
        "flags": flags,
        "root": tmp_path,
        "database": database,
        "keys": keys,
        "key": operator_key(keys, "carol"),
    }


@pytest.fixture
def console(project: Any, unleash_server: UnleashServer) -> Iterator[str]:
    env = {
        "UNLEASH_URL": unleash_server.url,
        "UNLEASH_ADMIN_TOKEN": unleash_server.admin_token,
        "ROLLOUT_DATA_DIR": str(project["root"] / "data"),
        "ROLLOUT_FLAGS_DIR": str(project["flags"]),
        "ROLLOUT_DATABASE_URL": project["database"],
        "ROLLOUT_CONSOLE_OPERATOR_KEYS_FILE": str(project["keys"]),
    }
    process = start_console(project["root"], env, "http://127.0.0.1:9")
    try:
        yield console_url(process)
    finally:
        process.stop()


@pytest.fixture
def selector(unleash_server: UnleashServer, tmp_path: Path) -> Iterator[FlaskClient]:
    app = create_app(
        {
            "data_dir": tmp_path / "selector",
            "unleash_url": unleash_server.url,
            "unleash_token": unleash_server.backend_token,
            "database_url": None,
            "refresh_interval": 1,
            "bento_urls": "churn:v1=http://127.0.0.1:9,churn:v2=http://127.0.0.1:9",
        }
    )
    yield app.test_client()
    app.extensions["selector"].close()


def variants(selector: FlaskClient, flag: str) -> set[str]:
    seen = set()
    for user in USERS:
        answer = selector.get(
            f"/v1/models/{flag}/resolve",
            query_string={"userId": user, "region": "us", "segment": "smb"},
        )
        seen.add(answer.json.get("variant", "unknown") if answer.status_code == 200 else "-")
    return seen


def until(check: Any, what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.2)  # between polls of the in-process selector


def test_the_console_reads_unleash_and_an_operator_approves_through_it(
    browser: Browser,
    console: str,
    project: Any,
    selector: FlaskClient,
    unleash_admin: UnleashAdmin,
    unleash_server: UnleashServer,
) -> None:
    flag = project["flag"]
    until(lambda: "default" in variants(selector, flag), "the selector never saw the flag")
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(console)
    expect(page.locator(".mode")).to_contain_text(unleash_server.url)
    section = page.locator(f"#flag-{flag}")
    expect(section.locator(".description")).to_contain_text(f"{SCRIPT} model;")
    assert page.locator("script").count() == 0  # shown as text, never run
    expect(section.locator("tr[data-strategy=ab-test]")).to_contain_text("treatment → churn:v2")
    assert current_step(page, flag) == "40%"
    expect(page.locator(f"#pending-{flag}")).to_contain_text(f"ramp {flag}: 40% -> 50%")

    refused = page.goto(f"{console}/actions/approve/{flag}")
    assert refused is not None and refused.status == 403
    sign_in(page, console, project["key"])
    page.locator(f"#approve-{flag}").click()
    page.locator("#confirm").click()
    expect(page.locator(".flash")).to_contain_text(f"approved by carol: ramp {flag}: 40% -> 50%")
    assert current_step(page, flag) == "50%"

    doc = read_server(unleash_admin, [flag]).doc(flag)
    assert doc is not None
    ab = next(s for s in doc["environments"]["development"]["strategies"] if s["name"] == "ab-test")
    assert ab["rollout"] == 100
    until(
        lambda: variants(selector, flag) <= {"control", "treatment"},
        "the selector did not follow the approval",
    )
    rows = AuditStore(create_engine(project["database"])).history(unleash_server.url, flag)
    assert [(r.action, r.actor) for r in rows[-2:]] == [("approved", "carol"), ("ramp", "carol")]

    page.goto(f"{console}/flags/{flag}")
    expect(page.locator("tr.change[data-source=unleash]").first).to_be_visible()
    expect(page.locator("tr.change[data-action=ramp]").first).to_contain_text("carol")
    page.close()
