"""The churn bentos for real: `rollout models build` into a temporary store, `bentoml serve`.

Fixtures `built_bentos` and `bento_servers` come from tests/integration/bento_fixtures.py.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pytest
import requests
import yaml

from service.config import Settings
from service.processes import ProcessFailed, free_port
from service.registry import build, population, versions
from service.registry.bento_process import BentoProcess

if TYPE_CHECKING:
    from bento_fixtures import BuiltBentos

pytestmark = pytest.mark.integration

TAGS = ("churn:v1", "churn:v2")
REPO = Path(__file__).resolve().parents[2]


def post(url: str, inputs: Any) -> requests.Response:
    return requests.post(f"{url}/predict", json={"inputs": inputs}, timeout=30)


def served_scores(server: BentoProcess, features: pd.DataFrame) -> np.ndarray:
    """Churn scores from the served bento for every row, in batches the API accepts."""
    records = features.to_dict("records")
    scores: list[float] = []
    for start in range(0, len(records), 1_000):
        response = post(server.url, records[start : start + 1_000])
        response.raise_for_status()
        scores += [p["churn_probability"] for p in response.json()["predictions"]]
    return np.array(scores)


def store_yaml(settings: Settings, kind: str, tag: str) -> dict[str, Any]:
    name, version = tag.split(":")
    filename = "bento.yaml" if kind == "bentos" else "model.yaml"
    path = settings.bentoml_home / kind / name / version / filename
    return dict(yaml.safe_load(path.read_text()))


# ---------------------------------------------------------------- building


def test_every_declared_version_is_built(built_bentos: BuiltBentos) -> None:
    declared = versions.declared_bentos(built_bentos.settings.bentos_dir)
    assert set(built_bentos.built) == set(declared)
    for tag, built in built_bentos.built.items():
        spec = declared[tag]
        bento = store_yaml(built_bentos.settings, "bentos", tag)
        assert bento["args"] == {"version": spec.version}
        assert [m["tag"] for m in bento["services"][0]["models"]] == [spec.model_tag]
        assert bento["labels"]["model_hash"] == built.model_hash
        assert bento["labels"]["data_fingerprint"] == built.data_fingerprint
        model = store_yaml(built_bentos.settings, "models", spec.model_tag)
        assert model["labels"]["model_hash"] == built.model_hash
        assert model["metadata"]["change"] == spec.change
        assert model["metadata"]["params"] == spec.params
        assert set(model["metadata"]["metrics"]) == {"overall", "by_segment", "by_region"}


def test_building_again_skips_the_unchanged_versions(built_bentos: BuiltBentos) -> None:
    again = {b.tag: b for b in build.build_all(built_bentos.settings)}
    assert all(b.skipped for b in again.values())
    for tag, built in built_bentos.built.items():
        assert again[tag].model_hash == built.model_hash
        assert again[tag].recipe == built.recipe


def test_a_cold_build_elsewhere_gives_the_same_models_and_a_change_is_rebuilt(
    built_bentos: BuiltBentos, tmp_path: Path
) -> None:
    bentos_dir = tmp_path / "bentos"
    shutil.copytree(REPO / "bentos", bentos_dir, ignore=shutil.ignore_patterns("__pycache__"))
    settings = Settings.load({"data_dir": tmp_path / "data", "bentos_dir": bentos_dir})

    # This is about recipes and model hashes; gating is covered by test_gates_served.py.
    cold = {b.tag: b for b in build.build_all(settings, gate=False)}
    for tag, built in built_bentos.built.items():
        assert not cold[tag].skipped
        assert (cold[tag].model_hash, cold[tag].recipe) == (built.model_hash, built.recipe)

    versions = bentos_dir / "churn" / "versions.yaml"
    versions.write_text(versions.read_text().replace("{C: 1.0,", "{C: 0.001,"))
    changed = {b.tag: b for b in build.build_all(settings, gate=False)}
    assert not changed["churn:v1"].skipped
    assert changed["churn:v1"].model_hash != cold["churn:v1"].model_hash
    assert changed["churn:v2"].skipped
    relabelled = store_yaml(settings, "bentos", "churn:v1")["labels"]
    assert relabelled["model_hash"] == changed["churn:v1"].model_hash


# ---------------------------------------------------------------- serving


@pytest.mark.parametrize("tag", TAGS)
def test_predict_contract(bento_servers: dict[str, BentoProcess], tag: str) -> None:
    records = [u.features() for u in population.population(10, seed=21)]
    response = post(bento_servers[tag].url, records)
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"predictions", "bento"}
    assert body["bento"] == tag
    assert len(body["predictions"]) == len(records)
    for prediction in body["predictions"]:
        assert set(prediction) == {"churn_probability", "offer"}
        assert 0.0 <= prediction["churn_probability"] <= 1.0
        assert prediction["offer"] is (prediction["churn_probability"] >= 0.5)


@pytest.mark.parametrize("tag", TAGS)
def test_the_served_model_is_the_built_one(
    bento_servers: dict[str, BentoProcess], built_bentos: BuiltBentos, tag: str
) -> None:
    """The model hash recomputed from the served scores equals the one recorded at build."""
    train = build.training_module(REPO / "bentos" / "churn")
    scores = served_scores(bento_servers[tag], train.probe_frame())
    assert train.scores_hash(scores) == built_bentos.built[tag].model_hash


def test_the_versions_predict_differently(bento_servers: dict[str, BentoProcess]) -> None:
    features = population.features_frame(population.population(300, seed=22))
    v1, v2 = (served_scores(bento_servers[tag], features) for tag in TAGS)
    assert np.abs(v1 - v2).mean() > 0.02
    assert (v2 >= 0.5).sum() > (v1 >= 0.5).sum()


def test_the_served_policies_have_the_planted_effect(
    bento_servers: dict[str, BentoProcess],
) -> None:
    users = population.population()
    retention = {
        tag: population.expected_retention(
            lambda x, t=tag: served_scores(bento_servers[t], x), users
        )
        for tag in TAGS
    }
    assert 0.03 <= retention["churn:v2"] - retention["churn:v1"] <= 0.05


@pytest.mark.parametrize("tag", TAGS)
@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"tenure_months": -1}, "tenure_months"),
        ({"region": "mars"}, "region"),
        ({"user_id": "u000001"}, "user_id"),
    ],
    ids=["out-of-bounds", "unknown-value", "extra-field"],
)
def test_bad_input_is_a_400_naming_the_field(
    bento_servers: dict[str, BentoProcess], tag: str, changes: dict[str, Any], field: str
) -> None:
    record = {**population.population(1)[0].features(), **changes}
    response = post(bento_servers[tag].url, [record])
    assert response.status_code == 400
    assert field in response.text
    assert any(field in error["loc"] for error in response.json()["detail"])


# ---------------------------------------------------------------- the server process


def test_a_server_stops_with_its_whole_process_group(built_bentos: BuiltBentos) -> None:
    with BentoProcess("churn:v1", free_port(), built_bentos.settings) as server:
        server.wait_ready(timeout=90)
        assert requests.get(f"{server.url}/readyz", timeout=5).status_code == 200
        assert server.process is not None
        group = server.process.pid
    with pytest.raises(ProcessLookupError):
        os.killpg(group, 0)
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{server.url}/readyz", timeout=5)
    assert "churn:v1" in server.log_file.read_text()


def test_an_unknown_bento_fails_fast_with_the_log_tail(built_bentos: BuiltBentos) -> None:
    with (
        BentoProcess("churn:v404", settings=built_bentos.settings) as server,
        pytest.raises(ProcessFailed, match="exited early") as failure,
    ):
        server.wait_ready(timeout=60)
    assert "churn:v404" in str(failure.value)
