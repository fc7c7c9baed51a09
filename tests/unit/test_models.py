"""Declared versions, the registry view and retraining's bookkeeping (no BentoML involved)."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from service.config import Settings
from service.registry import bentos, build, versions
from service.registry.versions import UnknownBento

REPO = Path(__file__).resolve().parents[2]


def test_versions_are_selected_by_tag_or_version() -> None:
    chosen = build.select_versions(REPO / "bentos", ["v2", "churn:v1"])
    assert [s.bento_tag for s in chosen] == ["churn:v1", "churn:v2"]
    assert len(build.select_versions(REPO / "bentos")) == len(
        versions.declared_bentos(REPO / "bentos")
    )


def test_an_unknown_version_is_named() -> None:
    with pytest.raises(UnknownBento, match=r"unknown version churn:v9; declared: churn:v1"):
        build.select_versions(REPO / "bentos", ["churn:v9"])


def test_stored_bentos_and_an_unknown_tag(
    settings: Settings, store_files: Callable[..., Path]
) -> None:
    store_files("churn:v2", created="2026-11-25T11:00:00+00:00")
    store_files("churn:v1", created="2026-11-25T10:00:00+00:00")
    assert [b.tag for b in bentos.stored_bentos(settings)] == ["churn:v1", "churn:v2"]
    bento = bentos.stored_bento("churn:v1", settings)
    assert bento.model_tag == "churn-model:v1" and bento.size_bytes() > 0
    with pytest.raises(UnknownBento, match=r"no bento churn:v7 .* built: churn:v1, churn:v2"):
        bentos.stored_bento("churn:v7", settings)


def test_serving_flags_name_flag_environment_and_role() -> None:
    flags = REPO / "flags"
    assert "churn-model/development (default, control)" in bentos.serving_flags("churn:v1", flags)
    v2 = bentos.serving_flags("churn:v2", flags)
    assert any(entry.startswith("churn-model/development (") for entry in v2)
    assert all("default" not in entry for entry in v2)
    assert bentos.serving_flags("churn:v9", flags) == []


def test_a_retrained_version_is_appended_keeping_the_file(tmp_path: Path) -> None:
    shutil.copytree(REPO / "bentos" / "churn", tmp_path / "churn")
    path = tmp_path / "churn" / "versions.yaml"
    original = path.read_text()
    base = versions.load_versions(path)[-1]
    plan = build.Retraining("churn", "v3", drift=0.3, period="2026-Q4")
    spec = build._retrained_spec(base, plan)
    build._append_version(path, original, spec, "ab" * 32)
    assert path.read_text().startswith(original)
    v3 = versions.load_versions(path)[-1]
    assert (v3.version, v3.drift, v3.period, v3.snapshot) == ("v3", 0.3, "2026-Q4", "ab" * 32)
    assert v3.training_seed == base.training_seed + 1
    assert (v3.kind, v3.params, v3.features) == (base.kind, base.params, base.features)
    assert replace(v3, family_dir=base.family_dir).serving == base.serving


def test_retraining_an_existing_version_is_refused(settings: Settings) -> None:
    plan = build.Retraining("churn", "v2")
    with pytest.raises(build.BuildError, match="already declared"):
        build.retrain(plan, settings)
    with pytest.raises(UnknownBento, match="no model family 'fraud'"):
        build.retrain(build.Retraining("fraud", "v1"), settings)


def test_serving_reads_flag_documents_from_either_home() -> None:
    """Issue 13: in server mode `models list` reads the live flags (documents from Unleash),
    so a bento rolled back there is not listed as serving because flags/ still says so."""
    live = {
        "flag": "churn-model",
        "default": "churn:v1",
        "variants": {"control": "churn:v1", "treatment": "churn:v1"},
        "environments": {
            "development": {
                "enabled": True,
                "strategies": [{"name": "ab-test", "variants": {"control": 50, "treatment": 50}}],
            }
        },
    }
    assert bentos.serving_in("churn:v2", [live]) == []
    assert bentos.serving_in("churn:v1", [live]) == [
        "churn-model/development (default, control, treatment)"
    ]
