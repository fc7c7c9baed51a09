"""The console in a real browser, on embedded flags, against a real selector and real bentos.

A project folder like a checkout's (flags/ with the churn flag in approval mode, reports/ with
an A/B decision, the guard's status file and a pending promotion as the guard writes them),
the real `rollout serve` and `bentoml serve` of every built bento, and `rollout console`.
Headless Chromium (Debian's) reads each page; an operator signs in with a key and approves the
promotion; the flag file changes and the audit names the operator. The screenshots in the
README (docs/console/*.png) are taken here.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from integration.console_fixtures import (
    REPO,
    console_url,
    current_step,
    operator_key,
    propose_promotion,
    screenshot,
    sign_in,
    start_console,
)
from playwright.sync_api import Browser, expect

from service.flags.audit import AuditStore
from service.processes import ManagedProcess, free_port, selector_process
from service.store.events import create_engine

pytestmark = pytest.mark.integration
FLAG = "churn-model"
DEADLINE = 30.0
RECORD = {
    "tenure_months": 3,
    "monthly_spend": 42.5,
    "support_tickets": 1,
    "days_since_last_login": 2,
    "sessions_per_week": 3.0,
    "region": "eu",
    "segment": "enterprise",
}


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, built_bentos: Any) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("console-project")
    flags = root / "flags"
    flags.mkdir()
    (flags / "context.yaml").write_text((REPO / "flags" / "context.yaml").read_text())
    text = (REPO / "flags" / f"{FLAG}.yaml").read_text()
    (flags / f"{FLAG}.yaml").write_text(text.replace("approval: false", "approval: true"))
    data = root / "data"
    data.mkdir()
    (data / "bentoml").symlink_to(built_bentos.settings.bentoml_home)  # the built bentos
    run = root / "reports" / FLAG / "20261201T100000Z-ab"
    run.mkdir(parents=True)
    decision = {
        "flag": FLAG,
        "kind": "ab",
        "recommendation": "ramp",
        "generated_at": "2026-12-01T10:00:00+00:00",
        "current_step": 40,
        "next_step": 50,
        "arms": [{"variant": "control"}, {"variant": "treatment"}],
        "reasons": ["treatment is significantly better: 83.3% vs 78.5%"],
    }
    (run / "decision.json").write_text(json.dumps(decision))
    (run / "report.html").write_text("<html><body><h1>A/B report of churn-model</h1></body>")
    (data / "guard").mkdir()
    status = {
        "flag": FLAG,
        "state": "pending",
        "step": 40,
        "message": "ramp waits for approval",
        "time": "2026-12-01T10:05:00+00:00",
        "checks": [],
    }
    (data / "guard" / f"{FLAG}.json").write_text(json.dumps(status))
    database = f"sqlite:///{data / 'events.db'}"
    propose_promotion(database, "embedded", FLAG, 40, 50)
    keys = root / "operators.json"
    return {
        "root": root,
        "flags": flags,
        "data": data,
        "database": database,
        "keys": keys,
        "key": operator_key(keys, "alice"),
    }


@pytest.fixture(scope="module")
def selector(project: dict[str, Any], bento_urls: str) -> Iterator[str]:
    env = {
        "UNLEASH_URL": "",
        "ROLLOUT_DATA_DIR": str(project["data"]),
        "ROLLOUT_FLAGS_DIR": str(project["flags"]),
        "ROLLOUT_BENTO_URLS": bento_urls,
    }
    process = selector_process(free_port(), project["root"] / "selector.log", env, workers=1)
    process.start().wait_ready(90)
    try:
        yield process.ready_url.removesuffix("/readyz")
    finally:
        process.stop()


@pytest.fixture(scope="module")
def console(project: dict[str, Any], selector: str) -> Iterator[str]:
    env = {
        "UNLEASH_URL": "",
        "ROLLOUT_DATA_DIR": str(project["data"]),
        "ROLLOUT_FLAGS_DIR": str(project["flags"]),
        "ROLLOUT_REPORTS_DIR": str(project["root"] / "reports"),
        "ROLLOUT_CONSOLE_OPERATOR_KEYS_FILE": str(project["keys"]),
    }
    process: ManagedProcess = start_console(project["root"], env, selector)
    try:
        yield console_url(process)
    finally:
        process.stop()


def test_rollouts_show_the_flag_its_bentos_step_guard_and_latest_decision(
    browser: Browser,
    console: str,
) -> None:
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(console)
    flag = page.locator(f"#flag-{FLAG}")
    expect(flag.locator("h2")).to_contain_text("stable churn:v1")
    ab = flag.locator("[data-env=development] tr[data-strategy=ab-test]")
    expect(ab).to_contain_text("treatment → churn:v2")
    expect(ab).to_contain_text("control → churn:v1")
    expect(ab).to_contain_text("50%, 40% of users")
    canary = flag.locator("[data-env=development] tr[data-strategy=eu-enterprise-canary]")
    expect(canary).to_contain_text("segment eu-enterprise: region IN eu; segment IN enterprise")
    expect(flag.locator("[data-env=production] .badge").first).to_have_text("off")
    assert current_step(page, FLAG) == "40%"
    expect(page.locator(f"#guard-state-{FLAG}")).to_have_text("pending")
    expect(page.locator(f"#pending-{FLAG}")).to_contain_text("ramp churn-model: 40% -> 50%")
    decision = flag.locator(".decision[data-kind=ab]")
    expect(decision).to_contain_text("ramp")
    expect(decision).to_contain_text("treatment is significantly better")
    screenshot(page, "rollouts")
    decision.get_by_role("link", name="report").click()
    expect(page.locator("h1")).to_have_text("A/B report of churn-model")
    page.close()


def test_live_counts_each_bentos_requests_from_the_selectors_metrics(
    browser: Browser,
    console: str,
    selector: str,
) -> None:
    for i in range(30):  # EU enterprise users get the canary (churn:v2); others v1 or v2
        region, segment = ("eu", "enterprise") if i % 2 else ("us", "smb")
        body = {
            "context": {
                "userId": f"live-{i}",
                "properties": {"region": region, "segment": segment},
            },
            "inputs": [{**RECORD, "region": region, "segment": segment}],
        }
        answer = requests.post(f"{selector}/v1/models/{FLAG}/predict", json=body, timeout=10)
        assert answer.status_code == 200, answer.text
    page = browser.new_page(viewport={"width": 1400, "height": 800})
    deadline = time.monotonic() + DEADLINE
    while True:  # the page counts what happened since its first scrape: reload until seen
        page.goto(f"{console}/live")
        counts = {
            row.get_attribute("data-bento"): int(row.locator(".requests").inner_text())
            for row in page.locator("tr.bento-row").all()
        }
        if sum(counts.values()) >= 30 or time.monotonic() > deadline:
            break
        page.wait_for_timeout(500)  # between reloads of the page, not a wait for readiness
    assert set(counts) == {"churn:v1", "churn:v2"} and sum(counts.values()) >= 30, counts
    assert counts["churn:v2"] >= 15  # every EU enterprise user
    expect(page.locator("#live-status")).to_have_text("ready")
    expect(page.locator("tr[data-bento='churn:v1'] .badge")).to_have_text("closed")
    screenshot(page, "live")
    page.close()


def test_models_list_the_registry_with_gates_cards_and_the_flags_they_serve(
    browser: Browser,
    console: str,
) -> None:
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.goto(f"{console}/models")
    v1, v2 = page.locator("tr[data-bento='churn:v1']"), page.locator("tr[data-bento='churn:v2']")
    expect(v1).to_contain_text("passed")
    expect(v1).to_contain_text("churn-model/development (default, control)")
    expect(v2).to_contain_text("churn-model/development (canary, treatment)")
    expect(v1.locator("td").nth(6)).to_have_text("churn-model")  # stable for
    page.locator("#card-churn-v2 summary").click()
    expect(page.locator("#card-churn-v2")).to_contain_text("Intended use")
    screenshot(page, "models")
    page.close()


def test_approving_needs_an_operator_and_is_audited_with_their_name(
    browser: Browser,
    console: str,
    project: dict[str, Any],
) -> None:
    flag_file = project["flags"] / f"{FLAG}.yaml"
    before = flag_file.read_text()
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(console)
    expect(page.locator(f"#pending-{FLAG}")).to_contain_text("an operator can approve it")
    assert page.locator(f"#approve-{FLAG}").count() == 0
    refused = page.goto(f"{console}/actions/approve/{FLAG}")
    assert refused is not None and refused.status == 403
    expect(page.locator("#error-message")).to_contain_text("sign in with an operator key")
    forged = page.request.post(f"{console}/actions/approve/{FLAG}", form={"csrf": "x"})
    assert forged.status == 403 and flag_file.read_text() == before

    sign_in(page, console, "rk_wrong", refused=True)
    assert page.locator("#operator").count() == 0
    sign_in(page, console, project["key"])
    expect(page.locator("#operator")).to_contain_text("alice")
    page.locator(f"#approve-{FLAG}").click()
    expect(page.locator("h1")).to_contain_text("approve: ramp churn-model: 40% -> 50%")
    screenshot(page, "confirm")
    page.locator("#confirm").click()
    expect(page.locator(".flash")).to_contain_text(
        "approved by alice: ramp churn-model: 40% -> 50%"
    )
    assert current_step(page, FLAG) == "50%"
    assert "rollout: 100" in flag_file.read_text() and flag_file.read_text() != before
    rows = AuditStore(create_engine(project["database"])).history("embedded", FLAG)
    assert [(r.action, r.actor) for r in rows[-2:]] == [("approved", "alice"), ("ramp", "alice")]

    page.locator(f"#flag-{FLAG} h2 a").click()
    first = page.locator("tr.change").first
    expect(first).to_contain_text("alice")
    expect(first).to_contain_text("development strategy ab-test: rollout 80 -> 100")
    screenshot(page, "timeline")
    page.close()
