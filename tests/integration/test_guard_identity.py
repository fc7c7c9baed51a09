"""The guard's own identity on a real Unleash: its changes are signed `rollout-guard`.

The admin token makes the guard's user and personal access token; the token then changes a
flag the way a ramp does (the strategy's rollout, the environment variant) and links the
report; the event log must name the guard as the author of each change.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.errors import UnleashAdminError
from service.flags.unleash_admin import Strategy, UnleashAdmin, Variant
from service.harness.unleash_server import UnleashServer
from service.rollout.identity import (
    GUARD_USERNAME,
    REPORT_LINK_TITLE,
    create_guard_token,
    report_url,
)

pytestmark = pytest.mark.integration

PROJECT = "default"
ENV = "development"


def rollout(flag: str, percent: int) -> Strategy:
    return {
        "name": "flexibleRollout",
        "parameters": {"rollout": str(percent), "stickiness": "userId", "groupId": flag},
        "variants": [
            {
                "name": "candidate",
                "weight": 1000,
                "weightType": "variable",
                "stickiness": "userId",
                "payload": {"type": "string", "value": "churn:v2"},
            }
        ],
    }


DEFAULT_BENTO: Variant = {
    "name": "default",
    "weight": 1000,
    "weightType": "variable",
    "stickiness": "userId",
    "payload": {"type": "string", "value": "churn:v1"},
}


@pytest.fixture
def flag(unleash_admin: UnleashAdmin) -> Iterator[str]:
    name = f"guard-identity-{uuid.uuid4().hex[:8]}"
    unleash_admin.create_feature(PROJECT, name)
    yield name
    unleash_admin.delete_feature(PROJECT, name)


@pytest.fixture
def guard_secret(unleash_admin: UnleashAdmin) -> str:
    """A fresh guard token (each revokes the one before: tests do not depend on order)."""
    return create_guard_token(unleash_admin)


def test_guard_changes_are_signed_by_the_guard(
    unleash_server: UnleashServer, unleash_admin: UnleashAdmin, guard_secret: str, flag: str
) -> None:
    strategy_id = unleash_admin.add_strategy(PROJECT, flag, ENV, rollout(flag, 10))

    with UnleashAdmin(unleash_server.url, guard_secret) as guard:
        guard.update_strategy(PROJECT, flag, ENV, strategy_id, rollout(flag, 50))
        guard.set_feature_variants(PROJECT, flag, ENV, [DEFAULT_BENTO])

    newest = unleash_admin.get_events(flag)[:2]
    assert [(e.type, e.created_by) for e in newest] == [
        ("feature-environment-variants-updated", GUARD_USERNAME),
        ("feature-strategy-update", GUARD_USERNAME),
    ]
    (strategy,) = unleash_admin.list_strategies(PROJECT, flag, ENV)
    assert strategy["parameters"]["rollout"] == "50"


def test_report_link_is_set_once_per_title(
    unleash_server: UnleashServer,
    unleash_admin: UnleashAdmin,
    guard_secret: str,
    flag: str,
    tmp_path: Path,
) -> None:
    reports = tmp_path / "reports"
    first = report_url(reports / flag / "1-ab" / "report.html", None, reports)
    second = report_url(reports / flag / "2-ab" / "report.html", None, reports)

    with UnleashAdmin(unleash_server.url, guard_secret) as guard:
        guard.set_feature_link(PROJECT, flag, REPORT_LINK_TITLE, first)
        guard.set_feature_link(PROJECT, flag, REPORT_LINK_TITLE, second)

    links = unleash_admin.feature_links(PROJECT, flag)
    assert [(link.title, link.url) for link in links] == [(REPORT_LINK_TITLE, second)]
    assert second.startswith("file:///")  # Unleash keeps file:// URLs as they are
    newest = unleash_admin.get_events(flag)[0]
    assert (newest.type, newest.created_by) == ("feature-link-updated", GUARD_USERNAME)
    assert newest.data == {"url": second, "title": REPORT_LINK_TITLE}


def test_second_token_replaces_the_first(
    unleash_server: UnleashServer, unleash_admin: UnleashAdmin, guard_secret: str, flag: str
) -> None:
    # The user exists by now (guard_secret made it): its password is reset, its token replaced.
    secret = create_guard_token(unleash_admin)

    with UnleashAdmin(unleash_server.url, secret) as guard:
        guard.set_feature_description(PROJECT, flag, "ramped by the guard")
    assert unleash_admin.get_events(flag)[0].created_by == GUARD_USERNAME
    with (
        UnleashAdmin(unleash_server.url, guard_secret) as revoked,
        pytest.raises(UnleashAdminError, match="HTTP 401"),
    ):
        revoked.get_feature(PROJECT, flag)
