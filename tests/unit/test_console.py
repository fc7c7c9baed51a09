"""The console in process (Flask's test client) on embedded flags in a temporary folder.

What a page shows is read from the same files and tables the CLI uses, written here as the
guard, `rollout decide` and the reports would write them. Everything that came from a flag, the
audit table, a report or the guard carries markup here, and must come out escaped.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import pytest
import responses
from flask.testing import FlaskClient

from service.config import Settings
from service.console.app import create_app
from service.console.live import SelectorScraper, _quantile
from service.flags.audit import AuditStore
from service.flags.definitions import load_flags
from service.flags.documents import flag_doc
from service.rollout.decisions import PENDING
from service.serving.keys import KeyFile
from service.store.events import Exposure, Outcome, create_engine
from service.store.writer import EventWriter

REPO = Path(__file__).resolve().parents[2]
SCRIPT = "<script>alert(1)</script>"
FLAG = """
flag: churn-model
description: "the churn model <script>alert(1)</script>"
default: churn:v1
variants: {control: churn:v1, treatment: churn:v2, "<b>odd</b>": churn:v2, typo: churn:v9}
environments:
  development:
    enabled: true
    strategies:
      - name: eu-enterprise-canary
        segments: [eu-enterprise]
        variants: {"<b>odd</b>": 100}
      - name: ab-test
        rollout: 80
        constraints: [{field: region, operator: NOT_IN, values: [apac]}]
        variants: {control: 50, treatment: 50}
  production:
    enabled: false
    strategies:
      - {name: typo-strategy, rollout: 5, variants: {typo: 100}}
ramp:
  environment: development
  strategy: ab-test
  control: control
  treatment: treatment
  steps: [5, 25, 50, 100]
  approval: true
"""


@pytest.fixture
def world(tmp_path: Path, flags_dir: Any) -> dict[str, Any]:
    folder = flags_dir("churn-model.yaml", FLAG)
    data, reports = tmp_path / "data", tmp_path / "reports"
    keys = tmp_path / "operators.json"
    return {
        "config": {
            "data_dir": data,
            "reports_dir": reports,
            "flags_dir": folder,
            "bentos_dir": REPO / "bentos",
            "unleash_url": None,
            "database_url": None,
            "operator_keys_file": keys,
            "read_only": False,
            "live_sample_seconds": 0,
            "selector_url": "http://selector.test",
        },
        "settings": Settings.load(
            {"data_dir": data, "reports_dir": reports, "flags_dir": folder, "database_url": None}
        ),
        "keys": Operators(keys),
        "flag_file": folder / "churn-model.yaml",
    }


class Operators:
    """Operator keys as `rollout keys create NAME --scopes operate` makes them."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def create(self, name: str) -> str:
        return KeyFile(self.path).create(name, ("operate",))


def client(world: dict[str, Any], **overrides: Any) -> FlaskClient:
    return create_app({**world["config"], **overrides}).test_client()


def store(world: dict[str, Any]) -> AuditStore:
    return AuditStore(create_engine(world["settings"].event_store_url))


def csrf(page: str) -> str:
    found = re.search(r'name="csrf" (?:value|content)="([^"]+)"', page)
    assert found, "the page has no CSRF token"
    return found.group(1)


def sign_in(app: FlaskClient, key: str) -> Any:
    token = csrf(app.get("/login").text)
    return app.post("/login", data={"key": key, "csrf": token})


def write_guard_status(world: dict[str, Any], **status: Any) -> None:
    folder = world["settings"].data_dir / "guard"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "churn-model.json").write_text(json.dumps({"flag": "churn-model", **status}))


def write_decision(world: dict[str, Any], run: str, **decision: Any) -> Path:
    folder = world["settings"].reports_dir / "churn-model" / run
    folder.mkdir(parents=True)
    (folder / "decision.json").write_text(json.dumps({"flag": "churn-model", **decision}))
    (folder / "report.html").write_text(f"<html><body>report {run}</body></html>")
    return folder


def propose(world: dict[str, Any], why: str = "report says ramp") -> None:
    """What the guard records in approval mode: a pending promotion from 40% to 50%."""
    proposal = {"action": "ramp", "from_step": 40.0, "to_step": 50.0, "changes": ["..."]}
    store(world).record(
        "embedded",
        "churn-model",
        source="guard",
        actor="rollout-guard",
        action=PENDING,
        what="ramp churn-model: 40% -> 50%",
        why=why,
        evidence={"proposal": proposal},
    )


# ---------------------------------------------------------------- Rollouts


def test_rollouts_show_strategies_bentos_ramp_guard_pending_and_decisions(world) -> None:
    write_guard_status(
        world,
        state="pending",
        step=40,
        message="promotion waits for approval",
        time="2026-12-01T10:00:00+00:00",
    )
    propose(world)
    write_decision(
        world,
        "20261201T090000Z-ab",
        kind="ab",
        recommendation="hold",
        generated_at="2026-12-01T09:00:00+00:00",
        reasons=["too few users"],
    )
    write_decision(
        world,
        "20261201T100000Z-ab",
        kind="ab",
        recommendation="ramp",
        next_step=50,
        generated_at="2026-12-01T10:00:00+00:00",
        reasons=["treatment wins"],
    )
    write_decision(
        world,
        "20261201T110000Z-validation",
        kind="validation",
        recommendation="keep",
        generated_at="2026-12-01T11:00:00+00:00",
    )
    page = client(world).get("/").text

    assert 'stable <code class="bento">churn:v1</code>' in page
    assert 'data-strategy="ab-test"' in page and "region NOT_IN apac" in page
    assert "segment <strong>eu-enterprise</strong>: region IN eu; segment IN enterprise" in page
    assert 'treatment → <code class="bento">churn:v2</code>' in page
    assert "50%, 40% of users" in page
    current = re.search(r'class="step current"[^>]*>([^<]+)<', page)
    assert current and current.group(1) == "40%"
    assert 'class="step next">50%' in page
    assert 'id="guard-state-churn-model">pending' in page
    assert "ramp churn-model: 40% -&gt; 50%" in page  # the pending promotion
    assert "treatment wins" in page and "too few users" not in page  # only the newest A/B
    assert "/reports/churn-model/20261201T100000Z-ab/report.html" in page
    assert 'data-kind="validation"' in page
    # churn:v9 is declared nowhere: a problem listed with the flag, not an error page
    assert re.search(r"variants.typo: .*churn:v9", page)


def test_everything_from_flags_reports_audit_and_guard_is_escaped(world) -> None:
    write_guard_status(
        world,
        state="paused",
        step=None,
        message=f"changed by {SCRIPT}",
        time="2026-12-01T10:00:00+00:00",
    )
    store(world).record(
        "embedded",
        "churn-model",
        source="decide",
        actor=f"eve{SCRIPT}",
        action="apply",
        what=f"what {SCRIPT}",
        why=f"why {SCRIPT}",
    )  # before the proposal: a later change would cancel it
    propose(world, why=f"because {SCRIPT}")
    write_decision(
        world,
        "20261201T100000Z-ab",
        kind="ab",
        recommendation="hold",
        generated_at="2026-12-01T10:00:00+00:00",
        reasons=[f"reason {SCRIPT}"],
    )
    app = client(world)
    for url in ("/", "/flags/churn-model", "/models"):
        page = app.get(url).text
        assert "<script" not in page, url
        assert "<b>odd</b>" not in page, url
    rollouts = app.get("/").text
    assert "the churn model &lt;script&gt;alert(1)&lt;/script&gt;" in rollouts
    assert "&lt;b&gt;odd&lt;/b&gt; → <code" in rollouts
    assert "reason &lt;script&gt;" in rollouts and "because &lt;script&gt;" in rollouts
    assert "changed by &lt;script&gt;" in rollouts
    timeline = app.get("/flags/churn-model").text
    assert "why &lt;script&gt;" in timeline and "eve&lt;script&gt;" in timeline


def test_a_broken_flags_folder_is_listed_not_an_error_page(world) -> None:
    world["flag_file"].write_text("flag: churn-model\ndefault: latest\n")
    response = client(world).get("/")
    assert response.status_code == 200
    assert 'id="flags-problems"' in response.text and "churn-model" in response.text


def test_pages_forbid_scripts_and_framing(world) -> None:
    response = client(world).get("/")
    assert "script-src 'none'" in response.headers["Content-Security-Policy"]
    assert response.headers["X-Frame-Options"] == "DENY"


def test_reports_are_served_sandboxed_and_only_from_reports(world) -> None:
    write_decision(
        world,
        "20261201T100000Z-ab",
        kind="ab",
        recommendation="hold",
        generated_at="2026-12-01T10:00:00+00:00",
    )
    app = client(world)
    report = app.get("/reports/churn-model/20261201T100000Z-ab/report.html")
    assert report.status_code == 200 and b"report 20261201T100000Z-ab" in report.data
    assert report.headers["Content-Security-Policy"].startswith("sandbox")
    assert app.get("/reports/../data/events.db").status_code == 404


# ---------------------------------------------------------------- Timeline


def test_timeline_lists_changes_with_evidence_and_the_primary_metric_after_each(world) -> None:
    settings, audit = world["settings"], store(world)
    report = (
        write_decision(
            world,
            "20261201T100000Z-ab",
            kind="ab",
            recommendation="ramp",
            generated_at="2026-12-01T10:00:00+00:00",
        )
        / "decision.json"
    )
    doc = flag_doc(load_flags(settings.flags_dir).flags["churn-model"])
    audit.record(
        "embedded",
        "churn-model",
        source="decide",
        actor="alice",
        action="ramp",
        what="development strategy ab-test: rollout 10 -> 80",
        why="treatment wins",
        state=doc,
        evidence={"report": str(report)},
    )
    writer = EventWriter(create_engine(settings.event_store_url), 100)
    later = time.time() + 1
    for i in range(10):
        variant = "control" if i % 2 else "treatment"
        writer.record(
            Exposure(
                f"r{i}",
                "churn-model",
                "development",
                variant,
                "churn:v1",
                "strategy_variant",
                200,
                user_id=f"u{i}",
                ts=later,
            )
        )
        if i < 4 or variant == "treatment":
            writer.record(Outcome("retained", 1, request_id=f"r{i}", ts=later))
    writer.close()

    page = client(world).get("/flags/churn-model").text
    assert "alice" in page and "treatment wins" in page
    assert "/reports/churn-model/20261201T100000Z-ab/report.html" in page
    assert "treatment: 100.0%" in page and "of 5 users" in page
    assert "control: 40.0%" in page  # u1 and u3 of u1, u3, u5, u7, u9


# ---------------------------------------------------------------- who may act


def test_without_an_operator_key_nothing_is_offered_and_every_action_is_refused(world) -> None:
    propose(world)
    before = world["flag_file"].read_text()
    app = client(world)
    page = app.get("/").text
    assert 'id="approve-churn-model"' not in page and 'id="rollback-churn-model"' not in page
    assert app.get("/actions/approve/churn-model").status_code == 403
    token = csrf(page)
    assert app.post("/actions/approve/churn-model", data={"csrf": token}).status_code == 403
    assert sign_in(app, "rk_not-a-key").status_code == 403
    assert app.post("/actions/approve/churn-model", data={"csrf": token}).status_code == 403
    assert world["flag_file"].read_text() == before


def test_an_operator_approves_after_confirming_and_the_audit_names_them(world) -> None:
    propose(world)
    key = world["keys"].create("alice")
    app = client(world)
    assert sign_in(app, key).status_code == 302
    page = app.get("/").text
    assert 'id="operator">operator <strong>alice</strong>' in page
    assert 'id="approve-churn-model"' in page
    confirm = app.get("/actions/approve/churn-model")
    assert confirm.status_code == 200 and "ramp churn-model: 40% -&gt; 50%" in confirm.text
    assert "rollout 80 -&gt; 100" in confirm.text, confirm.text
    unchanged = world["flag_file"].read_text()
    # A POST without the session's token (a cross-site form) changes nothing.
    assert app.post("/actions/approve/churn-model", data={}).status_code == 400
    assert world["flag_file"].read_text() == unchanged

    done = app.post("/actions/approve/churn-model", data={"csrf": csrf(confirm.text)})
    assert done.status_code == 302
    assert "rollout: 100" in world["flag_file"].read_text()  # 50% of users on the treatment
    rows = store(world).history("embedded", "churn-model")
    assert [(r.action, r.actor) for r in rows[-2:]] == [("approved", "alice"), ("ramp", "alice")]
    assert "approved by alice" in app.get("/").text  # the flash message


def test_a_bearer_operator_key_works_for_one_request(world) -> None:
    propose(world)
    key = world["keys"].create("script")
    app = client(world)
    assert app.get("/actions/approve/churn-model").status_code == 403
    answer = app.get("/actions/approve/churn-model", headers={"Authorization": f"Bearer {key}"})
    assert answer.status_code == 200 and "approve: ramp churn-model" in answer.text
    assert app.get("/actions/approve/churn-model").status_code == 403  # nothing remembered


def test_an_api_key_of_scope_operate_in_the_selectors_keys_file_operates(world) -> None:
    """By default the console reads ROLLOUT_API_KEYS_FILE: `rollout keys create` makes operators,
    and a key of another scope does not operate."""
    propose(world)
    shared = world["settings"].keys_file
    operator = KeyFile(shared).create("carol", ("operate",))
    writer = KeyFile(shared).create("simulator", ("outcomes", "predict"))
    app = client(world, operator_keys_file=None)
    approve = "/actions/approve/churn-model"
    assert app.get(approve, headers={"Authorization": f"Bearer {writer}"}).status_code == 403
    assert app.get(approve, headers={"Authorization": f"Bearer {operator}"}).status_code == 200


def test_a_refused_action_says_why(world) -> None:
    key = world["keys"].create("alice")
    answer = client(world).get(
        "/actions/approve/churn-model", headers={"Authorization": f"Bearer {key}"}
    )
    assert answer.status_code == 409
    assert "has no promotion waiting for approval" in answer.text


def test_a_read_only_console_refuses_even_an_operator(world) -> None:
    key = world["keys"].create("alice")
    app = client(world, read_only=True)
    assert sign_in(app, key).status_code == 403
    headers = {"Authorization": f"Bearer {key}"}
    assert app.get("/actions/approve/churn-model", headers=headers).status_code == 403
    assert 'id="read-only"' in app.get("/").text


def test_a_revoked_key_ends_the_session(world) -> None:
    key = world["keys"].create("alice")
    app = client(world)
    propose(world)
    sign_in(app, key)
    assert app.get("/actions/approve/churn-model").status_code == 200
    world["keys"].path.write_text(json.dumps({"keys": []}))
    assert app.get("/actions/approve/churn-model").status_code == 403


def test_resume_is_refused_unless_the_guard_is_paused_then_audited(world) -> None:
    key = world["keys"].create("bob")
    app = client(world)
    sign_in(app, key)
    assert app.get("/actions/resume/churn-model").status_code == 409
    store(world).record(
        "embedded",
        "churn-model",
        source="guard",
        actor="rollout-guard",
        action="paused",
        what="a person changed the flag",
    )
    confirm = app.get("/actions/resume/churn-model")
    assert confirm.status_code == 200 and "a person changed the flag" in confirm.text
    assert (
        app.post("/actions/resume/churn-model", data={"csrf": csrf(confirm.text)}).status_code
        == 302
    )
    rows = store(world).history("embedded", "churn-model")
    assert [(r.action, r.actor) for r in rows[-2:]] == [("resumed", "bob"), ("baseline", "bob")]


def test_operator_keys_are_stored_as_hashes_only(world) -> None:
    key = world["keys"].create("alice")
    text = world["keys"].path.read_text()
    assert key not in text and '"operate"' in text
    assert world["keys"].path.stat().st_mode & 0o077 == 0


# ---------------------------------------------------------------- Live


METRICS = """# TYPE selector_requests counter
selector_requests_total{{flag="churn-model",variant="control",bento="churn:v1",status="200"}} {ok}
selector_requests_total{{variant="treatment",bento="churn:v2",status="503"}} {bad}
# TYPE selector_fallbacks counter
selector_fallbacks_total{{variant="treatment",failed_bento="churn:v2",bento="churn:v1"}} {fb}
# TYPE selector_bento_latency_seconds histogram
selector_bento_latency_seconds_bucket{{bento="churn:v1",le="0.01"}} {fast}
selector_bento_latency_seconds_bucket{{bento="churn:v1",le="0.1"}} {ok}
selector_bento_latency_seconds_bucket{{bento="churn:v1",le="+Inf"}} {ok}
selector_bento_latency_seconds_count{{bento="churn:v1"}} {ok}
selector_bento_latency_seconds_sum{{bento="churn:v1"}} 1.0
# TYPE selector_circuit_state gauge
selector_circuit_state{{bento="churn:v1"}} 0
selector_circuit_state{{bento="churn:v2"}} 2
# TYPE selector_event_queue_depth gauge
selector_event_queue_depth 3
"""


@responses.activate
def test_live_counts_what_happened_between_scrapes_per_bento() -> None:
    url = "http://selector.test"
    ready = {"status": "ready", "bentos": {"churn:v1": {"circuit": "closed"}}}
    responses.get(f"{url}/readyz", json=ready)
    responses.get(f"{url}/metrics", body=METRICS.format(ok=100, bad=5, fb=2, fast=50))
    now = [1000.0]
    scraper = SelectorScraper(url, window=300, clock=lambda: now[0])
    scraper.scrape()
    responses.replace(
        responses.GET, f"{url}/metrics", body=METRICS.format(ok=300, bad=15, fb=7, fast=250)
    )
    now[0] = 1060.0
    view = scraper.view()
    rows = {row.bento: row for row in view.bentos}
    assert view.covered_seconds == 60 and view.status == "ready"
    assert rows["churn:v1"].requests == 200 and rows["churn:v1"].errors == 0
    assert rows["churn:v2"].errors == 10 and rows["churn:v2"].fallbacks == 5
    assert rows["churn:v2"].circuit == "open" and rows["churn:v1"].circuit == "closed"
    assert rows["churn:v1"].p50_ms == pytest.approx(5.0)  # 200 new, all under 10 ms: halfway
    assert ("selector_event_queue_depth", 3.0) in view.events


def test_live_says_when_the_selector_does_not_answer(world) -> None:
    page = client(world, selector_url="http://127.0.0.1:9").get("/live")
    assert page.status_code == 200 and "does not answer" in page.text


def test_latency_quantile_interpolates_inside_the_bucket() -> None:
    buckets = [(0.01, 10.0), (0.1, 30.0), (float("inf"), 30.0)]
    assert _quantile(buckets, 0.5) == pytest.approx(32.5)  # rank 15: a quarter into 10-100 ms
    assert _quantile([(float("inf"), 0.0)], 0.5) is None
