"""Shadows set in Unleash: flag-level variants `shadow-N` (fixed weight 0, the bento tag as
payload) are accepted by a real Unleash 8.2 server, reach the selector, and never serve."""

from __future__ import annotations

import time

import pytest

from service.flags.client_features import default_variant, shadow_variants
from service.serving.app import create_app

pytestmark = pytest.mark.integration


def test_shadow_variants_set_in_unleash_reach_the_selector(
    settings, unleash_server, unleash_admin
) -> None:
    flag = f"shadowed-{time.monotonic_ns() % 10**9}"
    unleash_admin.create_feature("default", flag, "experiment", "shadow test")
    unleash_admin.add_strategy(
        "default",
        flag,
        "development",
        {"name": "flexibleRollout", "parameters": {"rollout": "100", "stickiness": "default"}},
    )
    stored = unleash_admin.set_feature_variants(
        "default",
        flag,
        "development",
        [default_variant("churn:v1"), *shadow_variants(("churn:v2",))],
    )
    assert [(v["name"], v["weight"]) for v in stored] == [("default", 1000), ("shadow-1", 0)]
    unleash_admin.set_environment_enabled("default", flag, "development", True)

    app = create_app(
        {
            **settings.__dict__,
            "unleash_url": unleash_server.url,
            "unleash_token": unleash_server.backend_token,
            "bento_urls": "churn:v1=http://127.0.0.1:9,churn:v2=http://127.0.0.1:9",
        }
    )
    selector = app.extensions["selector"]
    try:
        deadline = time.monotonic() + 15
        while selector.flags.flag(flag) is None and time.monotonic() < deadline:
            time.sleep(0.1)  # poll interval of the SDK's first fetch, not a fixed wait
        state = selector.flags.flag(flag)
        assert state is not None and state.shadows == ("churn:v2",)
        for user in range(30):
            decision = app.test_client().get(f"/v1/models/{flag}/resolve?userId=u{user}").json
            assert (decision["bento"], decision["variant"]) == ("churn:v1", "default")
    finally:
        selector.close()
