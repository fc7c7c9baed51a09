"""The selector against a real Unleash server: flags created through the Admin API,
routing by region, by segment and by sticky percentage, and the kill switch.

The server is started by the `unleash_server` fixture (npm unleash-server on Node 22 against
the local PostgreSQL, fresh database, free port); see tests/integration/conftest.py.
"""

from __future__ import annotations

import math
import time
from collections import Counter

import pytest

from service.flags.definitions import load_flags
from service.flags.sync import create_context_fields, create_flag
from service.serving.app import create_app

pytestmark = pytest.mark.integration

REFRESH_SECONDS = 2
FLAG_YAML = """
flag: FLAG_NAME
description: integration test flag
default: churn:v1
variants: {apac: churn:v2, enterprise: churn:v2, control: churn:v1, treatment: churn:v2}
environments:
  development:
    enabled: true
    strategies:
      - name: by-region
        constraints: [{field: region, operator: IN, values: [apac]}]
        variants: {apac: 100}
      - name: by-segment
        constraints: [{field: segment, operator: IN, values: [enterprise]}]
        variants: {enterprise: 100}
      - name: by-percentage
        rollout: 50
        stickiness: userId
        variants: {control: 50, treatment: 50}
"""


def make_flag(unleash_admin, flags_dir, name: str) -> str:
    """FLAG_YAML as flag `name` on the server, through the Admin API."""
    flag_set = load_flags(
        flags_dir(f"{name}.yaml", FLAG_YAML.replace("FLAG_NAME", name)), {"churn:v1", "churn:v2"}
    )
    create_context_fields(unleash_admin, flag_set)
    create_flag(unleash_admin, flag_set.flags[name], "development")
    return name


@pytest.fixture
def flag_on_server(unleash_server, unleash_admin, flags_dir, request):
    name = f"churn-it-{request.node.name[-20:].strip('[]_')}-{time.monotonic_ns() % 10**6}"
    return make_flag(unleash_admin, flags_dir, name)


@pytest.fixture
def selector(unleash_server, settings):
    app = create_app(
        {
            **settings.__dict__,
            "unleash_url": unleash_server.url,
            "unleash_token": unleash_server.backend_token,
            "refresh_interval": REFRESH_SECONDS,
            "bento_urls": "churn:v1=http://127.0.0.1:9,churn:v2=http://127.0.0.1:9",
        }
    )
    yield app.test_client()
    app.extensions["selector"].close()


def resolve(client, flag: str, **query: str) -> dict:
    response = client.get(f"/v1/models/{flag}/resolve", query_string=query)
    assert response.status_code == 200, response.json
    return response.json


def wait_for(condition, timeout: float, what: str) -> float:
    """Poll `condition` until true; return the seconds it took."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if condition():
            return time.monotonic() - started
        time.sleep(0.2)
    raise AssertionError(f"{what} not seen within {timeout:.0f}s")


def test_routes_by_region_segment_and_sticky_percentage(selector, flag_on_server) -> None:
    flag = flag_on_server
    wait_for(
        lambda: selector.get(f"/v1/models/{flag}/resolve?userId=x").status_code == 200,
        3 * REFRESH_SECONDS + 5,
        "the new flag in the selector",
    )

    apac = resolve(selector, flag, userId="u1", region="apac", segment="consumer")
    assert (apac["variant"], apac["bento"], apac["reason"]) == (
        "apac",
        "churn:v2",
        "strategy_variant",
    )
    enterprise = resolve(selector, flag, userId="u1", region="us", segment="enterprise")
    assert (enterprise["variant"], enterprise["bento"]) == ("enterprise", "churn:v2")

    n = 2000
    first = {
        f"user-{i}": resolve(selector, flag, userId=f"user-{i}", region="eu", segment="smb")[
            "variant"
        ]
        for i in range(n)
    }
    counts = Counter(first.values())
    for variant, share in {"control": 0.25, "treatment": 0.25, "default": 0.5}.items():
        tolerance = 4 * math.sqrt(share * (1 - share) / n)
        assert abs(counts[variant] / n - share) < tolerance, counts
    # Sticky: the same user gets the same variant on every request.
    for user in list(first)[:300]:
        assert (
            resolve(selector, flag, userId=user, region="eu", segment="smb")["variant"]
            == first[user]
        )


def test_turning_the_flag_off_sends_everyone_to_the_default(
    selector, flag_on_server, unleash_admin
) -> None:
    flag = flag_on_server
    users = [f"user-{i}" for i in range(50)]
    wait_for(
        lambda: selector.get(f"/v1/models/{flag}/resolve?userId=x").status_code == 200,
        3 * REFRESH_SECONDS + 5,
        "the new flag in the selector",
    )
    before = Counter(resolve(selector, flag, userId=u, region="apac")["bento"] for u in users)
    assert before == {"churn:v2": 50}

    unleash_admin.set_environment_enabled("default", flag, "development", False)

    def all_default() -> bool:
        decisions = [resolve(selector, flag, userId=u, region="apac") for u in users]
        return all((d["bento"], d["reason"]) == ("churn:v1", "flag_disabled") for d in decisions)

    # The SDK polls every REFRESH_SECONDS; allow two polls plus the server's own cache.
    seconds = wait_for(all_default, 2 * REFRESH_SECONDS + 10, "the kill switch")
    print(
        f"kill switch reached the selector in {seconds:.1f}s (refresh interval {REFRESH_SECONDS}s)"
    )


def test_the_flags_usage_reaches_the_unleash_ui(
    unleash_server, unleash_admin, settings, flags_dir, flag_on_server
) -> None:
    """What the flag's Metrics tab shows: every evaluation the selector made, yes and no.

    The selector evaluates through its engine shortcut (service/serving/engine_variants.py),
    which hands the SDK's usage counts to the engine itself; the SDK reports them every
    `metrics_interval` seconds, and the server stores them every 5 s. The server drops the
    usage of a flag it learnt of in the last 10 s (it caches the list of flag names that
    long), so a second flag, made after the measured one, is evaluated first until its usage
    shows: from then on the server knows both. The measured flag is not evaluated before.
    """
    flag = flag_on_server
    probe = make_flag(unleash_admin, flags_dir, f"{flag}-probe")
    app = create_app(
        {
            **settings.__dict__,
            "unleash_url": unleash_server.url,
            "unleash_token": unleash_server.backend_token,
            "refresh_interval": REFRESH_SECONDS,
            "metrics_interval": 1,
            "bento_urls": "churn:v1=http://127.0.0.1:9,churn:v2=http://127.0.0.1:9",
        }
    )
    client, flags = app.test_client(), app.extensions["selector"].flags
    try:
        wait_for(
            lambda: flags.flag(flag) is not None and flags.flag(probe) is not None,
            3 * REFRESH_SECONDS + 5,
            "the new flags in the selector",
        )

        def probe_counted() -> bool:
            resolve(client, probe, userId="probe")
            return sum(unleash_admin.feature_usage(probe).values()) > 0

        wait_for(probe_counted, 60, "the server counting the usage of the flags just made")
        decisions = [resolve(client, flag, userId=f"u{i}", region="eu") for i in range(42)]
        enabled = sum(d["reason"] == "strategy_variant" for d in decisions)
        assert 0 < enabled < len(decisions)  # both kinds occur: 50% rollout, no other match

        def reported() -> bool:
            return sum(unleash_admin.feature_usage(flag).values()) >= len(decisions)

        wait_for(reported, 60, "the selector's usage counts in Unleash")
        assert unleash_admin.feature_usage(flag) == {
            "yes": enabled,
            "no": len(decisions) - enabled,
        }
    finally:
        app.extensions["selector"].close()
