"""Routing decisions, evaluated by the real Unleash engine on flags compiled from YAML."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import replace

import pytest

from service.errors import UnknownFlag
from service.flags.definitions import load_flags
from service.serving.catalog import BentoCatalog
from service.serving.flag_client import FlagClient
from service.serving.routing import decide

BENTOS = {"churn:v1", "churn:v2"}
CATALOG = BentoCatalog({"churn:v1": "http://v1", "churn:v2": "http://v2"})

FLAG = """
flag: churn-model
default: churn:v1
variants: {control: churn:v1, treatment: churn:v2, canary: churn:v2, typo: churn:v3}
environments:
  development:
    enabled: ENABLED
    strategies:
      - name: eu-enterprise
        constraints:
          - {field: region, operator: IN, values: [eu]}
          - {field: segment, operator: IN, values: [enterprise]}
        variants: {canary: 100}
      - name: apac-typo
        constraints: [{field: region, operator: IN, values: [apac]}]
        variants: {typo: 100}
      - name: ab
        rollout: 60
        constraints: [{field: region, operator: IN, values: [us]}]
        variants: {control: 50, treatment: 50}
"""


@pytest.fixture
def client(flags_dir, settings):
    def build(enabled: bool = True) -> FlagClient:
        folder = flags_dir("churn.yaml", FLAG.replace("ENABLED", str(enabled).lower()))
        # churn:v3 is declared so the file loads; the catalog does not know it.
        flag_client = FlagClient(settings, load_flags(folder, BENTOS | {"churn:v3"}))
        flag_client.start()
        clients.append(flag_client)
        return flag_client

    clients: list[FlagClient] = []
    yield build
    for c in clients:
        c.close()


def ctx(user: str, **properties: str) -> dict:
    return {"userId": user, "properties": properties}


@pytest.mark.parametrize(
    ("context", "variant", "bento", "reason"),
    [
        pytest.param(
            ctx("u1", region="eu", segment="enterprise"),
            "canary",
            "churn:v2",
            "strategy_variant",
            id="region-and-segment-match",
        ),
        pytest.param(
            ctx("u1", region="eu", segment="smb"),
            "default",
            "churn:v1",
            "no_matching_strategy",
            id="segment-mismatch",
        ),
        pytest.param(
            ctx("u1", region="apac"),
            "default",
            "churn:v1",
            "unknown_bento",
            id="variant-names-unknown-bento",
        ),
        pytest.param(ctx("u1"), "default", "churn:v1", "no_matching_strategy", id="no-properties"),
    ],
)
def test_decisions(client, context, variant, bento, reason) -> None:
    decision = decide(client(), CATALOG, "churn-model", context)
    assert (decision.variant, decision.bento, decision.reason) == (variant, bento, reason)
    assert decision.default_bento == "churn:v1"


def test_unknown_bento_is_refused_with_the_tag_in_the_detail(client) -> None:
    decision = decide(client(), CATALOG, "churn-model", ctx("u1", region="apac"))
    assert "churn:v3" in (decision.detail or "")


def test_percentage_rollout_share_is_within_binomial_tolerance(client) -> None:
    flag_client, n = client(), 4000
    counts = Counter(
        decide(flag_client, CATALOG, "churn-model", ctx(f"user-{i}", region="us")).variant
        for i in range(n)
    )
    # 60% rollout split 50/50: expect 30% control, 30% treatment, 40% default.
    for variant, share in {"control": 0.3, "treatment": 0.3, "default": 0.4}.items():
        tolerance = 4 * math.sqrt(share * (1 - share) / n)
        assert abs(counts[variant] / n - share) < tolerance, counts


def test_the_same_user_always_gets_the_same_variant(client) -> None:
    flag_client = client()
    for i in range(200):
        first = decide(flag_client, CATALOG, "churn-model", ctx(f"user-{i}", region="us"))
        again = decide(flag_client, CATALOG, "churn-model", ctx(f"user-{i}", region="us"))
        assert first.variant == again.variant


def test_a_disabled_flag_serves_the_default_bento(client) -> None:
    decision = decide(
        client(enabled=False), CATALOG, "churn-model", ctx("u1", region="eu", segment="enterprise")
    )
    assert (decision.bento, decision.reason) == ("churn:v1", "flag_disabled")


def test_an_unknown_flag_raises(client) -> None:
    with pytest.raises(UnknownFlag, match="nope"):
        decide(client(), CATALOG, "nope", ctx("u1"))


def test_a_bento_missing_from_the_catalog_is_refused(client) -> None:
    catalog = replace(CATALOG, endpoints={"churn:v1": "http://v1"})
    decision = decide(
        client(), catalog, "churn-model", ctx("u1", region="eu", segment="enterprise")
    )
    assert (decision.bento, decision.reason) == ("churn:v1", "unknown_bento")


def test_a_flag_without_variants_serves_its_default_and_keeps_its_shadows(
    flags_dir, settings
) -> None:
    folder = flags_dir(
        "shadow.yaml",
        """
        flag: shadowed
        default: churn:v1
        shadows: [churn:v2]
        environments:
          development:
            enabled: true
            strategies:
              - name: everyone
                rollout: 100
        """,
    )
    flag_client = FlagClient(settings, load_flags(folder, BENTOS))
    flag_client.start()
    try:
        decision = decide(flag_client, CATALOG, "shadowed", ctx("u1"))
        state = flag_client.flag("shadowed")
    finally:
        flag_client.close()
    assert decision.bento == "churn:v1"
    assert state is not None and tuple(state.shadows) == ("churn:v2",)
