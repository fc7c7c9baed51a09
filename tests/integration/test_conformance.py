"""The Unleash client-specification suite, sent through the selector's HTTP layer.

`@unleash/client-specification` 6.1.0 (the version UnleashClient 6.9.1 pins as
CLIENT_SPEC_VERSION; installed by scripts/install-unleash next to the Unleash server) holds
states and, for each, contexts with the expected is-enabled result or variant. Each state is
loaded into the selector's flag client exactly as embedded mode loads flags/ (the SDK cache,
offline connector), and each test's context goes over HTTP as query parameters, so what is
checked is our HTTP -> Unleash context mapping (service/serving/context.py) plus the engine.

The selector's own `resolve` answers with the routing decision, which needs a default bento
that spec states do not declare, and has no is-enabled field; so the app gets one extra,
test-only route, `GET /conformance/<flag>`, that parses the query with the same
`unleash_context.from_query` as `resolve` and answers with the flag client's raw verdicts.
The flag client's own answer comes through its engine shortcut (service/serving/
engine_variants.py), so the suite holds the shortcut to the specification as well.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Blueprint, Flask, current_app, request
from flask.testing import FlaskClient

from service.config import Settings
from service.flags.model import FlagSet
from service.harness.unleash_server import INSTALL_HINT, default_install_home
from service.serving import context as unleash_context
from service.serving.app import create_app
from service.serving.flag_client import FlagClient

pytestmark = pytest.mark.integration

SPEC_VERSION = "6.1.0"
SPEC_DIR = (
    default_install_home() / "node_modules" / "@unleash" / "client-specification" / "specifications"
)

conformance = Blueprint("conformance", __name__)


@conformance.get("/conformance/<path:flag>")
def evaluate(flag: str) -> Any:
    """Test-only: the flag client's raw answers for the context `resolve` would build."""
    context = unleash_context.from_query(request.args)
    flags: FlagClient = current_app.extensions["selector"].flags
    sdk = flags._client  # the same UnleashClient the selector evaluates with
    ours = flags.variant(flag, context)
    return {
        "enabled": sdk.is_enabled(flag, context),
        "variant": sdk.get_variant(flag, context),
        "flag_client": {
            "name": ours.name,
            "payload": ours.payload,
            "bento": ours.bento,
            "enabled": ours.flag_enabled,
        },
    }


def load_specs() -> list[tuple[str, dict[str, Any]]]:
    index = SPEC_DIR / "index.json"
    if not index.exists():
        pytest.fail(
            f"@unleash/client-specification {SPEC_VERSION} is not installed ({index} is "
            f"missing): {INSTALL_HINT}",
            pytrace=False,
        )
    names = json.loads(index.read_text())
    return [(name, json.loads((SPEC_DIR / name).read_text())) for name in names]


def spec_cases() -> Iterator[Any]:
    for name, spec in load_specs():
        for kind in ("tests", "variantTests"):
            for number, case in enumerate(spec.get(kind) or []):
                yield pytest.param(
                    name,
                    spec["state"],
                    case,
                    kind == "variantTests",
                    id=f"{name[:2]}-{kind}-{number}",
                )


def query(context: dict[str, Any]) -> dict[str, str]:
    """The context as an HTTP client would send it: properties as `properties[name]`."""
    args = {key: str(value) for key, value in context.items() if key != "properties"}
    for key, value in (context.get("properties") or {}).items():
        args[f"properties[{key}]"] = str(value)
    return args


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flask]:
    data = tmp_path_factory.mktemp("conformance")
    app = create_app(
        {"data_dir": data, "unleash_url": None, "unleash_token": None, "database_url": None}
    )
    app.register_blueprint(conformance)
    yield app
    app.extensions["selector"].close()


@pytest.fixture(scope="module")
def load_state(app: Flask) -> Iterator[Any]:
    """Swap the selector's flag client for one holding a spec's state (cached per spec)."""
    selector = app.extensions["selector"]
    original = selector.flags
    clients: dict[str, FlagClient] = {}

    def load(name: str, state: dict[str, Any]) -> None:
        if name not in clients:
            settings = Settings.load({"environment": "default", "app_name": "conformance"})
            client = FlagClient(settings, FlagSet(flags={}, context_fields={}))
            client.cache.bootstrap_from_dict(state)
            client.start()
            assert client._variants is not None, "the engine shortcut did not attach"
            clients[name] = client
        selector.flags = clients[name]

    yield load
    selector.flags = original
    for client in clients.values():
        client.close()


@pytest.fixture(scope="module")
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.mark.parametrize(("spec", "state", "case", "is_variant_test"), list(spec_cases()))
def test_client_specification(
    client: FlaskClient,
    load_state: Any,
    spec: str,
    state: dict[str, Any],
    case: dict[str, Any],
    is_variant_test: bool,
) -> None:
    load_state(spec, state)
    response = client.get(f"/conformance/{case['toggleName']}", query_string=query(case["context"]))
    assert response.status_code == 200, response.json
    answer = response.json
    expected = case["expectedResult"]
    if is_variant_test:
        got = answer["variant"]
        assert {k: got.get(k) for k in expected} == expected, case["description"]
        assert answer["flag_client"]["name"] == expected["name"]
        assert answer["flag_client"]["payload"] == expected.get("payload")
        assert answer["flag_client"]["enabled"] == expected.get(
            "feature_enabled", expected["enabled"]
        )
    else:
        assert answer["enabled"] is expected, case["description"]
