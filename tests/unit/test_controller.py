"""`rollout decide apply|approve` in embedded mode: the checks before the first write, the
edit of flags/ (comments kept), the audit trail.

Server mode is in tests/integration/test_guard_unleash.py.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from service.cli import main
from service.flags.audit import AuditStore
from service.flags.definitions import load_flags
from service.flags.documents import flag_doc
from service.registry.stable import stable_version
from service.rollout.decisions import DecisionFile, DecisionRefused, plan_decision
from service.store.events import create_engine

FLAG = """\
# The A/B of churn:v2 against churn:v1.
flag: churn-model
default: churn:v1              # the stable bento
variants: {control: churn:v1, treatment: churn:v2}
environments:
  development:
    enabled: true
    strategies:
      # Everyone: 80% in the A/B, sticky per user.
      - name: ab-test
        rollout: 80            # percent of users
        variants: {control: 50, treatment: 50}
ramp: {environment: development, strategy: ab-test, control: control, treatment: treatment}
"""


def decision(**fields) -> dict:
    base = {
        "schema_version": 1,
        "flag": "churn-model",
        "kind": "ab",
        "arms": [{"variant": "control"}, {"variant": "treatment"}],
        "recommendation": "ramp",
        "current_step": 40.0,
        "next_step": 50,
        "reasons": ["treatment is significantly better"],
        "summary": "RAMP",
        "generated_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    return {**base, **fields}


@pytest.fixture
def embedded(settings, flags_dir, tmp_path, monkeypatch):
    folder = flags_dir("churn-model.yaml", FLAG)
    for name in ("UNLEASH_URL", "UNLEASH_ADMIN_URL", "ROLLOUT_WEBHOOK_URL"):
        monkeypatch.delenv(name, raising=False)
    configured = replace(settings, flags_dir=folder)

    def run(*args: str):
        return CliRunner().invoke(main, list(args), obj={"settings": configured})

    def write(document: dict) -> Path:
        path = tmp_path / f"decision-{time.monotonic_ns()}.json"
        path.write_text(json.dumps(document))
        return path

    run.folder, run.write, run.settings = folder, write, configured  # type: ignore[attr-defined]
    return run


def test_a_ramp_decision_edits_only_the_rollout_and_keeps_comments(embedded) -> None:
    result = embedded("decide", "apply", str(embedded.write(decision())))
    assert result.exit_code == 0, result.output
    assert "ramp churn-model: 40% -> 50%" in result.output
    text = (embedded.folder / "churn-model.yaml").read_text()
    # Only the value changed: comments, their columns and the flow mappings stay.
    assert text == FLAG.replace("rollout: 80            #", "rollout: 100           #")
    assert yaml.safe_load(text)["environments"]["development"]["strategies"][0]["rollout"] == 100
    assert "-        rollout: 80" in result.output and "+        rollout: 100" in result.output
    audit = embedded("audit", "churn-model", "--offline")
    assert "rollout 80 -> 100" in audit.output and "significantly better" in audit.output


def test_dry_run_prints_the_change_and_writes_nothing(embedded) -> None:
    result = embedded("decide", "apply", str(embedded.write(decision())), "--dry-run")
    assert result.exit_code == 0, result.output
    assert "would ramp churn-model: 40% -> 50%" in result.output
    assert "development strategy ab-test: rollout 80 -> 100" in result.output
    assert (embedded.folder / "churn-model.yaml").read_text() == FLAG


def test_hold_changes_nothing(embedded) -> None:
    result = embedded("decide", "apply", str(embedded.write(decision(recommendation="hold"))))
    assert result.exit_code == 0 and "hold: churn-model stays" in result.output
    assert (embedded.folder / "churn-model.yaml").read_text() == FLAG


def test_rollback_sends_the_treatment_share_to_zero(embedded) -> None:
    back = embedded("decide", "apply", str(embedded.write(decision(recommendation="rollback"))))
    assert back.exit_code == 0, back.output
    doc = yaml.safe_load((embedded.folder / "churn-model.yaml").read_text())
    assert doc["environments"]["development"]["strategies"][0]["rollout"] == 0
    assert doc["default"] == "churn:v1"


def test_ship_makes_the_treatment_the_default(embedded) -> None:
    shipped = embedded("decide", "apply", str(embedded.write(decision(recommendation="ship"))))
    assert shipped.exit_code == 0, shipped.output
    doc = yaml.safe_load((embedded.folder / "churn-model.yaml").read_text())
    assert doc["default"] == "churn:v2"
    # ... and the family's stable version in the registry (issue 12)
    assert stable_version(embedded.settings.bentos_dir, "churn") == "churn:v2"
    assert "stable version of churn: churn:v2" in shipped.output


@pytest.mark.parametrize(
    ("document", "words"),
    [
        (decision(flag="other-flag"), "unknown flag 'other-flag'"),
        (
            decision(arms=[{"variant": "control"}, {"variant": "v9"}]),
            "arms the flag does not have: v9",
        ),
        (decision(current_step=25), "made at step 25%"),
        (decision(generated_at="2020-01-01T00:00:00Z"), None),  # fine: the flag never changed
        (decision(recommendation="explode"), "field 'recommendation'"),
        (decision(generated_at="yesterday"), "field 'generated_at'"),
        (decision(next_step=60), "not in the flag's ramp schedule"),
        ({"flag": "churn-model"}, "field 'recommendation' is missing"),
    ],
    ids=[
        "other-flag",
        "unknown-arm",
        "wrong-step",
        "old-but-unchanged-flag",
        "unknown-recommendation",
        "bad-time",
        "step-not-declared",
        "malformed",
    ],
)
def test_bad_decisions_are_refused_and_change_nothing(embedded, document, words) -> None:
    result = embedded("decide", "apply", str(embedded.write(document)), "--dry-run")
    if words is None:
        assert result.exit_code == 0, result.output
        return
    assert result.exit_code == 1, result.output
    assert words in result.output
    assert (embedded.folder / "churn-model.yaml").read_text() == FLAG


def test_not_json_and_a_flag_without_a_schedule(embedded) -> None:
    path = embedded.write({})
    path.write_text("{not json")
    result = embedded("decide", "apply", str(path))
    assert result.exit_code == 1 and "not a readable JSON decision" in result.output
    (embedded.folder / "churn-model.yaml").write_text(FLAG.split("ramp:")[0])
    result = embedded("decide", "apply", str(embedded.write(decision())))
    assert result.exit_code == 1 and "declares no ramp schedule" in result.output


def test_a_decision_older_than_the_flags_last_change_is_stale(embedded) -> None:
    first = embedded.write(decision(generated_at="2020-01-01T00:00:00Z"))
    assert embedded("decide", "apply", str(first)).exit_code == 0  # the flag changes now
    again = embedded(
        "decide",
        "apply",
        str(
            embedded.write(
                decision(current_step=50, next_step=100, generated_at="2020-01-02T00:00:00Z")
            )
        ),
    )
    assert again.exit_code == 1 and "is stale" in again.output


def test_plan_decision_is_pure(flags_dir) -> None:
    flag = load_flags(flags_dir("churn-model.yaml", FLAG)).flags["churn-model"]
    parsed = DecisionFile.from_dict(decision(), Path("d.json"))
    moved = plan_decision(parsed, flag, flag_doc(flag), changed_at=0)
    assert moved is not None and (moved.action, moved.to_step) == ("ramp", 50)
    with pytest.raises(DecisionRefused, match="stale"):
        plan_decision(parsed, flag, flag_doc(flag), changed_at=time.time() + 60)


def test_approve_without_a_pending_promotion_is_refused(embedded) -> None:
    result = embedded("decide", "approve", "churn-model")
    assert result.exit_code == 1 and "no promotion waiting" in result.output
    AuditStore(create_engine(embedded.settings.event_store_url))  # the store exists after


# --- issue 13: actions do what their name says -----------------------------------------------


def test_a_ramp_decided_at_an_unknown_step_is_refused(embedded) -> None:
    """The README's cron line once recorded no step and asked for the first step (5%): applying
    it "ramped" the flag from 40% down to 5%."""
    document = decision(current_step=None, next_step=5)
    result = embedded("decide", "apply", str(embedded.write(document)))
    assert result.exit_code == 1, result.output
    assert "without knowing the flag's step" in result.output
    assert (embedded.folder / "churn-model.yaml").read_text() == FLAG


def test_a_ramp_never_lowers_the_step(embedded) -> None:
    result = embedded("decide", "apply", str(embedded.write(decision(next_step=25))))
    assert result.exit_code == 1, result.output
    assert "a ramp never lowers a step" in result.output
    assert (embedded.folder / "churn-model.yaml").read_text() == FLAG


@pytest.mark.parametrize("recommendation", ["ramp", "rollback", "ship"])
def test_every_applied_action_links_its_report_on_the_flag(
    embedded, monkeypatch, tmp_path, recommendation
) -> None:
    from service.flags.state import EmbeddedFlag

    links: list[tuple[str, str]] = []
    monkeypatch.setattr(EmbeddedFlag, "link", lambda self, title, url: links.append((title, url)))
    path = embedded.write(decision(recommendation=recommendation))
    (path.parent / "report.html").write_text("<html></html>")
    result = embedded("decide", "apply", str(path))
    assert result.exit_code == 0, result.output
    assert links == [
        ("rollout: evidence of the last change", (path.parent / "report.html").resolve().as_uri())
    ]


def validation(recommendation: str, **fields) -> dict:
    return decision(
        kind="validation",
        recommendation=recommendation,
        arms=[
            {"role": "live", "variant": "churn:v2"},
            {"role": "previous", "variant": "churn:v1"},
        ],
        current_step=None,
        next_step=0 if recommendation == "rollback" else None,
        reasons=[f"validation says {recommendation}"],
        **fields,
    )


@pytest.mark.parametrize("recommendation", ["keep", "investigate", "hold"])
def test_a_validation_that_asks_for_no_change_changes_nothing(embedded, recommendation) -> None:
    result = embedded("decide", "apply", str(embedded.write(validation(recommendation))))
    assert result.exit_code == 0, result.output
    assert f"{recommendation}: churn-model stays as it is" in result.output
    assert (embedded.folder / "churn-model.yaml").read_text() == FLAG


def test_a_validation_rollback_of_the_canary_sends_it_to_zero(embedded) -> None:
    result = embedded("decide", "apply", str(embedded.write(validation("rollback"))))
    assert result.exit_code == 0, result.output
    doc = yaml.safe_load((embedded.folder / "churn-model.yaml").read_text())
    assert doc["environments"]["development"]["strategies"][0]["rollout"] == 0
    assert doc["default"] == "churn:v1"


def test_a_validation_rollback_of_the_default_puts_everyone_on_the_previous(embedded) -> None:
    shipped = FLAG.replace("default: churn:v1 ", "default: churn:v2 ")
    (embedded.folder / "churn-model.yaml").write_text(shipped)
    result = embedded("decide", "apply", str(embedded.write(validation("rollback"))))
    assert result.exit_code == 0, result.output
    assert "rollback churn-model: everyone on churn:v1" in result.output
    text = (embedded.folder / "churn-model.yaml").read_text()
    doc = yaml.safe_load(text)
    assert doc["default"] == "churn:v1"
    assert doc["variants"] == {"control": "churn:v1", "treatment": "churn:v1"}
    assert "# The A/B of churn:v2 against churn:v1." in text  # comments stay


def test_report_ab_reads_the_flags_step_schedule_and_split(embedded, monkeypatch) -> None:
    """`rollout report ab --flag churn-model --window 24h` (the README's cron line) passes the
    flag's own step to the report, so its decision says where it was made."""
    import service.analysis.reports as reports

    seen: dict = {}

    def fake_report(settings, *, progress, **options):
        seen.update(options)
        raise SystemExit(0)

    monkeypatch.setattr(reports, "run_ab_report", fake_report)
    embedded("report", "ab", "--flag", "churn-model", "--window", "24h")
    assert seen["current_step"] == 40
    assert seen["expected_split"] == "40:40"
    assert seen["ramp_steps"] == "5,25,50,100"
    assert (seen["control"], seen["treatment"]) == ("control", "treatment")
    seen.clear()
    embedded("report", "ab", "--flag", "churn-model", "--current-step", "25")
    assert seen["current_step"] == 25  # what the command line says wins
