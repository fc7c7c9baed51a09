"""UnleashAdmin against a real Unleash server, read back through the client API and the SDK.

A model flag as we build it: one strategy for EU beta users (region constraint plus a segment)
serving the canary bento, one sticky 50% rollout serving the candidate, and an environment
variant carrying the default bento. Each variant carries its bento tag as a string payload.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from UnleashClient import UnleashClient

from service.errors import ConfigError, UnleashAdminError
from service.flags.unleash_admin import Constraint, Strategy, StrategyVariant, UnleashAdmin, Variant
from service.harness.unleash_server import UnleashServer
from service.processes import free_port

pytestmark = pytest.mark.integration

PROJECT = "default"
ENV = "development"
SDK_DEADLINE = 30.0  # seconds for a change to reach an SDK polling every second
EU_BETA = {"userId": "user-1", "properties": {"region": "eu", "segment": "beta"}}


def bento_variant(name: str, tag: str) -> StrategyVariant:
    return {
        "name": name,
        "weight": 1000,
        "weightType": "variable",
        "stickiness": "userId",
        "payload": {"type": "string", "value": tag},
    }


def default_variant(tag: str) -> Variant:
    return {
        "name": "default",
        "weight": 1000,
        "weightType": "variable",
        "stickiness": "userId",
        "payload": {"type": "string", "value": tag},
    }


def is_in(field: str, *values: str) -> Constraint:
    return {
        "contextName": field,
        "operator": "IN",
        "values": list(values),
        "inverted": False,
        "caseInsensitive": False,
    }


def rollout(flag: str, percent: int) -> dict[str, str]:
    return {"rollout": str(percent), "stickiness": "userId", "groupId": flag}


def flexible_rollout(flag: str, percent: int, *variants: StrategyVariant) -> Strategy:
    """A sticky percentage rollout; ``variants`` (if any) say which bento it serves."""
    strategy: Strategy = {"name": "flexibleRollout", "parameters": rollout(flag, percent)}
    if variants:
        strategy["variants"] = list(variants)
    return strategy


def wait_until(condition: Callable[[], bool], what: str, timeout: float = SDK_DEADLINE) -> float:
    """Poll ``condition`` until it holds; return the seconds it took, fail at the deadline."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"{what}: not seen within {timeout:.0f} s")
        time.sleep(0.1)
    return time.monotonic() - started


@dataclass(frozen=True)
class RoutedFlag:
    name: str
    segment_id: int
    eu_beta_strategy: str
    rollout_strategy: str


@pytest.fixture
def flag_name(unleash_admin: UnleashAdmin) -> Iterator[str]:
    """A name no other test uses; the flag (if any was made) is deleted afterwards."""
    name = f"churn-{uuid.uuid4().hex[:8]}"
    yield name
    unleash_admin.delete_feature(PROJECT, name)


@pytest.fixture
def routed_flag(unleash_admin: UnleashAdmin, flag_name: str) -> RoutedFlag:
    admin = unleash_admin
    admin.create_context_field("region", ["eu", "us", "apac"], "Where the user is")
    admin.create_context_field("segment", ["beta", "enterprise"], "Customer segment")
    segment = admin.create_segment(f"beta-{flag_name}", [is_in("segment", "beta")])
    admin.create_feature(PROJECT, flag_name, description="churn model")
    eu_beta = flexible_rollout(flag_name, 100, bento_variant("canary", "churn:v3"))
    eu_beta["title"] = "EU beta users"
    eu_beta["constraints"] = [is_in("region", "eu")]
    eu_beta["segments"] = [segment.id]
    eu_beta_id = admin.add_strategy(PROJECT, flag_name, ENV, eu_beta)
    half = flexible_rollout(flag_name, 50, bento_variant("candidate", "churn:v2"))
    half_id = admin.add_strategy(PROJECT, flag_name, ENV, half)
    admin.set_feature_variants(PROJECT, flag_name, ENV, [default_variant("churn:v1")])
    admin.set_environment_enabled(PROJECT, flag_name, ENV, True)
    return RoutedFlag(flag_name, segment.id, eu_beta_id, half_id)


@pytest.fixture
def sdk(unleash_server: UnleashServer, tmp_path: Path) -> Iterator[UnleashClient]:
    """A real UnleashClient polling the server every second with the development token."""
    client = UnleashClient(
        url=f"{unleash_server.url}/api",
        app_name="model-rollout-tests",
        environment=ENV,
        custom_headers={"Authorization": unleash_server.backend_token},
        refresh_interval=1,
        disable_metrics=True,
        cache_directory=str(tmp_path / "unleash-cache"),
    )
    client.initialize_client()
    yield client
    client.destroy()


def client_features(server: UnleashServer, token: str) -> dict[str, Any]:
    response = requests.get(
        f"{server.url}/api/client/features", headers={"Authorization": token}, timeout=10
    )
    response.raise_for_status()
    body: dict[str, Any] = response.json()
    return body


def client_features_listing(
    server: UnleashServer, token: str, name: str, timeout: float = 20.0
) -> dict[str, Any]:
    """The client API's answer once it lists `name`: Unleash serves SDKs from a cache it
    refreshes by revision, so a flag made a moment ago can take a moment to appear there."""
    deadline = time.monotonic() + timeout
    body = client_features(server, token)
    while not any(f["name"] == name for f in body["features"]) and time.monotonic() < deadline:
        time.sleep(0.2)  # poll interval of the readiness check, not a wait for it
        body = client_features(server, token)
    return body


def find_feature(body: dict[str, Any], name: str) -> dict[str, Any]:
    return next(f for f in body["features"] if f["name"] == name)


def test_server_is_healthy(unleash_admin: UnleashAdmin) -> None:
    assert unleash_admin.health() == "GOOD"


def test_admin_reads_back_the_flag(unleash_admin: UnleashAdmin, routed_flag: RoutedFlag) -> None:
    feature = unleash_admin.get_feature(PROJECT, routed_flag.name)
    development = feature.environment(ENV)
    assert (feature.type, feature.description) == ("experiment", "churn model")
    assert development.enabled and not feature.environment("production").enabled
    assert [s["id"] for s in development.strategies] == [
        routed_flag.eu_beta_strategy,
        routed_flag.rollout_strategy,
    ]
    assert development.strategies[0]["segments"] == [routed_flag.segment_id]
    assert development.strategies[0]["constraints"] == [is_in("region", "eu")]
    assert development.strategies[1]["variants"] == [bento_variant("candidate", "churn:v2")]
    listed_strategies = unleash_admin.list_strategies(PROJECT, routed_flag.name, ENV)
    assert [s["id"] for s in listed_strategies] == [s["id"] for s in development.strategies]
    assert unleash_admin.get_feature_variants(PROJECT, routed_flag.name, ENV) == [
        default_variant("churn:v1")
    ]
    listed = {f.name: f for f in unleash_admin.list_features(PROJECT)}
    assert listed[routed_flag.name].environment(ENV).enabled


def test_client_api_serves_strategy_and_environment_variants(
    unleash_server: UnleashServer, routed_flag: RoutedFlag
) -> None:
    body = client_features_listing(unleash_server, unleash_server.backend_token, routed_flag.name)
    feature = find_feature(body, routed_flag.name)
    assert body["query"]["environment"] == ENV
    assert feature["enabled"] is True
    eu_beta, half = feature["strategies"]
    # The client API inlines segments as constraints (no `segments` key for the SDK).
    assert eu_beta["constraints"] == [
        is_in("region", "eu"),
        is_in("segment", "beta"),
    ]
    assert eu_beta["parameters"] == rollout(routed_flag.name, 100)
    assert eu_beta["variants"] == [bento_variant("canary", "churn:v3")]
    assert (half["constraints"], half["parameters"]) == ([], rollout(routed_flag.name, 50))
    assert half["variants"] == [bento_variant("candidate", "churn:v2")]
    assert feature["variants"] == [default_variant("churn:v1")]


def test_production_token_sees_production_state(
    unleash_server: UnleashServer, routed_flag: RoutedFlag
) -> None:
    body = client_features(unleash_server, unleash_server.production_backend_token)
    feature = find_feature(body, routed_flag.name)
    assert body["query"]["environment"] == "production"
    assert (feature["enabled"], feature["strategies"]) == (False, [])


def test_sdk_routes_by_constraint_and_rollout_then_sees_the_flag_off(
    unleash_admin: UnleashAdmin, routed_flag: RoutedFlag, sdk: UnleashClient
) -> None:
    flag = routed_flag.name
    wait_until(lambda: sdk.is_enabled(flag, EU_BETA), "the flag reaching the SDK")
    canary = sdk.get_variant(flag, EU_BETA)
    assert canary["name"] == "canary"
    assert canary["payload"] == {"type": "string", "value": "churn:v3"}
    served = Counter(
        sdk.get_variant(flag, {"userId": f"user-{i}", "properties": {"region": "us"}})["name"]
        for i in range(200)
    )
    assert set(served) == {"candidate", "disabled"}
    assert 60 <= served["candidate"] <= 140  # sticky 50% rollout
    assert sdk.get_variant(flag, {"userId": "user-7", "properties": {"region": "eu"}})["name"] in {
        "candidate",
        "disabled",
    }  # EU but not beta: the segment keeps it out of the canary

    unleash_admin.set_environment_enabled(PROJECT, flag, ENV, False)
    wait_until(lambda: not sdk.is_enabled(flag, EU_BETA), "the flag turned off reaching the SDK")
    assert sdk.get_variant(flag, EU_BETA)["name"] == "disabled"


def test_environment_variants_serve_strategies_without_variants(
    unleash_admin: UnleashAdmin, flag_name: str, sdk: UnleashClient
) -> None:
    unleash_admin.create_feature(PROJECT, flag_name)
    unleash_admin.add_strategy(PROJECT, flag_name, ENV, flexible_rollout(flag_name, 100))
    unleash_admin.set_feature_variants(PROJECT, flag_name, ENV, [default_variant("churn:v1")])
    unleash_admin.set_environment_enabled(PROJECT, flag_name, ENV, True)
    context = {"userId": "user-1"}
    wait_until(lambda: sdk.is_enabled(flag_name, context), "the flag reaching the SDK")
    variant = sdk.get_variant(flag_name, context)
    assert (variant["name"], variant["payload"]["value"]) == ("default", "churn:v1")


def test_update_and_delete_strategy(unleash_admin: UnleashAdmin, routed_flag: RoutedFlag) -> None:
    admin, flag = unleash_admin, routed_flag.name
    twenty = flexible_rollout(flag, 20, bento_variant("candidate", "churn:v2"))
    updated = admin.update_strategy(PROJECT, flag, ENV, routed_flag.rollout_strategy, twenty)
    assert updated["parameters"]["rollout"] == "20"
    admin.delete_strategy(PROJECT, flag, ENV, routed_flag.eu_beta_strategy)
    remaining = admin.list_strategies(PROJECT, flag, ENV)
    assert [(s["id"], s["parameters"]["rollout"]) for s in remaining] == [
        (routed_flag.rollout_strategy, "20")
    ]


def test_delete_feature_frees_the_name(unleash_admin: UnleashAdmin, flag_name: str) -> None:
    unleash_admin.create_feature(PROJECT, flag_name)
    unleash_admin.delete_feature(PROJECT, flag_name)
    unleash_admin.delete_feature(PROJECT, flag_name)  # already gone: no error
    assert unleash_admin.create_feature(PROJECT, flag_name).name == flag_name


def test_server_survives_flags_deleted_as_soon_as_created(
    unleash_server: UnleashServer,
) -> None:
    """Unleash 8.2.0 races its lifecycle bookkeeping against such deletes; without the guard
    in scripts/unleash-server.mjs the failed insert killed the server (db-migrate's handler)."""

    def churn(worker: int) -> None:
        with UnleashAdmin(unleash_server.url, unleash_server.admin_token) as admin:
            for i in range(30):
                name = f"short-lived-{worker}-{i}-{uuid.uuid4().hex[:6]}"
                admin.create_feature(PROJECT, name)
                admin.set_environment_enabled(PROJECT, name, ENV, True)
                admin.delete_feature(PROJECT, name)

    # Without the guard this killed the server within about 3 s in every one of 3 tries.
    try:
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(churn, range(4)))
    finally:
        unleash_server.check_alive()  # if it died, the log's tail says why


def test_context_fields_and_segments_are_upserted(unleash_admin: UnleashAdmin) -> None:
    name = f"tier-{uuid.uuid4().hex[:6]}"
    unleash_admin.create_context_field(name, ["free"], "first")
    field = unleash_admin.create_context_field(name, ["free", "pro"], "second")
    assert (field.legal_values, field.description) == (["free", "pro"], "second")
    assert {"userId", name} <= {f.name for f in unleash_admin.list_context_fields()}

    first = unleash_admin.create_segment(name, [is_in(name, "pro")])
    second = unleash_admin.create_segment(name, [is_in(name, "free", "pro")])
    assert second.id == first.id
    assert second.constraints[0]["values"] == ["free", "pro"]
    assert [s.id for s in unleash_admin.list_segments() if s.name == name] == [first.id]


def test_event_log_records_every_change(
    unleash_admin: UnleashAdmin, routed_flag: RoutedFlag
) -> None:
    events = unleash_admin.get_events(routed_flag.name)
    assert [e.type for e in reversed(events)] == [
        "feature-created",
        "feature-strategy-add",
        "feature-strategy-add",
        "feature-environment-variants-updated",
        "feature-environment-enabled",
    ]
    assert {e.feature_name for e in events} == {routed_flag.name}
    assert events[0].environment == ENV and events[0].created_by
    assert len(unleash_admin.get_events(limit=3)) == 3


def test_wrong_token_raises_naming_401(unleash_server: UnleashServer) -> None:
    with (
        UnleashAdmin(unleash_server.url, "*:*.not-a-token") as admin,
        pytest.raises(UnleashAdminError, match=r"GET /api/admin/projects/default/features.*401"),
    ):
        admin.list_features(PROJECT)


def test_missing_flag_raises_with_the_servers_answer(unleash_admin: UnleashAdmin) -> None:
    with pytest.raises(UnleashAdminError, match=r"HTTP 404.*no feature named \"absent\""):
        unleash_admin.get_feature(PROJECT, "absent")


def test_unreachable_server_raises_naming_the_url() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with (
        UnleashAdmin(url, "token", timeout=2) as admin,
        pytest.raises(UnleashAdminError, match=f"cannot reach .* at {url}"),
    ):
        admin.health()


def test_token_stays_out_of_repr(unleash_server: UnleashServer) -> None:
    admin = UnleashAdmin(unleash_server.url, unleash_server.admin_token)
    assert unleash_server.admin_token not in repr(admin)
    assert unleash_server.admin_token not in repr(unleash_server)


def test_missing_install_names_the_install_command(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="scripts/install-unleash"):
        UnleashServer(home=tmp_path / "nowhere")
