"""The engine shortcut answers and counts exactly as UnleashClient's own get_variant.

Both run on flag clients holding the same feature state: rollouts with stickiness, constraints
(string, number, date), segments, flag-level variants, a disabled flag, an unknown flag, and a
custom strategy (which the shortcut leaves to the SDK).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from UnleashClient import UnleashClient
from UnleashClient._context import _ContextEnricher

from service.config import Settings
from service.serving import engine_variants
from service.serving.engine_variants import EngineVariants, engine_context, utc_now_text
from service.serving.flag_client import FlagClient

V2 = {"type": "string", "value": "churn:v2"}


def strategy(name: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "parameters": extra.pop("parameters", {}), **extra}


FEATURES: list[dict[str, Any]] = [
    {
        "name": "canary",
        "enabled": True,
        "strategies": [
            strategy(
                "flexibleRollout",
                parameters={"rollout": "30", "stickiness": "default", "groupId": "canary"},
                variants=[{"name": "v2", "weight": 1000, "payload": V2, "stickiness": "default"}],
            )
        ],
    },
    {
        "name": "by-region",
        "enabled": True,
        "strategies": [
            strategy(
                "default",
                constraints=[{"contextName": "region", "operator": "IN", "values": ["eu"]}],
                variants=[
                    {"name": "a", "weight": 500, "stickiness": "userId"},
                    {
                        "name": "b",
                        "weight": 500,
                        "stickiness": "userId",
                        "payload": {"type": "json", "value": '{"bento": "churn:v2"}'},
                    },
                ],
            )
        ],
    },
    {
        "name": "veterans",
        "enabled": True,
        "strategies": [
            strategy(
                "default",
                constraints=[{"contextName": "tenure", "operator": "NUM_GT", "value": "12"}],
            )
        ],
        "variants": [{"name": "old", "weight": 1000, "payload": V2}],
    },
    {
        "name": "dated",
        "enabled": True,
        "strategies": [
            strategy(
                "default",
                constraints=[
                    {
                        "contextName": "currentTime",
                        "operator": "DATE_AFTER",
                        "value": "2020-01-01T00:00:00.000Z",
                    }
                ],
            )
        ],
    },
    {
        "name": "enterprise",
        "enabled": True,
        "strategies": [strategy("default", segments=[1])],
        "variants": [
            {"name": "x", "weight": 500, "stickiness": "default"},
            {"name": "y", "weight": 500, "stickiness": "default"},
        ],
    },
    {"name": "off", "enabled": False, "strategies": [strategy("default")]},
    {"name": "custom", "enabled": True, "strategies": [strategy("myCustom")]},
]
SEGMENTS = [
    {
        "id": 1,
        "constraints": [{"contextName": "segment", "operator": "IN", "values": ["enterprise"]}],
    }
]
FLAGS = [f["name"] for f in FEATURES] + ["never-defined"]


def contexts() -> Iterator[dict[str, Any]]:
    """Users with properties of every kind, some fields at the top level."""
    for i in range(300):
        context: dict[str, Any] = {
            "userId": f"u{i}",
            "properties": {
                "region": ("eu", "us", "apac")[i % 3],
                "segment": ("enterprise", "smb")[i % 2],
                "tenure": i % 25,
            },
        }
        if i % 4 == 0:
            context["sessionId"] = f"s{i}"
        if i % 5 == 0:
            context["plan"] = "pro"  # a top-level custom field: a property to the engine
        if i % 7 == 0:
            context["properties"]["beta"] = i % 2 == 0
        yield context


@pytest.fixture
def clients(settings: Settings) -> Iterator[tuple[FlagClient, FlagClient]]:
    """Two flag clients on the same state: one to ask through the shortcut, one through the SDK."""
    document = {"version": 2, "features": FEATURES, "segments": SEGMENTS}
    made = [FlagClient(settings, features=document) for _ in range(2)]
    for client in made:
        client.start()
    yield made[0], made[1]
    for client in made:
        client.close()


def shortcut_of(client: FlagClient) -> EngineVariants:
    shortcut = client._variants
    assert shortcut is not None, "the shortcut no longer attaches to the pinned UnleashClient"
    return shortcut


def test_every_answer_is_the_sdks(clients: tuple[FlagClient, FlagClient]) -> None:
    ours, theirs = clients
    shortcut, sdk = shortcut_of(ours), theirs._client
    answers = []
    for context in contexts():
        for flag in FLAGS:
            answer = shortcut.get_variant(flag, context)
            assert answer == sdk.get_variant(flag, context), (flag, context)
            answers.append((flag, answer["name"], answer["feature_enabled"]))
    # The state exercises what it should: each kind of answer occurs.
    names = {(flag, name) for flag, name, _ in answers}
    assert {
        ("canary", "v2"),
        ("canary", "disabled"),
        ("by-region", "a"),
        ("by-region", "b"),
    } <= names
    assert {("veterans", "old"), ("enterprise", "x"), ("enterprise", "y")} <= names
    assert ("dated", "disabled", True) in answers  # enabled (the date), no variants
    assert not any(enabled for flag, _, enabled in answers if flag in ("off", "never-defined"))


def test_the_usage_counts_are_the_sdks(clients: tuple[FlagClient, FlagClient]) -> None:
    ours, theirs = clients
    for context in contexts():
        for flag in FLAGS:
            ours.variant(flag, context)
            theirs._client.get_variant(flag, context)
    assert shortcut_of(ours).count() > 0
    counted = ours._client._engine.get_metrics()["toggles"]
    assert counted == theirs._client._engine.get_metrics()["toggles"]
    assert counted["canary"]["yes"] + counted["canary"]["no"] == 300


def evaluations(client: FlagClient, flag: str) -> int:
    """How many evaluations of `flag` the client's engine holds for Unleash's usage metrics."""
    counts = client._client._engine.get_metrics()["toggles"][flag]
    return int(counts["yes"] + counts["no"])


def test_close_hands_over_the_last_counts(settings: Settings) -> None:
    document = {"version": 2, "features": FEATURES, "segments": SEGMENTS}
    client = FlagClient(settings, features=document)
    client.start()
    client.variant("canary", {"userId": "u1"})
    assert shortcut_of(client)._counts, "queued, not counted on the request"
    client.close()
    assert evaluations(client, "canary") == 1


def test_a_flag_with_a_custom_strategy_is_left_to_the_sdk(
    clients: tuple[FlagClient, FlagClient],
) -> None:
    ours, _ = clients
    shortcut = shortcut_of(ours)
    assert shortcut._evaluate("custom", {"userId": "u1"}) is None
    assert shortcut.get_variant("custom", {"userId": "u1"})["feature_enabled"] is False


def test_an_engine_failure_is_answered_by_the_sdk(
    clients: tuple[FlagClient, FlagClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    ours, theirs = clients
    shortcut = shortcut_of(ours)

    def broken(*_args: Any) -> Any:
        raise OSError("engine gone")

    monkeypatch.setattr(shortcut, "_lib", type("Lib", (), {"check_variant": broken})())
    context = {"userId": "u3", "properties": {"region": "eu"}}
    assert shortcut.get_variant("by-region", context) == theirs._client.get_variant(
        "by-region", context
    )


def test_an_sdk_with_an_event_callback_keeps_its_own_path() -> None:
    """Impression events go to a callback from the SDK's path only: then no shortcut."""
    client = UnleashClient(
        url="http://embedded.invalid/api",
        app_name="test",
        disable_metrics=True,
        disable_registration=True,
        event_callback=lambda event: None,
    )
    assert EngineVariants.attach(client) is None
    assert EngineVariants.attach(object()) is None


context_values = st.one_of(
    st.text(max_size=8), st.integers(), st.floats(allow_nan=False), st.booleans()
)
context_keys = st.sampled_from(
    ["userId", "sessionId", "remoteAddress", "appName", "environment", "plan", "tier"]
)


@hypothesis_settings(max_examples=300, deadline=None)
@given(
    top=st.dictionaries(context_keys, context_values, max_size=5),
    properties=st.dictionaries(st.text(min_size=1, max_size=6), context_values, max_size=4),
    static=st.dictionaries(st.sampled_from(["appName", "environment"]), st.text(), max_size=2),
)
def test_the_engine_context_is_the_sdks(
    top: dict[str, Any], properties: dict[str, Any], static: dict[str, Any]
) -> None:
    context = {**top, "properties": properties, "currentTime": "2026-12-06T07:00:00+00:00"}
    config = type("Config", (), {"static_context": static})()
    assert engine_context(static, context) == _ContextEnricher(config).build(context)


def test_the_current_time_is_the_sdks_text() -> None:
    for now in (1_765_000_000.25, 1_765_000_000.999999, 1_765_000_001.000001, 0.5):
        expected = datetime.fromtimestamp(now, UTC)
        ours = datetime.fromisoformat(utc_now_text(now))
        assert abs((ours - expected).total_seconds()) < 2e-6, now
    assert utc_now_text(1_765_000_000.5) == "2025-12-06T05:46:40.500000+00:00"
    given = engine_context({}, {"userId": "u1"})["currentTime"]
    assert abs(datetime.fromisoformat(given) - datetime.now(UTC)).total_seconds() < 5


def test_the_context_takes_its_time_from_the_once_a_second_text(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # utc_now_text, not datetime.now().isoformat(): the cheaper one is the one on the request.
    monkeypatch.setattr(engine_variants, "utc_now_text", lambda: "2026-12-06T12:00:00.000001+00:00")
    assert engine_context({}, {"userId": "u1"})["currentTime"].endswith("00.000001+00:00")


def test_the_counting_thread_hands_counts_over_by_itself(
    clients: tuple[FlagClient, FlagClient],
) -> None:
    ours, _ = clients
    shortcut = shortcut_of(ours)
    for user in ("u1", "u2", "u3"):
        ours.variant("canary", {"userId": user})
    assert len(shortcut._counts) == 3, "queued, not counted on the request"
    deadline = time.monotonic() + 10 * engine_variants.COUNT_INTERVAL
    while shortcut._counts and time.monotonic() < deadline:  # the thread's next round
        shortcut._closed.wait(0.05)
    assert not shortcut._counts
    assert evaluations(ours, "canary") == 3


def test_counts_never_pile_up_without_the_counting_thread(
    clients: tuple[FlagClient, FlagClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    ours, _ = clients
    shortcut = shortcut_of(ours)
    shortcut._closed.set()  # the thread stops, as it would be gone in a forked child
    shortcut._counter.join(timeout=5)
    monkeypatch.setattr(engine_variants, "MAX_QUEUED_COUNTS", 50)
    for i in range(120):
        ours.variant("canary", {"userId": f"u{i}"})
    assert len(shortcut._counts) <= 50
    assert evaluations(ours, "canary") + len(shortcut._counts) == 120


def test_an_answer_is_the_callers_own(clients: tuple[FlagClient, FlagClient]) -> None:
    shortcut = shortcut_of(clients[0])
    first = shortcut.get_variant("off", {"userId": "u1"})
    first["name"] = "changed by the caller"
    assert shortcut.get_variant("off", {"userId": "u1"})["name"] == "disabled"
