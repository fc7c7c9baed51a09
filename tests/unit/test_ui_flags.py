"""Flags as a product team makes them in the Unleash UI (issue 12): no flag-level variant, string
or JSON payloads, mistakes. Evaluated by the real SDK engine (offline), with a real catalog file
and a real versions.yaml re-read on change."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

import pytest

from service.errors import BentoUnavailable, UnknownFlag
from service.flags.payloads import read_payload
from service.flags.routes import flag_routes, lint
from service.registry.stable import promote, stable_versions
from service.serving.app import create_app
from service.serving.catalog import BentoCatalog, LiveCatalog
from service.serving.flag_client import FlagClient
from service.serving.routing import decide

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("payload", "bento", "words"),
    [
        pytest.param({"type": "string", "value": "churn:v2"}, "churn:v2", None, id="string"),
        pytest.param({"type": "string", "value": " churn:v2 "}, "churn:v2", None, id="spaces"),
        pytest.param(
            {"type": "json", "value": '{"bento": "churn:v2", "note": "x"}'},
            "churn:v2",
            None,
            id="json-other-keys-ignored",
        ),
        pytest.param(
            {"type": "json", "value": "{bento: churn:v2"}, None, "not valid JSON", id="bad-json"
        ),
        pytest.param(
            {"type": "json", "value": '{"model": "churn:v2"}'}, None, '"bento"', id="no-key"
        ),
        pytest.param({"type": "string", "value": "churnv2"}, None, "family:version", id="no-colon"),
        pytest.param({"type": "string", "value": "churn:latest"}, None, "latest", id="latest"),
        pytest.param(None, None, "no payload", id="none"),
    ],
)
def test_payloads_as_people_write_them(payload, bento, words) -> None:
    reading = read_payload(payload)
    assert reading.bento == bento
    assert (reading.problem is None) == (words is None)
    if words:
        assert words in reading.problem


def variant(name: str, value: str, kind: str = "string", weight: int = 1000) -> dict[str, Any]:
    return {
        "name": name,
        "weight": weight,
        "weightType": "variable",
        "stickiness": "default",
        "payload": {"type": kind, "value": value},
    }


def ui_flag(enabled: bool = True, canary: str = '{"bento": "churn:v2"}') -> dict[str, Any]:
    """What the 8.2 UI makes: two strategies with variants, no flag-level variant."""
    return {
        "name": "ui-flag",
        "type": "release",
        "enabled": enabled,
        "strategies": [
            {
                "name": "flexibleRollout",
                "title": "eu-enterprise",
                "parameters": {"rollout": "100", "stickiness": "default", "groupId": "ui-flag"},
                "constraints": [
                    {"contextName": "region", "operator": "IN", "values": ["eu"]},
                    {"contextName": "segment", "operator": "IN", "values": ["enterprise"]},
                ],
                "variants": [variant("enterprise", canary, "json")],
            },
            {
                "name": "flexibleRollout",
                "title": "thirty",
                "parameters": {"rollout": "30", "stickiness": "default", "groupId": "ui-flag"},
                "constraints": [],
                "variants": [variant("canary", "churn:v2")],
            },
        ],
        "variants": [],
    }


@pytest.fixture
def registry(tmp_path: Path) -> Path:
    """A copy of bentos/ (stable: v1) and a catalog file serving v1 and v2."""
    bentos = tmp_path / "bentos"
    (bentos / "churn").mkdir(parents=True)
    shutil.copy(REPO / "bentos/churn/versions.yaml", bentos / "churn/versions.yaml")
    promote(bentos, "churn:v1")
    return bentos


def catalog(tmp_path: Path, registry: Path, tags: tuple[str, ...] = ("churn:v1", "churn:v2")):
    path = tmp_path / "catalog.json"
    BentoCatalog({t: f"http://127.0.0.1:9/{t}" for t in tags}).save(path)
    return LiveCatalog(BentoCatalog({}), path, registry, interval=0)


@pytest.fixture
def flags(settings):
    made: list[FlagClient] = []

    def build(*features: dict[str, Any]) -> FlagClient:
        document = {"version": 2, "features": list(features), "segments": []}
        made.append(FlagClient(settings, features=document))
        made[-1].start()
        return made[-1]

    yield build
    for c in made:
        c.close()


def ctx(user: str, **properties: str) -> dict[str, Any]:
    return {"userId": user, "properties": properties}


def test_a_ui_flag_without_any_flag_level_variant_routes(flags, tmp_path, registry) -> None:
    client, bentos = flags(ui_flag()), catalog(tmp_path, registry)
    eu = decide(client, bentos, "ui-flag", ctx("u1", region="eu", segment="enterprise"))
    assert (eu.variant, eu.bento, eu.reason) == ("enterprise", "churn:v2", "strategy_variant")
    shares = [decide(client, bentos, "ui-flag", ctx(f"u{i}", region="us")) for i in range(2000)]
    canary = sum(d.bento == "churn:v2" for d in shares) / len(shares)
    assert abs(canary - 0.3) < 4 * (0.3 * 0.7 / 2000) ** 0.5
    rest = {(d.variant, d.bento, d.reason) for d in shares if d.bento != "churn:v2"}
    assert rest == {("default", "churn:v1", "no_matching_strategy")}


def test_the_kill_switch_serves_the_stable_version(flags, tmp_path, registry) -> None:
    client = flags(ui_flag(enabled=False))
    off = decide(
        client, catalog(tmp_path, registry), "ui-flag", ctx("u1", region="eu", segment="enterprise")
    )
    assert (off.bento, off.reason) == ("churn:v1", "flag_disabled")


def test_promoting_moves_every_flag_without_a_default(flags, tmp_path, registry) -> None:
    client, bentos = flags(ui_flag(enabled=False)), catalog(tmp_path, registry)
    promote(registry, "churn:v2")
    assert stable_versions(registry) == {"churn": "churn:v2"}
    assert decide(client, bentos, "ui-flag", ctx("u1")).bento == "churn:v2"


@pytest.mark.parametrize(
    ("canary", "reason", "tag"),
    [
        pytest.param('{"bento": "churn:v3"}', "unknown_bento", "churn:v3", id="unknown-tag"),
        pytest.param('{"bentos": "churn:v2"}', "no_bento_in_payload", None, id="no-bento-key"),
    ],
)
def test_a_mistake_serves_the_stable_version_and_is_linted(
    flags, tmp_path, registry, canary, reason, tag
) -> None:
    client, bentos = flags(ui_flag(canary=canary)), catalog(tmp_path, registry)
    decision = decide(client, bentos, "ui-flag", ctx("u1", region="eu", segment="enterprise"))
    assert (decision.bento, decision.reason) == ("churn:v1", reason)
    assert decision.problem is not None and decision.problem.strategy == "eu-enterprise"
    problems = lint(
        flag_routes(ui_flag(canary=canary)), "development", set(bentos.endpoints), bentos.stable
    )
    assert [(p.reason, p.strategy, p.variant) for p in problems] == [
        (reason, "eu-enterprise", "enterprise")
    ]
    if tag:
        assert problems[0].tag == tag and "churn:v1, churn:v2" in problems[0].fix


def test_no_stable_version_is_a_503_only_when_nothing_can_serve(flags, tmp_path, registry) -> None:
    text = (registry / "churn/versions.yaml").read_text()
    (registry / "churn/versions.yaml").write_text(text.replace("stable: v1", "stable:"))
    client, bentos = flags(ui_flag(enabled=False)), catalog(tmp_path, registry)
    with pytest.raises(BentoUnavailable, match="no stable version"):
        decide(client, bentos, "ui-flag", ctx("u1"))
    # Users a strategy variant sends to a servable bento are still served.
    on = flags(ui_flag())
    eu = decide(on, bentos, "ui-flag", ctx("u1", region="eu", segment="enterprise"))
    assert eu.bento == "churn:v2"
    problems = lint(flag_routes(ui_flag()), "development", set(bentos.endpoints), bentos.stable)
    assert [p.reason for p in problems] == ["no_stable_version"]


def test_an_explicit_default_still_wins(flags, tmp_path, registry) -> None:
    feature = {**ui_flag(enabled=False), "variants": [variant("default", "churn:v2")]}
    decision = decide(flags(feature), catalog(tmp_path, registry), "ui-flag", ctx("u1"))
    assert (decision.bento, decision.default_bento) == ("churn:v2", "churn:v2")


def test_the_catalog_is_reread_when_its_file_changes(tmp_path, registry) -> None:
    now = [0.0]
    path = tmp_path / "catalog.json"
    BentoCatalog({"churn:v1": "http://a"}).save(path)
    live = LiveCatalog(
        BentoCatalog({"churn:v9": "http://fixed"}), path, registry, 5, lambda: now[0]
    )
    assert set(live.endpoints) == {"churn:v1", "churn:v9"} and live.stable == {"churn": "churn:v1"}
    BentoCatalog({"churn:v1": "http://a", "churn:v2": "http://b", "churn:v9": "http://x"}).save(
        path
    )
    assert "churn:v2" not in live  # not before the interval is over
    now[0] = 5.0
    assert live.url("churn:v2") == "http://b"
    assert live.url("churn:v9") == "http://fixed"  # ROLLOUT_BENTO_URLS wins for its tags
    path.write_text("{broken")
    now[0] = 10.0
    assert live.url("churn:v2") == "http://b"  # a broken file keeps the last good catalog


UNKNOWN_TAG_FLAG = """
flag: ui-flag
variants: {enterprise: churn:v3}
environments:
  development:
    enabled: true
    strategies:
      - name: eu-enterprise
        segments: [eu-enterprise]
        variants: {enterprise: 100}
"""


def test_mistakes_show_in_readyz_metrics_and_the_log(tmp_path, registry, flags_dir, caplog) -> None:
    """The selector app on a flag (no default) naming churn:v3, never built: 200s, the stable
    bento, a degraded flag in /readyz, a counter in /metrics, one log line per minute."""
    BentoCatalog({"churn:v1": "http://127.0.0.1:9", "churn:v2": "http://127.0.0.1:9"}).save(
        tmp_path / "data/catalog.json"
    )
    app = create_app(
        {
            "data_dir": tmp_path / "data",
            "bentos_dir": registry,
            "unleash_url": None,
            "database_url": None,
            "bento_urls": None,
            "flags_dir": flags_dir("ui.yaml", UNKNOWN_TAG_FLAG),
        }
    )
    client = app.test_client()
    # No bento runs in a unit test: /readyz's "a bento answers" check is test_api's concern.
    app.extensions["selector"].answering_bento = lambda: "churn:v1"
    try:
        with caplog.at_level(logging.WARNING):
            for _ in range(3):
                answer = client.get(
                    "/v1/models/ui-flag/resolve?userId=u1&region=eu&segment=enterprise"
                )
                assert answer.status_code == 200
                assert (answer.json["bento"], answer.json["reason"]) == (
                    "churn:v1",
                    "unknown_bento",
                )
        ready = client.get("/readyz")
        assert ready.status_code == 200 and ready.json["status"] == "ready"
        assert ready.json["flag_status"] == {"ui-flag": "degraded"}
        (problem,) = ready.json["flag_problems"]["ui-flag"]
        assert (problem["reason"], problem["tag"], problem["variant"], problem["strategy"]) == (
            "unknown_bento",
            "churn:v3",
            "enterprise",
            "eu-enterprise",
        )
        metrics = client.get("/metrics").get_data(as_text=True)
        assert 'selector_flag_problems_total{flag="ui-flag",reason="unknown_bento"} 3.0' in metrics
        lines = [r.getMessage() for r in caplog.records if "churn:v3" in r.getMessage()]
        per_request = [line for line in lines if "served churn:v1 instead" in line]
        assert len(per_request) == 1  # rate-limited: three requests, one line
        assert "environment development" in per_request[0] and "eu-enterprise" in per_request[0]
    finally:
        app.extensions["selector"].close()


def test_a_flag_that_names_no_bento_yet_serves_the_only_familys_stable(
    flags, tmp_path, registry
) -> None:
    """Just made in the UI, no variant yet: the only family's stable bento, never a 503; a
    flag name never seen is still a 404."""
    bare = {**ui_flag(), "strategies": [{**ui_flag()["strategies"][1], "variants": []}]}
    client, bentos = flags(bare), catalog(tmp_path, registry)
    decision = decide(client, bentos, "ui-flag", ctx("u1"))
    assert decision.bento == "churn:v1"
    with pytest.raises(UnknownFlag):
        decide(client, bentos, "no-such-flag", ctx("u1"))
