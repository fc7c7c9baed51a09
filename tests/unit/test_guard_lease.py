"""The guard lease on SQLite with a hand-moved clock; the same on PostgreSQL with real processes
and kill -9 in tests/integration/test_guard_lease_postgres.py."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from service.config import Settings
from service.flags.audit import AuditStore
from service.flags.definitions import load_flags
from service.flags.state import EmbeddedFlag
from service.rollout.guard import Guard
from service.rollout.lease import FlagLease
from service.store.events import create_engine

LEASE = 30.0


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def leases(settings: Settings):
    engine = create_engine(settings.event_store_url)
    clock = Clock()
    made: list[FlagLease] = []

    def make(holder: str, flag: str = "churn-model") -> FlagLease:
        made.append(FlagLease(engine, flag, LEASE, holder=holder, clock=clock))
        return made[-1]

    yield make, clock
    for lease in made:  # stops their heartbeat threads
        lease.release()
    engine.dispose()


def test_one_holder_at_a_time_until_the_lease_runs_out(leases) -> None:
    make, clock = leases
    first, second = make("guard-a"), make("guard-b")
    assert first.acquire() and first.held
    assert not second.acquire() and not second.held
    assert second.describe().startswith("standby: guard-a holds the lease until ")
    clock.now += LEASE - 1
    assert first.acquire()  # renewed: a new lease time from now
    clock.now += LEASE - 1
    assert not second.acquire()
    clock.now += 2  # the holder stopped renewing (dead) and its lease ran out
    assert second.acquire()
    assert not first.acquire() and not first.held  # and the old leader knows it lost
    state = second.state()
    assert (state.holder, state.acquired_at) == ("guard-b", clock.now)


def test_a_renewal_keeps_the_tenure_a_takeover_starts_a_new_one(leases) -> None:
    make, clock = leases
    lease = make("guard-a")
    lease.acquire()
    taken = clock.now
    clock.now += 10
    lease.acquire()
    assert lease.state().acquired_at == taken
    assert lease.state().expires_at == clock.now + LEASE


def test_leases_are_per_flag(leases) -> None:
    make, _ = leases
    assert make("guard-a", "flag-one").acquire()
    assert make("guard-b", "flag-two").acquire()
    assert not make("guard-b", "flag-one").acquire()


def test_release_hands_over_at_once(leases) -> None:
    make, _ = leases
    first, second = make("guard-a"), make("guard-b")
    first.acquire()
    first.release()
    assert second.acquire()


def test_a_standby_sleeps_until_just_after_the_lease_would_expire(leases) -> None:
    make, clock = leases
    first, second = make("guard-a"), make("guard-b")
    first.acquire()
    assert first.wait(5.0) == 5.0  # the leader keeps its interval
    second.acquire()
    assert second.wait(60.0) == pytest.approx(LEASE + 0.05)
    clock.now += LEASE - 2
    assert second.wait(60.0) == pytest.approx(2.05)
    assert second.wait(1.0) == 1.0


def test_a_standby_guard_does_nothing_and_says_so(
    settings: Settings, flags_dir, tmp_path: Path, leases
) -> None:
    make, _ = leases
    folder = flags_dir(
        "churn-canary.yaml",
        """
        flag: churn-canary
        default: churn:v2
        variants: {canary: churn:v3}
        environments:
          production:
            enabled: true
            strategies: [{name: canary, rollout: 5, variants: {canary: 100}}]
        ramp: {environment: production, strategy: canary, control: default, treatment: canary,
               steps: [5, 50, 100], bake_seconds: 0, min_users: 20}
        """,
    )
    configured = replace(settings, flags_dir=folder)
    store = AuditStore(create_engine(configured.event_store_url))
    flag_set = load_flags(folder)
    definition = flag_set.flags["churn-canary"]
    make("guard-a", "churn-canary").acquire()
    standby_lease = make("guard-b", "churn-canary")
    guard = Guard(
        definition,
        EmbeddedFlag(definition, flag_set),
        store,
        lambda **_: None,
        status_dir=tmp_path / "status",
        lease=standby_lease,
    )
    status = guard.tick()
    assert status.state == "standby"
    assert "guard-a holds the lease" in status.message
    assert store.history("embedded", "churn-canary") == []  # not even a baseline
    saved = json.loads((tmp_path / "status" / "churn-canary.json").read_text())
    assert saved["state"] == "standby"
    standby_lease.release()
