"""A bounded schemathesis run against /openapi.json: the selector in-process (WSGI) on the repo's
flags, forwarding to real `bentoml serve` bentos. No 5xx, no answer outside the document.

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

pytestmark = pytest.mark.integration

EXAMPLES_PER_OPERATION = 25
CHECKS = [
    schemathesis.checks.not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@pytest.fixture(scope="module")
def selector_app(tmp_path_factory, bento_urls) -> Iterator[Flask]:
    data_dir = tmp_path_factory.mktemp("schemathesis")
    app = create_app({"data_dir": data_dir, "bento_urls": bento_urls, "unleash_url": None})
    yield app
    app.extensions["selector"].close()


def test_every_operation_keeps_its_documented_contract(selector_app) -> None:
    schema = schemathesis.openapi.from_wsgi("/openapi.json", selector_app)
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
            case.call_and_validate(checks=CHECKS)

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
