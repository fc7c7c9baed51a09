"""The churn bento's service in-process (`to_asgi()` + a test client), and its declared versions.

The models are trained in-process by the family's train.py and saved into a model store of
this module's own; no `bentoml build` or `bentoml serve` here (tests/integration/test_bentos.py
does those).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import math
import re
import subprocess
import sys
import textwrap
import warnings
from collections.abc import Iterator
from http import HTTPStatus
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

with warnings.catch_warnings():
    # Starlette 1.x nudges towards `httpx2`; the httpx-based TestClient BentoML documents works.
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from service.config import Settings
from service.errors import ConfigError
from service.registry import build, population, versions

REPO = Path(__file__).resolve().parents[2]
FAMILY_DIR = REPO / "bentos" / "churn"
VERSIONS = ("v1", "v2")


def _record(**changes: Any) -> dict[str, Any]:
    record = population.population(1)[0].features()
    return {**record, **changes}


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The declared churn versions, trained and saved into a model store of this module's own."""
    from bentoml._internal.bento import BentoStore
    from bentoml._internal.configuration.containers import BentoMLContainer
    from bentoml._internal.models import ModelStore

    home = tmp_path_factory.mktemp("bentoml")
    (home / "models").mkdir()
    (home / "bentos").mkdir()
    # BentoML fixes its stores per process on first use; point them at ours for this module.
    BentoMLContainer.model_store.set(ModelStore(str(home / "models")))
    BentoMLContainer.bento_store.set(BentoStore(str(home / "bentos")))
    try:
        train = build.training_module(FAMILY_DIR)
        result = {}
        for version in VERSIONS:
            result[version] = train.train(train.spec_for(version))
            train.save(result[version])
        yield result
    finally:
        BentoMLContainer.model_store.reset()
        BentoMLContainer.bento_store.reset()


def load_service(version: str) -> ModuleType:
    """bentos/churn/service.py as `bentoml serve` of the bento `churn:<version>` would load it.

    Imported by path under its own name: as plain `service` it would collide with this
    project's package. The version is the bento argument `bentoml build --arg` stores.
    """
    from bentoml._internal.configuration.containers import BentoMLContainer

    BentoMLContainer.bento_arguments.set({"version": version})
    try:
        name = f"churn_bento_service_{version}"
        spec = importlib.util.spec_from_file_location(name, FAMILY_DIR / "service.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    finally:
        BentoMLContainer.bento_arguments.reset()
    return module


@pytest.fixture(scope="module")
def client(trained: dict[str, Any]) -> Iterator[TestClient]:
    """A test client on `churn:v1`'s ASGI app; its startup creates the service instance.

    One app per process: BentoML registers its Prometheus metrics globally, so a second app
    would collide. The other version is called directly (`services`).
    """
    with TestClient(load_service("v1").Churn.to_asgi()) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def services(trained: dict[str, Any]) -> dict[str, Any]:
    """Each version's service class instantiated directly, as a worker would."""
    return {v: load_service(v).Churn.inner() for v in VERSIONS}


def predict(service: Any, records: list[dict[str, Any]]) -> dict[str, Any]:
    """Call `predict` directly, validating the records the way the HTTP layer does."""
    inputs = [_schema(service)(**r) for r in records]
    return dict(service.predict(inputs=inputs).model_dump())


def _schema(service: Any) -> Any:
    return sys.modules[service.__class__.__module__].ChurnFeatures


# ---------------------------------------------------------------- the API contract


def test_predict_contract_over_http(client: TestClient) -> None:
    records = [u.features() for u in population.population(5, seed=3)]
    response = client.post("/predict", json={"inputs": records})
    assert response.status_code == 200, response.text
    _assert_contract(response.json(), "churn:v1", len(records))


@pytest.mark.parametrize("version", VERSIONS)
def test_predict_contract_called_directly(services: dict[str, Any], version: str) -> None:
    records = [u.features() for u in population.population(5, seed=3)]
    _assert_contract(predict(services[version], records), f"churn:{version}", len(records))


def _assert_contract(body: dict[str, Any], bento: str, rows: int) -> None:
    assert set(body) == {"predictions", "bento"}
    assert body["bento"] == bento
    assert len(body["predictions"]) == rows
    for prediction in body["predictions"]:
        assert set(prediction) == {"churn_probability", "offer"}
        assert isinstance(prediction["churn_probability"], float)
        assert 0.0 <= prediction["churn_probability"] <= 1.0
        assert prediction["offer"] is (prediction["churn_probability"] >= 0.5)


@pytest.mark.parametrize("version", VERSIONS)
def test_scores_are_the_packaged_models_scores(
    services: dict[str, Any], trained: dict[str, Any], version: str
) -> None:
    users = population.population(50, seed=4)
    body = predict(services[version], [u.features() for u in users])
    served = [p["churn_probability"] for p in body["predictions"]]
    expected = trained[version].pipeline.predict_proba(population.features_frame(users))[:, 1]
    assert served == pytest.approx(list(expected), abs=1e-12)


def test_http_and_direct_calls_agree(client: TestClient, services: dict[str, Any]) -> None:
    records = [u.features() for u in population.population(20, seed=6)]
    over_http = client.post("/predict", json={"inputs": records}).json()
    assert over_http == predict(services["v1"], records)


def test_the_versions_score_differently(services: dict[str, Any]) -> None:
    records = [u.features() for u in population.population(200, seed=5)]
    body = {v: predict(services[v], records) for v in VERSIONS}
    v1, v2 = ([p["churn_probability"] for p in body[v]["predictions"]] for v in VERSIONS)
    assert v1 != pytest.approx(v2, abs=0.01)
    offers = {v: sum(p["offer"] for p in body[v]["predictions"]) for v in VERSIONS}
    assert offers["v2"] > offers["v1"]


def test_an_idle_frustrated_user_gets_the_offer_from_v2_only(services: dict[str, Any]) -> None:
    at_risk = _record(days_since_last_login=60, support_tickets=4, sessions_per_week=0.5)
    offer = {v: predict(services[v], [at_risk])["predictions"][0]["offer"] for v in VERSIONS}
    assert offer == {"v1": False, "v2": True}


def test_readyz(client: TestClient) -> None:
    assert client.get("/readyz").status_code == 200


@pytest.mark.parametrize(
    ("inputs", "field"),
    [
        ([_record(tenure_months=-1)], "tenure_months"),
        ([_record(monthly_spend=2e6)], "monthly_spend"),
        ([_record(support_tickets="many")], "support_tickets"),
        ([_record(days_since_last_login=1.5)], "days_since_last_login"),
        ([_record(sessions_per_week=None)], "sessions_per_week"),
        ([_record(region="mars")], "region"),
        ([{k: v for k, v in _record().items() if k != "segment"}], "segment"),
        ([_record(user_id="u000001")], "user_id"),
        ([], "inputs"),
        ([_record()] * 1_001, "inputs"),
        ("not a list", "inputs"),
    ],
    ids=[
        "negative",
        "too-large",
        "not-a-number",
        "not-an-int",
        "null",
        "unknown-region",
        "missing",
        "extra-field",
        "empty",
        "batch-too-large",
        "not-a-list",
    ],
)
def test_bad_input_is_a_400_naming_the_field(client: TestClient, inputs: Any, field: str) -> None:
    response = client.post("/predict", json={"inputs": inputs})
    assert response.status_code == 400
    locations = [error["loc"] for error in response.json()["detail"]]
    assert any(field in loc for loc in locations), locations


@pytest.mark.parametrize(
    "body", [{}, {"records": []}, "not json"], ids=["empty", "wrong-key", "not-json"]
)
def test_a_malformed_body_is_a_400(client: TestClient, body: Any) -> None:
    if isinstance(body, str):
        response = client.post("/predict", content=body)
    else:
        response = client.post("/predict", json=body)
    assert response.status_code == 400


# ---------------------------------------------------------------- fault injection


def save_with_serving(trained_version: Any, version: str, **serving: Any) -> None:
    """Save a trained model again as `churn-model:<version>`, with other serving knobs."""
    spec = trained_version.spec
    spec = dataclasses.replace(spec, version=version, serving={**spec.serving, **serving})
    build.training_module(FAMILY_DIR).save(dataclasses.replace(trained_version, spec=spec))


@pytest.fixture(scope="module")
def drill(trained: dict[str, Any]) -> Any:
    """v1's model served with `inject_error_rate: 0.2`, as a game day would configure it."""
    save_with_serving(trained["v1"], "drill", inject_error_rate=0.2)
    return load_service("drill").Churn.inner()


def outcome(service: Any, record: dict[str, Any]) -> int | dict[str, Any]:
    """The HTTP status BentoML answers an error with, or the response body."""
    from bentoml.exceptions import BentoMLException

    try:
        return predict(service, [record])
    except BentoMLException as exc:  # BentoML's app answers with exc.error_code
        return int(exc.error_code)


def test_injected_faults_fail_their_share_of_calls_with_a_500(drill: Any) -> None:
    records = [u.features() for u in population.population(500, seed=7)]
    outcomes = [outcome(drill, r) for r in records]
    failed = [o for o in outcomes if isinstance(o, int)]
    assert set(failed) == {HTTPStatus.INTERNAL_SERVER_ERROR}
    # Four standard errors of a binomial share: the draw is a hash, so this never flakes.
    tolerance = 4 * math.sqrt(0.2 * 0.8 / len(records))
    assert len(failed) / len(records) == pytest.approx(0.2, abs=tolerance)


def test_the_same_inputs_always_fail_or_always_succeed(
    drill: Any, services: dict[str, Any]
) -> None:
    records = [u.features() for u in population.population(100, seed=8)]
    first = [outcome(drill, r) for r in records]
    assert [outcome(drill, r) for r in records] == first
    succeeded = [(r, o) for r, o in zip(records, first, strict=True) if not isinstance(o, int)]
    assert 0 < len(succeeded) < len(records)
    # A call the drill lets through gets the model's own answer, as without the knob.
    for record, body in succeeded:
        assert body["predictions"] == predict(services["v1"], [record])["predictions"]


def test_no_faults_without_the_knob(services: dict[str, Any]) -> None:
    assert {v: services[v].inject_error_rate for v in VERSIONS} == {"v1": 0.0, "v2": 0.0}


@pytest.mark.parametrize("rate", [1.0, -0.1, "0.2", True], ids=["one", "negative", "text", "bool"])
def test_a_bad_error_rate_stops_the_service_at_startup(trained: dict[str, Any], rate: Any) -> None:
    save_with_serving(trained["v1"], "badrate", inject_error_rate=rate)
    with pytest.raises(ValueError, match=re.escape("serving.inject_error_rate must be a number")):
        load_service("badrate").Churn.inner()


# ---------------------------------------------------------------- the input schema


def test_the_input_schema_is_the_populations_features() -> None:
    assert load_service("v1").FEATURES == population.FEATURES


def test_every_user_of_the_population_is_a_valid_input() -> None:
    schema = load_service("v1").ChurnFeatures
    for user in population.population(5_000):
        schema(**user.features())


def test_the_service_needs_the_version_argument() -> None:
    from bentoml.exceptions import InvalidArgument

    spec = importlib.util.spec_from_file_location("churn_bento_no_args", FAMILY_DIR / "service.py")
    assert spec is not None and spec.loader is not None
    with pytest.raises(InvalidArgument, match="version"):
        spec.loader.exec_module(importlib.util.module_from_spec(spec))


# ---------------------------------------------------------------- the declared versions


def test_declared_bentos_lists_the_churn_versions() -> None:
    specs = versions.declared_bentos(Settings.load().bentos_dir)
    assert {"churn:v1", "churn:v2"} <= set(specs)
    v2 = specs["churn:v2"]
    assert (v2.family, v2.version, v2.model_tag) == ("churn", "v2", "churn-model:v2")
    assert set(v2.features) <= set(population.FEATURES)
    assert v2.serving == {"offer_threshold": 0.5}
    assert v2.training_rows > 0 and 0 < v2.holdout < 1


def test_declared_bentos_does_not_import_bentoml() -> None:
    code = (
        "import sys; from service.registry import versions; from service.config import Settings; "
        "versions.declared_bentos(Settings.load().bentos_dir); "
        "assert 'bentoml' not in sys.modules and 'sklearn' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


VALID = """
    family: churn
    model_name: churn-model
    defaults: {training: {rows: 100, seed: 1, holdout: 0.2}}
    versions:
      - {version: v1, change: c, model: {kind: logistic_regression}, features: [segment]}
"""
DUPLICATE = "  - {version: v1, change: c, model: {kind: x}, features: [segment]}\n"


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("family: churn", "family: other", "family: 'other' must match its folder"),
        ("version: v1", "version: V1!", "versions[0].version"),
        ("kind: logistic_regression", "k: x", "versions[0].model.kind"),
        ("features: [segment]", "features: []", "versions[0].features"),
        ("rows: 100, ", "", "versions[0].training.rows"),
        ("features: [segment]}\n", "features: [segment]}\n" + DUPLICATE, "declared twice"),
    ],
    ids=["family-mismatch", "bad-version", "no-kind", "no-features", "no-rows", "duplicate"],
)
def test_an_invalid_declaration_names_the_problem(
    tmp_path: Path, old: str, new: str, message: str
) -> None:
    text = textwrap.dedent(VALID)
    assert old in text
    (tmp_path / "churn").mkdir()
    (tmp_path / "churn" / "versions.yaml").write_text(text.replace(old, new))
    with pytest.raises(ConfigError, match=re.escape(message)):
        versions.declared_bentos(tmp_path)
