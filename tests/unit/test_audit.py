"""The audit trail: applies and Unleash events in one table, with exposures around each."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from service.flags.audit import APPLY, UNLEASH, AuditStore, describe_event
from service.flags.unleash_admin import Event
from service.store.events import create_engine, exposures

SERVER = "http://unleash.test"


@pytest.fixture
def store(tmp_path: Path) -> AuditStore:
    return AuditStore(create_engine(f"sqlite:///{tmp_path / 'events.db'}"))


def event(event_id: int, created_at: str, **fields: Any) -> Event:
    raw = {
        "id": event_id,
        "type": "feature-strategy-update",
        "createdAt": created_at,
        "createdBy": "alice@example.com",
        "featureName": "churn-model",
        "environment": "development",
        **fields,
    }
    return Event.from_api(raw)


def add_exposures(store: AuditStore, *timestamps: float, shadow: bool = False) -> None:
    row = {"request_id": "r", "flag": "churn-model", "environment": "development"}
    rows = [
        {**row, "ts": ts, "variant": "v", "reason": "x", "status": 200, "shadow": shadow}
        for ts in timestamps
    ]
    with store.engine.begin() as conn:
        conn.execute(sa.insert(exposures), rows)


def test_last_applied_state_is_the_newest_apply_to_that_server(store: AuditStore) -> None:
    assert store.last_applied_state(SERVER, "churn-model") is None
    store.record_apply(SERVER, "churn-model", "bob", "start", ["create flag"], {"rollout": 10})
    store.record_apply(SERVER, "churn-model", "bob", "ramp", ["update"], {"rollout": 50})
    store.record_apply("http://other.test", "churn-model", "bob", "", [], {"rollout": 99})
    assert store.last_applied_state(SERVER, "churn-model") == {"rollout": 50}


def test_unleash_events_are_copied_once(store: AuditStore) -> None:
    events = [event(1, "2026-11-25T10:00:00.000Z"), event(2, "2026-11-25T11:00:00.000Z")]
    assert store.record_unleash_events(SERVER, events) == 2
    assert store.record_unleash_events(SERVER, [*events, event(3, "2026-11-25T12:00:00Z")]) == 1
    entries = store.entries("churn-model")
    assert [(e.source, e.actor) for e in entries] == [(UNLEASH, "alice@example.com")] * 3
    # Events carry no reason, and never become a drift baseline.
    assert store.last_applied_state(SERVER, "churn-model") is None


def test_entries_count_exposures_before_and_after_each_change(store: AuditStore) -> None:
    first, second = 1_000.0, 2_000.0
    add_exposures(store, 500, 600, 1_500)  # 2 before the first change, 1 between
    add_exposures(store, 2_500, 2_600, 2_700)  # 3 after the second
    add_exposures(store, 1_600, shadow=True)  # shadow traffic served no one: not counted
    store.record_unleash_events(SERVER, [event(1, "1970-01-01T00:16:40Z")])  # ts 1000
    store.record_unleash_events(SERVER, [event(2, "1970-01-01T00:33:20Z")])  # ts 2000
    entries = store.entries("churn-model")
    assert [e.ts for e in entries] == [first, second]
    assert [(e.exposures_before, e.exposures_after) for e in entries] == [(2, 1), (1, 3)]


def test_an_apply_records_who_what_and_why(store: AuditStore) -> None:
    store.record_apply(SERVER, "churn-model", "bob", "A/B passed", ["update a", "update b"], {})
    [entry] = store.entries("churn-model")
    assert (entry.source, entry.actor, entry.why, entry.action) == (
        APPLY,
        "bob",
        "A/B passed",
        APPLY,
    )
    assert entry.what == "update a\nupdate b"


@pytest.mark.parametrize(
    ("fields", "text"),
    [
        (
            {
                "data": {"title": "canary", "parameters": {"rollout": "30"}},
                "preData": {"title": "canary", "parameters": {"rollout": "100"}},
            },
            "feature-strategy-update 'canary' in development: rollout 100% -> 30%",
        ),
        (
            {"type": "feature-environment-disabled", "data": None},
            "feature-environment-disabled in development",
        ),
        (
            {
                "type": "feature-strategy-add",
                "data": {"title": "ab", "parameters": {"rollout": "80"}},
            },
            "feature-strategy-add 'ab' in development: rollout 80%",
        ),
        (
            {"type": "feature-created", "environment": None, "data": {"name": "churn-model"}},
            "feature-created",
        ),
    ],
    ids=["rollout-change", "switch-off", "strategy-added", "created"],
)
def test_events_described_in_one_line(fields: dict[str, Any], text: str) -> None:
    assert describe_event(event(1, "2026-11-25T10:00:00Z", **fields)) == text
