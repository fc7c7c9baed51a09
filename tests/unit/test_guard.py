"""The guard's decisions, one tick at a time, on flags/ and a SQLite event store.

Exposures are written straight into the store, and the A/B report is a stand-in that returns
a chosen decision, so each rule is shown on its own. The same controller runs against a real
Unleash, real bentos and real reports in tests/integration/test_guard_unleash.py.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml

from service.analysis.guardrails import arm_traffic, check_guardrails, worse_p_value
from service.flags.audit import AuditStore
from service.flags.definitions import load_flags
from service.flags.model import Guardrails
from service.flags.state import EmbeddedFlag
from service.rollout.guard import Guard, resume
from service.store.events import create_engine, exposures

FLAG = """\
flag: churn-canary
default: churn:v2
variants: {canary: churn:v3}
environments:
  production:
    enabled: true
    strategies:
      - name: canary
        rollout: 5
        variants: {canary: 100}
ramp:
  environment: production
  strategy: canary
  control: default
  treatment: canary
  steps: [5, 50, 100]
  bake_seconds: 0
  min_users: 20
  approval: APPROVAL
  guardrails: {min_requests: 20}
"""


@dataclass
class FakeReport:
    """Stands in for the papermill A/B report: returns `recommendation` for the step asked."""

    recommendation: str = "ramp"
    calls: int = 0

    def __call__(self, **options):
        self.calls += 1
        steps = [float(s) for s in options["ramp_steps"].split(",")]
        step = options["current_step"]
        decision = {
            "flag": options["flag"],
            "kind": "ab",
            "arms": [{"variant": options["control"]}, {"variant": options["treatment"]}],
            "recommendation": self.recommendation,
            "current_step": step,
            "next_step": next((s for s in steps if s > step), None),
            "reasons": [f"stand-in report says {self.recommendation}"],
            "generated_at": datetime.now(UTC).isoformat(),
        }
        return type("Result", (), {"decision": decision, "output_dir": Path("/reports/x")})()


@pytest.fixture
def world(settings, flags_dir):
    def make(approval: bool = False, report: FakeReport | None = None):
        folder = flags_dir("churn-canary.yaml", FLAG.replace("APPROVAL", str(approval).lower()))
        configured = replace(settings, flags_dir=folder)
        engine = create_engine(configured.event_store_url)
        store = AuditStore(engine)
        report = report or FakeReport()

        def guard() -> Guard:  # a new guard each time: nothing may live in its memory
            flag_set = load_flags(folder)
            definition = flag_set.flags["churn-canary"]
            return Guard(definition, EmbeddedFlag(definition, flag_set), store, report)

        def traffic(variant: str, users: int, *, fallback_every: int = 0, status: int = 200):
            rows = [
                {
                    "ts": time.time(),
                    "request_id": f"{variant}-{time.monotonic_ns()}-{i}",
                    "flag": "churn-canary",
                    "environment": "production",
                    "user_id": f"{variant}-user-{i}",
                    "variant": variant,
                    "bento": "churn:v3" if variant == "canary" else "churn:v2",
                    "reason": "strategy_variant",
                    "status": status,
                    "latency_ms": 5.0,
                    "prediction": 0.1 + (i % 10) / 20,
                    "shadow": False,
                    "fallback": bool(fallback_every and i % fallback_every == 0),
                }
                for i in range(users)
            ]
            with engine.begin() as conn:
                conn.execute(exposures.insert(), rows)

        def step() -> int:
            doc = yaml.safe_load((folder / "churn-canary.yaml").read_text())
            return doc["environments"]["production"]["strategies"][0]["rollout"]

        return guard, traffic, step, store, folder

    return make


def test_first_tick_records_a_baseline_then_holds_without_data(world) -> None:
    guard, _traffic, step, _store, _ = world()
    assert guard().tick().message == "baseline"
    status = guard().tick()
    assert status.state == "holding" and "users canary 0 / control 0 of 20" in status.message
    assert step() == 5


def test_a_guardrail_breach_rolls_back_at_once(world) -> None:
    guard, traffic, step, store, _ = world(report=FakeReport("ramp"))
    guard().tick()
    traffic("default", 400)
    traffic("canary", 100, fallback_every=4)  # 25% of canary requests needed the default
    status = guard().tick()
    assert status.state == "rolled-back", status
    assert "fallback_rate" in status.message and step() == 0
    entries = store.entries("churn-canary")
    assert entries[-1].action == "rollback" and entries[-1].actor == "rollout-guard"


def test_a_clean_step_promotes_on_the_reports_word_and_ships_at_the_end(world) -> None:
    report = FakeReport("ramp")
    guard, traffic, step, _store, folder = world(report=report)
    guard().tick()
    for expected in (50, 100):
        traffic("default", 100)
        traffic("canary", 100)
        status = guard().tick()
        assert status.state == "ramped", status
        assert step() == expected
    traffic("default", 10)  # control is measured since the rollout started
    traffic("canary", 100)
    status = guard().tick()
    assert status.state == "shipped", status
    doc = yaml.safe_load((folder / "churn-canary.yaml").read_text())
    assert doc["default"] == "churn:v3" and step() == 0
    assert report.calls == 2  # at 100% there is no control left to A/B against


def test_the_report_saying_hold_holds(world) -> None:
    guard, traffic, step, _store, _ = world(report=FakeReport("hold"))
    guard().tick()
    traffic("default", 100)
    traffic("canary", 100)
    status = guard().tick()
    assert status.state == "holding" and "report says hold" in status.message
    assert step() == 5


def test_approval_mode_records_a_pending_promotion_that_a_person_approves(world) -> None:
    guard, traffic, step, store, folder = world(approval=True)
    guard().tick()
    traffic("default", 100)
    traffic("canary", 100)
    assert guard().tick().state == "pending"
    assert guard().tick().state == "pending" and step() == 5  # waits, does not repeat
    from service.rollout.decisions import approve

    flag_set = load_flags(folder)
    definition = flag_set.flags["churn-canary"]
    moved, diff = approve(definition, EmbeddedFlag(definition, flag_set), store, "alice")
    assert (moved.action, moved.to_step) == ("ramp", 50) and step() == 50
    assert "rollout: 50" in diff
    actors = [(e.actor, e.action) for e in store.entries("churn-canary")]
    assert ("alice", "approved") in actors and ("alice", "ramp") in actors


def test_a_persons_change_pauses_the_guard_until_resumed(world) -> None:
    guard, traffic, step, store, folder = world(report=FakeReport("ramp"))
    guard().tick()
    path = folder / "churn-canary.yaml"
    path.write_text(path.read_text().replace("rollout: 5", "rollout: 10"))  # by hand
    status = guard().tick()
    assert status.state == "paused" and "rollout: 5 -> 10" in status.message
    traffic("default", 100)
    traffic("canary", 100)
    assert guard().tick().state == "paused" and step() == 10  # it does not fight the person
    flag_set = load_flags(folder)
    resume(
        store,
        "embedded",
        "churn-canary",
        "bob",
        EmbeddedFlag(flag_set.flags["churn-canary"], flag_set).read(),
    )
    traffic("default", 100)
    traffic("canary", 100)
    assert guard().tick().state == "ramped" and step() == 50


def test_rate_guardrails_need_significance_not_just_a_bad_streak() -> None:
    # 1 error in 20 canary requests vs none of 1000: 5% is over a 2% margin, but one request
    # proves little. Exactly: the one error lands among the canary's 20 of 1020 by chance.
    assert worse_p_value(1, 20, 0, 1000) == pytest.approx(20 / 1020)
    assert worse_p_value(1, 20, 0, 1000) > 0.01
    assert worse_p_value(20, 200, 0, 2000) < 1e-10
    assert worse_p_value(0, 100, 0, 100) == 1.0


def test_no_guardrail_can_breach_before_the_minimum_sample(world, settings) -> None:
    engine = create_engine(settings.event_store_url)
    with engine.begin() as conn:
        conn.execute(sa.text("select 1"))
    canary = arm_traffic(engine, "nothing", "canary", 0)
    control = arm_traffic(engine, "nothing", "default", 0)
    assert check_guardrails(canary, control, Guardrails()) == []


class Unreachable:
    """A flag home whose server is down: every read fails like the Admin API client does."""

    server = "http://127.0.0.1:9"

    def read(self):
        from service.errors import UnleashAdminError

        raise UnleashAdminError("cannot reach the Unleash Admin API at http://127.0.0.1:9")

    def write(self, move):
        raise AssertionError("nothing may be written while the server cannot be read")

    def link(self, title, url):
        raise AssertionError("no link without a change")


def test_an_unreachable_server_is_an_error_status_with_back_off(world, tmp_path) -> None:
    _guard, _traffic, _step, store, folder = world()
    definition = load_flags(folder).flags["churn-canary"]
    guard = Guard(definition, Unreachable(), store, FakeReport(), status_dir=tmp_path / "guard")
    first, second = guard.tick(), guard.tick()
    assert (first.state, second.state) == ("error", "error")
    assert "cannot reach" in second.message and second.failures_in_a_row == 2
    saved = json.loads((tmp_path / "guard" / "churn-canary.json").read_text())
    assert saved["state"] == "error" and saved["failures_in_a_row"] == 2
    waits = []

    class Stop:
        def is_set(self) -> bool:
            return len(waits) >= 3

        def wait(self, seconds: float) -> None:
            waits.append(seconds)

    guard.run(1.0, Stop())
    assert waits == [8.0, 16.0, 32.0]  # doubling from the 2 failures already seen


def test_latency_compares_only_with_control_over_the_same_window() -> None:
    from service.analysis.guardrails import ArmTraffic

    def arm(name: str, requests: int, p99: float) -> ArmTraffic:
        return ArmTraffic(name, requests, requests, 0, 0, p99, ())

    limits = Guardrails(prediction_psi=None)
    canary, earlier = arm("canary", 400, 90.0), arm("default", 4000, 30.0)
    # At 100% no control is served alongside: an earlier, quieter window says nothing.
    names = [c.name for c in check_guardrails(canary, earlier, limits, arm("default", 0, 0))]
    assert names == ["error_rate", "fallback_rate"]
    slow = check_guardrails(canary, earlier, limits, arm("default", 400, 30.0))[-1]
    assert (slow.name, slow.breached) == ("latency_p99_ratio", True)
    assert "same window" in slow.detail
