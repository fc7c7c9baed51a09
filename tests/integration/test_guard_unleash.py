"""The rollout guard end to end: a real Unleash server, real `bentoml serve` bentos, the
selector over HTTP, simulated users with outcomes from the known ground truth, and the real
papermill A/B report at each step.

(a) a deliberately bad churn:v3 canaried at 5% is rolled back automatically; the test counts
    the users it served and holds that count to a bound derived from the guard's interval,
    the SDK's refresh interval and the measured traffic rate;
(b) churn:v2 against churn:v1 climbs every step to 100% (the first promotion waits for a
    person's approval) and becomes the default, with an A/B report at each step;
(c) a person's change in Unleash pauses the guard; `rollout decide apply` changes the server
    and flags/ alike, and a stale decision is refused.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import sqlalchemy as sa
import urllib3
import yaml
from click.testing import CliRunner

from service.analysis.reports import run_ab_report
from service.cli import main
from service.flags.audit import AuditStore
from service.flags.definitions import load_flags
from service.flags.state import ServerFlag
from service.flags.sync import create_context_fields, create_flag
from service.flags.unleash_admin import UnleashAdmin
from service.harness.simulate import simulate
from service.processes import free_port, selector_process
from service.rollout.decisions import approve
from service.rollout.guard import Guard
from service.rollout.identity import create_guard_token
from service.rollout.notify import Notifier
from service.store.events import create_engine, exposures

pytestmark = pytest.mark.integration

REFRESH = 1  # the selector's Unleash refresh interval, seconds
INTERVAL = 2.0  # the guard's interval in the background test, seconds
BENTOS = {"churn:v1", "churn:v2", "churn:v3"}
# Users at the 50% step: v2's planted lift over v1 is +3.6 pp on ~80% retention; the guard's
# report decides on the always-valid mSPRT p-value, which needs a few thousand users per arm.
USERS_AT_50 = 8000

BAD_CANARY = """
flag: NAME
default: churn:v2
variants: {canary: churn:v3}
environments:
  development:
    enabled: true
    strategies:
      - name: canary
        rollout: 5
        variants: {canary: 100}
ramp:
  environment: development
  strategy: canary
  control: default
  treatment: canary
  steps: [5, 25, 50, 100]
  bake_seconds: 3600
  min_users: 50
  guardrails: {min_requests: 50}
"""

GOOD_CANARY = """
flag: NAME
default: churn:v1
variants: {canary: churn:v2}
environments:
  development:
    enabled: true
    strategies:
      - name: canary
        rollout: 50
        variants: {canary: 100}
ramp:
  environment: development
  strategy: canary
  control: default
  treatment: canary
  steps: [50, 100]
  bake_seconds: 0
  min_users: 300
  approval: true
"""


@pytest.fixture
def selector_url(settings, unleash_server, bento_urls, bad_bento, tmp_path):
    """`rollout serve` (gunicorn, 2 workers) on Unleash with a backend token, with churn:v1,
    v2 and v3, writing to the test's event store."""
    env = {
        "ROLLOUT_DATA_DIR": str(settings.data_dir),
        "ROLLOUT_BENTO_URLS": f"{bento_urls},{bad_bento.tag}={bad_bento.url}",
        "UNLEASH_URL": unleash_server.url,
        "UNLEASH_API_TOKEN": unleash_server.backend_token,
        "ROLLOUT_REFRESH_INTERVAL": str(REFRESH),
    }
    process = selector_process(free_port(), tmp_path / "selector.log", env)
    process.start().wait_ready(60)
    try:
        yield process.ready_url.removesuffix("/readyz")
    finally:
        process.stop()


def flag_served(url: str, flag: str, probes: int = 30) -> bool:
    """Every gunicorn worker knows the flag: each probe on a new connection (so they spread
    over the workers, which refresh from Unleash on their own) answers 200."""
    return all(
        urllib3.request(
            "GET", f"{url}/v1/models/{flag}/resolve?userId=probe", headers={"Connection": "close"}
        ).status
        == 200
        for _ in range(probes)
    )


def exposures_written(settings, flag: str, expected: int) -> None:
    """Wait until the selector's background writer has stored `expected` exposures of `flag`."""
    engine = create_engine(settings.event_store_url)
    query = sa.select(sa.func.count()).where(exposures.c.flag == flag, ~exposures.c.shadow)

    def written() -> bool:
        with engine.connect() as conn:
            return conn.execute(query).scalar() >= expected

    wait_for(written, 30, f"{expected} exposures of {flag} in the store")


@pytest.fixture
def put_flag(unleash_admin, flags_dir):
    """Write a flag file and create the flag on the server (fresh for each test session).

    Names are fixed, not random: Unleash buckets users by hashing the flag name with the user
    id, the simulated users and their outcome streams are fixed too, so each test sees the
    same traffic on every run (the A/B reports' numbers included).
    """

    def put(template: str, name: str):
        folder = flags_dir(f"{name}.yaml", template.replace("NAME", name))
        flag_set = load_flags(folder, BENTOS)
        create_context_fields(unleash_admin, flag_set)
        create_flag(unleash_admin, flag_set.flags[name], "development")
        return name, folder, flag_set

    return put


class Webhook:
    """A chat tool's webhook on loopback: records every JSON body posted to it."""

    def __init__(self) -> None:
        bodies = self.bodies = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"


def wait_for(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)  # polling interval, not a fixed wait
    raise AssertionError(f"{what} not seen within {timeout:.0f} s")


def resolve_all(url: str, flag: str, users: int = 300) -> Counter:
    pool = urllib3.PoolManager()
    decisions = Counter()
    for i in range(users):
        # A new connection each: the probes spread over the workers, which refresh separately.
        body = pool.request(
            "GET",
            f"{url}/v1/models/{flag}/resolve?userId=probe-{i}",
            headers={"Connection": "close"},
        ).json()
        decisions[(body.get("variant"), body.get("bento"))] += 1
    return decisions


def guard_for(flag, folder, settings, unleash_admin, notifier=None) -> Guard:
    """A new guard on the flag's server state; no state carries over between instances."""
    flag_set = load_flags(folder, BENTOS)
    definition = flag_set.flags[flag]
    store = AuditStore(create_engine(settings.event_store_url))

    def report(**options):
        # The report decides on the goal metric alone here: its latency non-inferiority test
        # (v2's gradient boosting against v1's logistic regression, +20% margin) flips from run
        # to run on this shared 2-core machine. The guard's own live guardrails still apply.
        return run_ab_report(settings, progress=print, **{**options, "guardrails": False})

    location = ServerFlag(unleash_admin, definition, flag_set)
    return Guard(definition, location, store, report, notifier=notifier, settings=settings)


def test_a_bad_canary_is_rolled_back_automatically(
    settings, selector_url, put_flag, unleash_admin
) -> None:
    url = selector_url
    flag, folder, _ = put_flag(BAD_CANARY, "churn-bad-canary")
    wait_for(lambda: flag_served(url, flag), 15, "the flag in the selector")
    webhook = Webhook()
    notifier = Notifier(webhook.url, backoff=0.05)
    # The guard acts as its own Unleash user, so the event log names it.
    guard_admin = UnleashAdmin(unleash_admin.url, create_guard_token(unleash_admin))
    guard = guard_for(flag, folder, settings, guard_admin, notifier)
    stop = threading.Event()
    guarding = threading.Thread(target=guard.run, args=(INTERVAL, stop), daemon=True)
    guarding.start()
    started = time.time()
    try:
        summary = simulate(url, flag, 2500, concurrency=8, progress=print)
    finally:
        stop.set()
        guarding.join(30)
        notifier.close()
    exposures_written(settings, flag, 2500)

    store = AuditStore(create_engine(settings.event_store_url))
    rollbacks = [e for e in store.entries(flag) if e.action == "rollback"]
    assert len(rollbacks) == 1, [(e.action, e.what) for e in store.entries(flag)]
    assert rollbacks[0].actor == "rollout-guard" and "fallback_rate" in rollbacks[0].why
    assert not summary.errors, summary.describe()  # zero 5xx: the default served the failures

    with create_engine(settings.event_store_url).connect() as conn:
        rows = conn.execute(
            sa.select(exposures.c.ts, exposures.c.user_id, exposures.c.variant).where(
                exposures.c.flag == flag, ~exposures.c.shadow
            )
        ).all()
    duration = max(r.ts for r in rows) - started
    rate = len(rows) / duration
    canary = [r for r in rows if r.variant == "canary"]
    exposed = len({r.user_id for r in canary})
    # After the 50th canary request, one guard interval to notice, one refresh to reach the
    # selector, a second of slack; x3 for the burstiness of a 5% share of a finite stream.
    bound = 50 + 3 * 0.05 * rate * (INTERVAL + REFRESH + 1)
    print(
        f"\nbad canary: {exposed} users exposed of {len(rows)} ({rate:.0f} req/s); rollback "
        f"{rollbacks[0].ts - started:.1f} s after traffic began; bound {bound:.0f}"
    )
    assert exposed <= bound
    late = [r for r in canary if r.ts > rollbacks[0].ts + REFRESH + 2]
    assert not late, f"{len(late)} canary exposures after the rollback reached the selector"

    server_doc = ServerFlag(unleash_admin, *_definition(folder, flag)).read()
    assert server_doc["environments"]["development"]["strategies"][0]["rollout"] == 0
    file_doc = yaml.safe_load((folder / f"{flag}.yaml").read_text())
    assert file_doc["environments"]["development"]["strategies"][0]["rollout"] == 0
    assert [b["action"] for b in webhook.bodies] == ["rollback"]
    assert webhook.bodies[0]["details"]["checks"]  # the evidence travels with it
    # Unleash's own log names the guard, and the flag links to the evidence it acted on.
    strategy_events = [e for e in unleash_admin.get_events(flag) if "strategy" in e.type]
    assert strategy_events[0].created_by == "rollout-guard", strategy_events[0]
    links = unleash_admin.feature_links("default", flag)
    assert len(links) == 1 and links[0].url.endswith("evidence.json"), links
    evidence = json.loads(Path(links[0].url.removeprefix("file://")).read_text())
    assert evidence["action"] == "rollback" and evidence["checks"]


def _definition(folder: Path, flag: str):
    flag_set = load_flags(folder, BENTOS)
    return flag_set.flags[flag], flag_set


def test_a_good_version_climbs_every_step_and_becomes_the_default(
    settings, selector_url, put_flag, unleash_admin
) -> None:
    url = selector_url
    flag, folder, _ = put_flag(GOOD_CANARY, "churn-climb")
    wait_for(lambda: flag_served(url, flag), 15, "the flag in the selector")
    store = AuditStore(create_engine(settings.event_store_url))
    first = 0

    def traffic(users: int) -> None:
        nonlocal first
        summary = simulate(url, flag, users, concurrency=16, first_user=first, progress=print)
        assert not summary.errors, summary.describe()
        first += users
        exposures_written(settings, flag, first)

    guard_for(flag, folder, settings, unleash_admin).tick()  # baseline at 50%
    traffic(USERS_AT_50)
    status = guard_for(flag, folder, settings, unleash_admin).tick()
    assert status.state == "pending", status  # approval mode: a person decides
    definition, flag_set = _definition(folder, flag)
    moved, _ = approve(definition, ServerFlag(unleash_admin, definition, flag_set), store, "alice")
    assert (moved.from_step, moved.to_step) == (50, 100)
    wait_for(lambda: resolve_all(url, flag) == {("canary", "churn:v2"): 300}, 15, "100%")

    # From here on promotions are automatic: the flag's file says so, a new guard reads it.
    path = folder / f"{flag}.yaml"
    path.write_text(path.read_text().replace("approval: true", "approval: false"))
    traffic(400)
    status = guard_for(flag, folder, settings, unleash_admin).tick()
    assert status.state == "shipped", status
    wait_for(lambda: resolve_all(url, flag) == {("default", "churn:v2"): 300}, 15, "the ship")

    entries = store.entries(flag)
    moves = [(e.actor, e.action) for e in entries if e.action in ("ramp", "ship", "approved")]
    assert moves == [("alice", "approved"), ("alice", "ramp"), ("rollout-guard", "ship")]
    reports = sorted((settings.reports_dir / flag).glob("*/decision.json"))
    decisions = [json.loads(p.read_text()) for p in reports]
    assert [(d["current_step"], d["recommendation"]) for d in decisions] == [(50, "ramp")], [
        d["reasons"] for d in decisions
    ]
    assert all((p.parent / "report.html").exists() for p in reports)
    file_doc = yaml.safe_load(path.read_text())
    assert file_doc["default"] == "churn:v2"


def test_a_persons_change_pauses_the_guard_and_decide_apply_changes_server_and_file(
    settings, put_flag, unleash_admin, unleash_server, monkeypatch, tmp_path
) -> None:
    # churn:v2 canaried over churn:v1: bentos `rollout flags plan` knows from bentos/.
    template = BAD_CANARY.replace("churn:v2", "churn:v1").replace("v3", "v2")
    flag, folder, _ = put_flag(template, "churn-paused")
    guard_for(flag, folder, settings, unleash_admin).tick()  # baseline
    strategy = unleash_admin.list_strategies("default", flag, "development")[0]
    strategy["parameters"]["rollout"] = "10"
    unleash_admin.update_strategy("default", flag, "development", strategy["id"], strategy)
    status = guard_for(flag, folder, settings, unleash_admin).tick()
    assert status.state == "paused" and "rollout: 5 -> 10" in status.message

    monkeypatch.setenv("UNLEASH_ADMIN_URL", unleash_server.url)
    monkeypatch.setenv("UNLEASH_ADMIN_TOKEN", unleash_server.admin_token)
    runner = CliRunner()
    configured = replace(settings, flags_dir=folder)

    def cli(*args: str):
        return runner.invoke(main, list(args), obj={"settings": configured})

    stale = tmp_path / "stale.json"
    stale.write_text(json.dumps(_decision(flag, "rollback", 5, "2020-01-01T00:00:00Z")))
    result = cli("decide", "apply", str(stale))
    assert result.exit_code == 1 and "is stale" in result.output, result.output

    wrong_step = tmp_path / "wrong-step.json"
    wrong_step.write_text(json.dumps(_decision(flag, "ramp", 5, _now(), next_step=25)))
    result = cli("decide", "apply", str(wrong_step))
    assert result.exit_code == 1 and "made at step 5%" in result.output, result.output

    good = tmp_path / "rollback.json"
    good.write_text(json.dumps(_decision(flag, "rollback", 10, _now())))
    result = cli("decide", "apply", str(good), "--actor", "carol")
    assert result.exit_code == 0, result.output
    assert "rollback" in result.output and "rollout 10 -> 0" in result.output
    server_strategy = unleash_admin.list_strategies("default", flag, "development")[0]
    assert server_strategy["parameters"]["rollout"] == "0"
    assert "rollout: 0" in (folder / f"{flag}.yaml").read_text()
    # issue 13: the applied decision links its evidence on the flag (it was computed and dropped)
    links = {link.title: link.url for link in unleash_admin.feature_links("default", flag)}
    assert links.get("rollout: evidence of the last change") == good.resolve().as_uri(), links

    plan = cli("flags", "plan", "--dir", str(folder))
    assert plan.exit_code == 0, plan.output
    assert f"flag {flag} changed on the server" not in plan.output  # our write is the baseline
    audit = cli("audit", flag)
    assert "carol" in audit.output and "rollout 10 -> 0" in audit.output
    assert guard_for(flag, folder, settings, unleash_admin).tick().state == "paused"

    # The same through the commands an operator runs, with the guard's own token.
    token_file = tmp_path / "guard-token"
    made = cli("guard", "token", "--out", str(token_file))
    assert made.exit_code == 0 and token_file.stat().st_mode & 0o777 == 0o600, made.output
    assert token_file.read_text().strip() not in made.output  # never printed
    monkeypatch.setenv("ROLLOUT_GUARD_TOKEN_FILE", str(token_file))
    once = cli("guard", "run", flag, "--once")
    assert once.exit_code == 0 and "paused" in once.output, once.output
    status = json.loads(cli("guard", "status", flag).output)
    assert status["state"] == "paused"
    assert cli("guard", "resume", flag, "--actor", "dave").exit_code == 0
    once = cli("guard", "run", flag, "--once")
    assert "idle" in once.output, once.output  # rolled back to 0%: nothing to guard


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _decision(flag: str, recommendation: str, step: float, at: str, next_step=None) -> dict:
    return {
        "flag": flag,
        "kind": "ab",
        "arms": [{"variant": "default"}, {"variant": "canary"}],
        "recommendation": recommendation,
        "current_step": step,
        "next_step": next_step,
        "reasons": [f"test decision: {recommendation}"],
        "generated_at": at,
    }
