"""Retraining and data versioning for real: train, package, gate on `bentoml serve`.

New versions go into copies of bentos/ (the repo's versions.yaml is never touched) but into
the session's store, so they are compared with the real, already built default `churn:v1`.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import yaml
from click.testing import CliRunner, Result

from service.cli import main
from service.config import Settings
from service.registry import bentos, gates, versions
from service.registry import snapshots as data_snapshots

if TYPE_CHECKING:
    from bento_fixtures import BuiltBentos

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def rollout(settings: Settings, *args: str) -> Result:
    return CliRunner().invoke(main, list(args), obj={"settings": settings})


def bentos_copy(tmp_path: Path) -> Path:
    shutil.copytree(REPO / "bentos", tmp_path / "bentos")
    return tmp_path / "bentos"


def on_store(built: BuiltBentos, bentos_dir: Path) -> Settings:
    return Settings.load({"data_dir": built.settings.data_dir, "bentos_dir": bentos_dir})


def test_train_packages_and_gates_a_version_on_drifted_data(
    built_bentos: BuiltBentos, tmp_path: Path
) -> None:
    settings = on_store(built_bentos, bentos_copy(tmp_path))
    result = rollout(
        settings,
        "models",
        "train",
        "churn",
        "--version",
        "v3",
        "--base",
        "v1",
        "--drift",
        "0.3",
        "--period",
        "2026-Q4",
    )
    assert result.exit_code == 0, result.output
    assert "churn:v3: trained on snapshot" in result.output
    assert "gates passed; ready for a canary" in result.output
    assert "vs-default:auc[overall]" in result.output  # evaluated against the flag's default
    spec = versions.declared_bentos(settings.bentos_dir)["churn:v3"]
    assert (spec.drift, spec.period, spec.kind) == (0.3, "2026-Q4", "logistic_regression")
    snapshot = data_snapshots.find_snapshot(str(spec.snapshot), settings.data_dir)
    assert snapshot.source["drift"] == 0.3 and snapshot.period == "2026-Q4"
    bento = bentos.stored_bento("churn:v3", settings)
    assert bento.labels["snapshot"] == snapshot.sha256
    assert gates.failed_gates(["churn:v3"], settings) == {}
    card = (bento.rollout_dir / "card.md").read_text()
    assert "- period: 2026-Q4" in card and "drift 0.3" in card
    assert "- against churn:v2:" in card and "  - training data: snapshot" in card
    # The default was scored on v3's drifted holdout too, and the gate compared those.
    assert "on this version's holdout, the flag default churn:v1 scores AUC" in card
    report = gates.read_report(bento)
    assert report is not None
    overall = next(r for r in report.results if r.name == "vs-default:auc[overall]")
    assert "churn:v1 (same holdout)" in overall.detail


def test_a_snapshot_rebuilds_the_same_model(built_bentos: BuiltBentos, tmp_path: Path) -> None:
    built = built_bentos.built["churn:v1"]
    source = bentos.stored_bento("churn:v1", built_bentos.settings).labels["snapshot"]
    fresh = Settings.load({"data_dir": tmp_path / "data"})
    target = data_snapshots.snapshots_dir(fresh.data_dir)
    target.mkdir(parents=True)
    for suffix in (".csv", ".json"):
        name = f"{source}{suffix}"
        shutil.copy(data_snapshots.snapshots_dir(built_bentos.settings.data_dir) / name, target)
    result = rollout(
        fresh, "models", "build", "--version", "v1", "--snapshot", source[:12], "--no-gates"
    )
    assert result.exit_code == 0, result.output
    rebuilt = bentos.stored_bento("churn:v1", fresh)
    assert rebuilt.labels["model_hash"] == built.model_hash
    assert rebuilt.labels["snapshot"] == source


def test_a_schema_breaking_version_fails_its_gates_and_leaves_nothing(
    built_bentos: BuiltBentos, tmp_path: Path
) -> None:
    bentos = bentos_copy(tmp_path)
    service = bentos / "churn" / "service.py"
    # Renaming an output field breaks every caller of the default churn:v1.
    service.write_text(service.read_text().replace("    offer: bool", "    offered: bool"))
    service.write_text(service.read_text().replace("offer=bool(", "offered=bool("))
    versions = bentos / "churn" / "versions.yaml"
    before = versions.read_text()
    settings = on_store(built_bentos, bentos)
    result = rollout(settings, "models", "train", "churn", "--version", "v4", "--base", "v1")
    assert result.exit_code == 1
    assert "churn:v4: gate schema:churn:v1 failed" in result.output
    assert "output.predictions[].offer: no longer returned" in result.output
    assert versions.read_text() == before
    home = settings.bentoml_home
    assert not (home / "bentos" / "churn" / "v4").exists()
    assert not (home / "models" / "churn-model" / "v4").exists()
    kept = yaml.safe_load((settings.data_dir / "gate-reports" / "churn-v4.json").read_text())
    assert kept["passed"] is False
