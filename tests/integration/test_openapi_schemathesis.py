"""A bounded schemathesis run against /openapi.json: the selector in-process (WSGI) on the repo's
flags, forwarding to real `bentoml serve` bentos. No 5xx, no answer outside the document.

Authenticated: every keyed operation is required (ROLLOUT_REQUIRE_KEYS=predict, a protected
/metrics, outcomes keyed because a key exists) and the run sends a key with every scope; the
same operations without a key answer 401, with a key lacking the scope 403.

Each operation gets a fixed number of generated cases (hypothesis, no deadline), so the run is
bounded in requests rather than in wall time.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from flask import Flask
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from service.serving.app import create_app
from service.serving.keys import KeyFile

pytestmark = pytest.mark.integration

EXAMPLES_PER_OPERATION = 25
CHECKS = [
    schemathesis.checks.not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> dict[str, str]:
    keys_file = KeyFile(tmp_path_factory.mktemp("keys") / "api-keys")
    return {
        "all": keys_file.create("all", ("outcomes", "predict", "metrics")),
        "operate": keys_file.create("operate-only", ("operate",)),
        "file": str(keys_file.path),
    }


@pytest.fixture(scope="module")
def selector_app(tmp_path_factory, bento_urls, keys) -> Iterator[Flask]:
    data_dir = tmp_path_factory.mktemp("schemathesis")
    app = create_app(
        {
            "data_dir": data_dir,
            "bento_urls": bento_urls,
            "unleash_url": None,
            "api_keys_file": keys["file"],
            "require_keys": "predict",
            "protect_metrics": True,
        }
    )
    # One process: an exposure it served is known at once, no other worker to wait for.
    app.extensions["outcome_check"].grace = 0
    yield app
    app.extensions["selector"].close()


def test_every_operation_keeps_its_documented_contract(selector_app, keys) -> None:
    schema = schemathesis.openapi.from_wsgi("/openapi.json", selector_app)
    auth = {"Authorization": f"Bearer {keys['all']}"}
    operations = [result.ok() for result in schema.get_all_operations()]
    # Every route but /openapi.json itself, which schemathesis does not test against itself.
    assert len(operations) == 6
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
        )
        def keeps_contract(case: schemathesis.Case) -> None:
            case.call_and_validate(checks=CHECKS, headers=auth)

        keeps_contract()
    # Generated requests did reach the bentos, not only the error paths.
    assert served(selector_app, "200") > 0, {
        s: served(selector_app, s) for s in ("400", "404", "422", "503")
    }


def served(app: Flask, status: str) -> float:
    registry = app.extensions["selector"].metrics.registry
    return sum(
        sample.value
        for metric in registry.collect()
        for sample in metric.samples
        if sample.name == "selector_requests_total" and sample.labels["status"] == status
    )


def test_keyed_operations_refuse_a_missing_unknown_or_wrong_scope_key(selector_app, keys) -> None:
    client = selector_app.test_client()
    calls = {
        "/v1/models/churn-model/predict": {"json": {"context": {}, "inputs": []}},
        "/v1/models/churn-model/resolve?userId=u1": {},
        "/v1/outcomes": {"json": {"metric": "retained", "value": 1, "request_id": "r1"}},
        "/metrics": {},
    }
    for path, kwargs in calls.items():
        call = client.get if "resolve" in path or path == "/metrics" else client.post
        missing = call(path, **kwargs)
        unknown = call(path, headers={"Authorization": "Bearer rk_not-a-key"}, **kwargs)
        wrong = call(path, headers={"Authorization": f"Bearer {keys['operate']}"}, **kwargs)
        assert (missing.status_code, unknown.status_code, wrong.status_code) == (401, 401, 403)
        assert missing.headers["WWW-Authenticate"].startswith("Bearer")
        assert missing.json["error"]["code"] == "unauthorized"
        assert "rk_not-a-key" not in unknown.get_data(as_text=True)
