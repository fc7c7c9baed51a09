"""Rollback in embedded mode: choosing the version, rewriting flags/ minimally, the audit trail.

Server mode (the Admin API against a real Unleash) is in tests/integration/test_rollback_server.py.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml

from service.config import Settings
from service.errors import UnknownFlag
from service.registry import gates
from service.registry.bentos import stored_bento
from service.registry.gate_checks import GateResult
from service.registry.gates import GateReport
from service.registry.versions import UnknownBento
from service.rollout import rollback

FLAG = """\
# Which churn model version decides who gets a retention offer.
flag: churn-model
description: Churn-risk model; churn:v2 is the candidate.
default: churn:v1              # the stable bento
variants:                      # variant -> the bento it serves
  control: churn:v1
  treatment: churn:v2
  canary: churn:v2             # churn:v2 for EU enterprise first
environments:
  development:
    enabled: true
    strategies:
      - name: ab-test
        rollout: 80
        variants: {control: 50, treatment: 50}
"""


@pytest.fixture
def flag_settings(
    settings: Settings, flags_dir: Callable[[str, str], Path], store_files: Callable[..., Path]
) -> Settings:
    """flags/churn-model.yaml as above; churn:v1 and v2 built and passed, v3 failed its gates."""
    folder = flags_dir("churn-model.yaml", FLAG)
    bentos = settings.data_dir.parent / "bentos" / "churn"
    bentos.mkdir(parents=True)
    (bentos / "versions.yaml").write_text(
        "family: churn\nmodel_name: churn-model\n"
        "defaults: {training: {rows: 100, seed: 1, holdout: 0.25}}\nversions:\n"
        + "".join(
            f"  - {{version: {v}, change: x, model: {{kind: k}}, features: [region]}}\n"
            for v in ("v1", "v2", "v3")
        )
    )
    configured = replace(settings, flags_dir=folder, bentos_dir=bentos.parent)
    for version, passed in (("v1", True), ("v2", True), ("v3", False)):
        tag = f"churn:{version}"
        store_files(tag)
        result = GateResult("latency:p95", passed, "p95")
        report = GateReport(tag, passed, f"hash-{version}", "d", {}, "now", [result])
        gates.store_report(stored_bento(tag, configured), report)
    return configured


def test_the_flag_file_changes_only_in_its_tags() -> None:
    new = rollback.rewritten_flag(FLAG, "churn:v1")
    changed = [(a, b) for a, b in zip(FLAG.splitlines(), new.splitlines(), strict=True) if a != b]
    assert changed == [
        ("  treatment: churn:v2", "  treatment: churn:v1"),
        (
            "  canary: churn:v2             # churn:v2 for EU enterprise first",
            "  canary: churn:v1             # churn:v2 for EU enterprise first",
        ),
    ]


def test_flow_style_variants_are_rewritten_too() -> None:
    text = "flag: f\ndefault: churn:v2\nvariants: {control: churn:v2, treatment: churn:v3}\n"
    new = rollback.rewritten_flag(text, "churn:v1")
    assert new == "flag: f\ndefault: churn:v1\nvariants: {control: churn:v1, treatment: churn:v1}\n"


def test_an_anchored_tag_is_rewritten_where_it_is_used_and_kept_where_it_is_declared() -> None:
    # A text edit would miss a tag that lives in an anchor; the round-trip document does not.
    text = "stable: &stable churn:v2\nflag: f\ndefault: *stable\nvariants: {control: *stable}\n"
    new = yaml.safe_load(rollback.rewritten_flag(text, "churn:v1"))
    assert new == {
        "stable": "churn:v2",
        "flag": "f",
        "default": "churn:v1",
        "variants": {"control": "churn:v1"},
    }


def test_the_last_good_older_version_is_chosen(flag_settings: Settings) -> None:
    # Served: v1 and v2; the newest is v2, so the target is the newest passing one before it.
    assert rollback.choose_target(["churn:v1", "churn:v2"], flag_settings) == "churn:v1"
    # A canary on v3 over the default v1: everyone goes back to the default, not forward to v2.
    canary = ["churn:v1", "churn:v2", "churn:v3"]
    assert rollback.choose_target(canary, flag_settings, default="churn:v1") == "churn:v1"
    assert rollback.choose_target(canary, flag_settings) == "churn:v2"
    # From v3 (failed) the newest passing older version is v2.
    assert rollback.choose_target(["churn:v3"], flag_settings) == "churn:v2"
    with pytest.raises(rollback.RollbackError, match="no version older than churn:v1"):
        rollback.choose_target(["churn:v1"], flag_settings)


def test_a_named_version_must_exist_and_have_passed(flag_settings: Settings) -> None:
    assert rollback.choose_target(["churn:v2"], flag_settings, to="churn:v2") == "churn:v2"
    with pytest.raises(
        rollback.RollbackError, match="churn:v3 may not serve traffic: gate latency"
    ):
        rollback.choose_target(["churn:v2"], flag_settings, to="churn:v3")
    with pytest.raises(UnknownBento, match="unknown bento churn:v8"):
        rollback.choose_target(["churn:v2"], flag_settings, to="churn:v8")


def test_embedded_rollback_rewrites_the_file_and_is_audited(flag_settings: Settings) -> None:
    done, diff = rollback.rollback("churn-model", flag_settings)
    path = flag_settings.flags_dir / "churn-model.yaml"
    doc = yaml.safe_load(path.read_text())
    assert doc["default"] == "churn:v1"
    assert set(doc["variants"].values()) == {"churn:v1"}
    assert "-  treatment: churn:v2" in diff and "+  treatment: churn:v1" in diff
    trail = (flag_settings.data_dir / rollback.AUDIT_FILE).read_text().splitlines()
    entry = json.loads(trail[-1])
    assert (entry["action"], entry["flag"], entry["target"]) == (
        "rollback",
        "churn-model",
        "churn:v1",
    )
    assert entry["before"]["variants"]["treatment"] == "churn:v2"
    engine = sa.create_engine(flag_settings.event_store_url)
    with engine.connect() as conn:
        rows = conn.execute(sa.text("select source, action, flag from flag_audit")).all()
    engine.dispose()
    assert [tuple(r) for r in rows] == [("rollback", "rollback", "churn-model")]
    assert done.target == "churn:v1"


def test_a_dry_run_changes_nothing(flag_settings: Settings) -> None:
    path = flag_settings.flags_dir / "churn-model.yaml"
    before = path.read_text()
    done, diff = rollback.rollback("churn-model", flag_settings, to="churn:v2", dry_run=True)
    assert path.read_text() == before
    assert "+default: churn:v2              # the stable bento" in diff
    assert not (flag_settings.data_dir / rollback.AUDIT_FILE).exists()
    assert done.target == "churn:v2"


def test_an_unknown_flag_is_named(flag_settings: Settings) -> None:
    with pytest.raises(
        UnknownFlag, match="unknown flag 'fraud-model'; flags/ defines: churn-model"
    ):
        rollback.rollback("fraud-model", flag_settings)


def test_server_mode_without_an_admin_token_is_refused(
    flag_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("UNLEASH_ADMIN_TOKEN", raising=False)
    monkeypatch.delenv("UNLEASH_ADMIN_TOKEN_FILE", raising=False)
    server = replace(flag_settings, unleash_url="http://127.0.0.1:9")
    with pytest.raises(
        rollback.ConfigError, match="UNLEASH_ADMIN_TOKEN or UNLEASH_ADMIN_TOKEN_FILE"
    ):
        rollback.rollback("churn-model", server)


def test_a_bento_of_another_family_is_refused(flag_settings: Settings) -> None:
    fraud = flag_settings.bentos_dir / "fraud"
    fraud.mkdir()
    (fraud / "versions.yaml").write_text(
        "family: fraud\nmodel_name: fraud-model\n"
        "defaults: {training: {rows: 100, seed: 1, holdout: 0.25}}\n"
        "versions:\n  - {version: v1, change: x, model: {kind: k}, features: [region]}\n"
    )
    with pytest.raises(
        rollback.RollbackError, match="fraud:v1 is not of the family the flag serves"
    ):
        rollback.choose_target(["churn:v1", "churn:v2"], flag_settings, to="fraud:v1")
