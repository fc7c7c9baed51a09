"""Shadow deployments: mirrored off the request path, paired by request id, bounded, counted."""

from __future__ import annotations

import threading
from typing import Any

import pytest
import sqlalchemy as sa

from service.errors import FlagDefinitionError
from service.flags.client_features import client_features
from service.flags.definitions import load_flags
from service.registry.population import population
from service.serving.app import create_app
from service.serving.catalog import BentoCatalog
from service.serving.flag_client import FeatureStateCache, FlagClient
from service.serving.forwarding import BentoCallFailed, BentoRejected, BentoReply
from service.serving.routing import decide
from service.store.events import exposures

RECORD = population(1)[0].features()

FLAG = """
flag: churn-model
default: churn:v1
shadows: [churn:v2]
variants: {control: churn:v1}
environments:
  development:
    enabled: true
    strategies:
      - name: all
        variants: {control: 100}
"""


class Bentos:
    """Fake transport for live and shadow calls: per-URL answers, and a gate to hold shadows."""

    def __init__(self) -> None:
        self.fail: dict[str, Exception] = {}
        self.gate = threading.Event()
        self.gate.set()
        self.offer = {"http://v1": True, "http://v2": True}

    def predict(self, base_url: str, inputs: Any, request_id: str) -> BentoReply:
        if base_url == "http://v2":
            self.gate.wait(5)
        if base_url in self.fail:
            raise self.fail[base_url]
        score = 0.7 if base_url == "http://v1" else 0.6
        return BentoReply(
            {"predictions": [{"churn_probability": score, "offer": self.offer[base_url]}]}, 1.0
        )

    def close(self) -> None:
        pass


@pytest.fixture
def bentos() -> Bentos:
    return Bentos()


@pytest.fixture
def app(settings, flags_dir, bentos):
    app = create_app(
        {
            **settings.__dict__,
            "flags_dir": flags_dir("churn-model.yaml", FLAG),
            "bento_urls": "churn:v1=http://v1,churn:v2=http://v2",
            "shadow_queue_size": 2,
            "shadow_threads": 1,
        }
    )
    selector = app.extensions["selector"]
    selector.forwarder = bentos
    selector.shadows.forwarder = bentos
    yield app
    selector.close()


def predict(app, request_id: str):
    return app.test_client().post(
        "/v1/models/churn-model/predict",
        json={"context": {"userId": "u1"}, "inputs": [RECORD]},
        headers={"X-Request-ID": request_id},
    )


def rows(app) -> list[dict]:
    selector = app.extensions["selector"]
    selector.shadows.close()  # sends what is queued, so the rows below are complete
    selector.events.flush()
    with selector.events.engine.connect() as conn:
        query = sa.select(exposures).order_by(exposures.c.shadow)
        return [dict(r._mapping) for r in conn.execute(query)]


def test_a_shadow_prediction_is_logged_paired_with_the_live_one(app) -> None:
    response = predict(app, "req-1")
    assert (response.status_code, response.json["bento"]) == (200, "churn:v1")
    live, shadow = rows(app)
    assert (live["shadow"], live["bento"], live["variant"]) == (False, "churn:v1", "control")
    assert shadow["request_id"] == live["request_id"] == "req-1"
    assert (shadow["shadow"], shadow["variant"], shadow["bento"], shadow["reason"]) == (
        True,
        "shadow",
        "churn:v2",
        "shadow",
    )
    assert (shadow["status"], shadow["prediction"], shadow["inputs"]) == (200, 0.6, [RECORD])
    assert shadow["user_id"] == "u1" and shadow["latency_ms"] > 0


@pytest.mark.parametrize(
    ("error", "status"),
    [
        pytest.param(BentoCallFailed("timed out"), 599, id="timeout-is-599"),
        pytest.param(BentoCallFailed("answered 500", 500), 500, id="server-error"),
        pytest.param(BentoRejected("bad inputs", 400), 400, id="rejected"),
    ],
)
def test_a_failing_shadow_is_logged_with_its_status_and_never_touches_the_live_answer(
    app, bentos, error, status
) -> None:
    bentos.fail["http://v2"] = error
    response = predict(app, "req-1")
    assert (response.status_code, response.json["bento"]) == (200, "churn:v1")
    live, shadow = rows(app)
    assert (live["status"], shadow["status"], shadow["prediction"]) == (200, status, None)


def test_a_full_shadow_queue_drops_copies_not_requests(app, bentos) -> None:
    bentos.gate.clear()  # the shadow thread blocks on its first copy; two more fill the queue
    statuses = [predict(app, f"req-{i}").status_code for i in range(6)]
    assert statuses == [200] * 6
    selector = app.extensions["selector"]
    dropped = selector.shadows.dropped
    assert dropped >= 3  # 6 copies, at most 1 in flight + 2 queued
    metrics = app.test_client().get("/metrics").get_data(as_text=True)
    assert f'selector_shadow_dropped_total{{bento="churn:v2",flag="churn-model"}} {dropped}.0' in (
        metrics
    )
    bentos.gate.set()
    logged = rows(app)
    assert sum(not r["shadow"] for r in logged) == 6
    assert sum(r["shadow"] for r in logged) == 6 - dropped


@pytest.mark.parametrize(("shadow_offer", "agree"), [(True, "true"), (False, "false")])
def test_agreement_compares_the_decisions_not_the_scores(app, bentos, shadow_offer, agree):
    bentos.offer["http://v2"] = shadow_offer
    predict(app, "req-1")
    rows(app)
    metrics = app.test_client().get("/metrics").get_data(as_text=True)
    assert (
        f'selector_shadow_agreement_total{{agree="{agree}",bento="churn:v2",flag="churn-model"}}'
        " 1.0"
    ) in metrics


@pytest.mark.parametrize(
    ("shadows", "words"),
    [
        pytest.param("churn:v2", "shadows: must be a list of bento tags", id="not-a-list"),
        pytest.param("[churn:v9]", "shadows[0]: unknown bento 'churn:v9'", id="unknown-bento"),
        pytest.param("[churn:latest]", "never 'latest'", id="latest"),
        pytest.param("[churn:v2, churn:v2]", "listed more than once", id="duplicate"),
    ],
)
def test_shadows_must_be_known_bentos(flags_dir, shadows: str, words: str) -> None:
    text = FLAG.replace("shadows: [churn:v2]", f"shadows: {shadows}")
    with pytest.raises(FlagDefinitionError) as caught:
        load_flags(flags_dir("f.yaml", text), {"churn:v1", "churn:v2"})
    assert words in str(caught.value)


def test_shadows_travel_as_zero_weight_flag_variants_and_never_serve(settings, flags_dir):
    flag_set = load_flags(flags_dir("f.yaml", FLAG), {"churn:v1", "churn:v2"})
    features = client_features(flag_set, "development")
    [variants] = [f["variants"] for f in features["features"]]
    assert [(v["name"], v["weight"], v["payload"]["value"]) for v in variants] == [
        ("default", 1000, "churn:v1"),
        ("shadow-1", 0, "churn:v2"),
    ]
    cache = FeatureStateCache()
    cache.bootstrap_from_dict(features)
    assert cache.flags["churn-model"].shadows == ("churn:v2",)
    # A strategy without variants falls back to the flag-level variants: still the default.
    no_variants = FLAG.replace("        variants: {control: 100}\n", "")
    client = FlagClient(settings, load_flags(flags_dir("f.yaml", no_variants)))
    client.start()
    try:
        catalog = BentoCatalog({"churn:v1": "http://v1", "churn:v2": "http://v2"})
        for user in range(50):
            decision = decide(client, catalog, "churn-model", {"userId": f"u{user}"})
            assert (decision.bento, decision.variant) == ("churn:v1", "default")
    finally:
        client.close()
