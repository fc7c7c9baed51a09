"""Quality gates and the registry on real bentos: gated at build on a real `bentoml serve`.

`built_bentos` (tests/integration/bento_fixtures.py) builds every declared version, which runs
their gates; these tests read what the build stored, and run `rollout models gate` once more.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from click.testing import CliRunner, Result

from service.cli import main
from service.config import Settings
from service.registry import bentos, gates

if TYPE_CHECKING:
    from bento_fixtures import BuiltBentos

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def rollout(settings: Settings, *args: str) -> Result:
    return CliRunner().invoke(main, list(args), obj={"settings": settings})


def test_every_built_bento_passed_its_gates_on_the_served_bento(
    built_bentos: BuiltBentos,
) -> None:
    settings = built_bentos.settings
    assert gates.failed_gates(built_bentos.built, settings) == {}
    for tag in built_bentos.built:
        bento = bentos.stored_bento(tag, settings)
        report = gates.read_report(bento)
        assert report is not None and report.passed
        assert report.model_hash == built_bentos.built[tag].model_hash
        assert report.against == {"churn-model": "churn:v1"}
        names = {r.name for r in report.results}
        assert {"case:loyal-enterprise-low-risk", "latency:p95", "size", "lock"} <= names
        latency = next(r for r in report.results if r.name == "latency:p95")
        assert "40 calls" in latency.detail
        assert {p.name for p in bento.rollout_dir.iterdir()} == {
            "card.json",
            "card.md",
            "card.html",
            "gates.json",
        }
    report_v2 = gates.read_report(bentos.stored_bento("churn:v2", settings))
    assert report_v2 is not None
    assert {"schema:churn:v1", "vs-default:auc[segment=smb]"} <= {r.name for r in report_v2.results}


def test_models_list_shows_the_registry(built_bentos: BuiltBentos) -> None:
    result = rollout(built_bentos.settings, "models", "list")
    assert result.exit_code == 0, result.output
    header, *rows = result.output.splitlines()
    assert header.split()[:8] == [
        "TAG",
        "STABLE",
        "CREATED",
        "SNAPSHOT",
        "DATA",
        "AUC",
        "BRIER",
        "GATES",
    ]
    by_tag = {row.split()[0]: row for row in rows}
    assert by_tag["churn:v1"].split()[1] == "stable"  # bentos/churn/versions.yaml: stable: v1
    assert by_tag["churn:v2"].split()[1] == "-"
    for tag, built in built_bentos.built.items():
        assert built.data_fingerprint[:12] in by_tag[tag]
        assert "passed" in by_tag[tag]
    assert "churn-model/development (default, control)" in by_tag["churn:v1"]


def test_models_show_prints_the_card(built_bentos: BuiltBentos) -> None:
    result = rollout(built_bentos.settings, "models", "show", "churn:v2")
    assert result.exit_code == 0, result.output
    assert result.output.startswith("# Model card: churn:v2")
    assert "- against churn:v1:" in result.output and "passed" in result.output
    page = rollout(built_bentos.settings, "models", "show", "churn:v2", "--html")
    assert page.output.startswith("<!doctype html>")


def test_an_unknown_tag_is_a_clear_error(built_bentos: BuiltBentos) -> None:
    for command in (["models", "show", "churn:v42"], ["models", "gate", "churn:v42"]):
        result = rollout(built_bentos.settings, *command)
        assert result.exit_code == 1
        assert "error: no bento churn:v42" in result.output
        assert "built: churn:v1, churn:v2" in result.output


def test_a_failed_gate_is_stored_with_the_bento_and_named(
    built_bentos: BuiltBentos, tmp_path: Path
) -> None:
    # Same store and bentos; a latency budget no server meets.
    shutil.copytree(REPO / "bentos", tmp_path / "bentos")
    gates_file = tmp_path / "bentos" / "churn" / "gates.yaml"
    gates_file.write_text(
        gates_file.read_text().replace("latency_p95_ms: 250", "latency_p95_ms: 0")
    )
    strict = Settings.load(
        {"data_dir": built_bentos.settings.data_dir, "bentos_dir": tmp_path / "bentos"}
    )
    bento = bentos.stored_bento("churn:v1", strict)
    kept = (bento.rollout_dir / gates.REPORT_FILE).read_bytes()
    try:
        result = rollout(strict, "models", "gate", "churn:v1")
        assert result.exit_code == 1
        assert "FAIL latency:p95" in result.output
        assert "error: churn:v1: gate latency:p95 failed" in result.output
        assert gates.failed_gates(["churn:v1", "churn:v2"], strict) == {"churn:v1": "latency:p95"}
    finally:
        # Other tests of the session read this store: put the build's report back.
        (bento.rollout_dir / gates.REPORT_FILE).write_bytes(kept)
