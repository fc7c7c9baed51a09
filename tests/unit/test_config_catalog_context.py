"""Settings layering, the bento catalog and the HTTP -> Unleash context mapping."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.config import Settings
from service.errors import BadRequest, ConfigError
from service.flags.definitions import load_flags
from service.serving.catalog import BentoCatalog
from service.serving.context import from_json, from_query
from service.serving.flag_client import FlagClient

REPO = Path(__file__).resolve().parents[2]


def test_settings_layer_defaults_environment_then_overrides(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("ROLLOUT_REFRESH_INTERVAL", "9")
    monkeypatch.setenv("ROLLOUT_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("UNLEASH_URL", "http://unleash:4242")
    token_file = tmp_path / "token"
    token_file.write_text("*:development.secret\n")
    monkeypatch.delenv("UNLEASH_API_TOKEN", raising=False)
    monkeypatch.setenv("UNLEASH_API_TOKEN_FILE", str(token_file))
    settings = Settings.load({"forward_timeout": "0.5"})
    assert settings.refresh_interval == 9 and settings.forward_timeout == 0.5
    assert settings.data_dir == tmp_path and isinstance(settings.data_dir, Path)
    assert settings.unleash_url == "http://unleash:4242"
    assert settings.unleash_token == "*:development.secret"
    assert "secret" not in repr(settings)
    assert settings.event_store_url == f"sqlite:///{tmp_path / 'events.db'}"


def test_unknown_settings_are_refused() -> None:
    with pytest.raises(TypeError, match="unknown setting"):
        Settings.load({"refresh_intervall": 3})


def test_a_setting_that_does_not_read_as_its_type_is_named(monkeypatch) -> None:
    monkeypatch.setenv("ROLLOUT_SHADOW_THREADS", "2.5")
    with pytest.raises(ConfigError, match=r"^ROLLOUT_SHADOW_THREADS='2.5': expected a whole"):
        Settings.load()
    monkeypatch.delenv("ROLLOUT_SHADOW_THREADS")
    with pytest.raises(ValueError, match=r"^forward_timeout='soon': expected a number$"):
        Settings.load({"forward_timeout": "soon"})


@pytest.mark.parametrize("name", ["METRICS_INTERVAL", "REFRESH_INTERVAL"])
def test_an_sdk_interval_below_a_second_is_refused_by_name(monkeypatch, name) -> None:
    monkeypatch.setenv(f"ROLLOUT_{name}", "0")
    monkeypatch.setenv("ROLLOUT_UNLEASH_URL", "")
    monkeypatch.setenv("UNLEASH_URL", "")
    with pytest.raises(ConfigError, match=f"ROLLOUT_{name} must be at least 1 second, not 0"):
        FlagClient(Settings.load(), load_flags(REPO / "flags"))
    monkeypatch.setenv(f"ROLLOUT_{name}", "1")
    client = FlagClient(Settings.load(), load_flags(REPO / "flags"))
    assert getattr(client.settings, name.lower()) == 1


def test_catalog_from_a_spec_and_a_file(tmp_path) -> None:
    catalog = BentoCatalog.parse("churn:v1=http://127.0.0.1:3001/, churn:v2=http://h:2")
    assert catalog.url("churn:v1") == "http://127.0.0.1:3001"
    assert "churn:v2" in catalog and "churn:v3" not in catalog
    catalog.save(tmp_path / "catalog.json")
    assert BentoCatalog.load(tmp_path / "catalog.json") == catalog
    assert BentoCatalog.load(tmp_path / "missing.json").endpoints == {}


@pytest.mark.parametrize("spec", ["churn:v1", "churn:v1=ftp://x", "=http://x"])
def test_a_bad_catalog_spec_names_the_item(spec) -> None:
    with pytest.raises(ConfigError, match="family:version=URL"):
        BentoCatalog.parse(spec)


def test_json_context_keeps_standard_fields_and_folds_the_rest_into_properties() -> None:
    context = from_json(
        {
            "userId": 42,
            "sessionId": "s",
            "region": "eu",
            "properties": {"segment": "smb", "beta": True},
        }
    )
    assert context == {
        "userId": "42",
        "sessionId": "s",
        "properties": {"region": "eu", "segment": "smb", "beta": "true"},
    }


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        pytest.param(None, "'context' must be an object, not null", id="null"),
        pytest.param({"userId": ["a"]}, "'context.userId'", id="list-value"),
        pytest.param(
            {"properties": {"region": {"x": 1}}},
            "'context.properties.region'",
            id="nested-property",
        ),
        pytest.param({"userId": "x" * 1001}, "longer than", id="too-long"),
    ],
)
def test_bad_json_context_names_the_field(raw, field) -> None:
    with pytest.raises(BadRequest) as caught:
        from_json(raw)
    assert field in caught.value.message


def test_query_context() -> None:
    assert from_query(
        {"userId": "u1", "remoteAddress": "10.0.0.1", "region": "eu", "properties[segment]": "smb"}
    ) == {
        "userId": "u1",
        "remoteAddress": "10.0.0.1",
        "properties": {"region": "eu", "segment": "smb"},
    }
