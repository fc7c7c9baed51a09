"""`rollout flags plan/apply/export` and `rollout audit` against a real Unleash server.

Each test uses its own flag name on the session's server (context fields and the
`eu-enterprise` segment from the repo's context.yaml are shared and identical for all tests)
and its own data folder, so its audit store starts empty. Changes "made in the UI" are made
through the Admin API with the same admin token, as the UI itself does.
"""

from __future__ import annotations

import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import yaml
from click.testing import CliRunner, Result

from service.cli import main
from service.config import Settings
from service.flags.definitions import load_flags
from service.flags.unleash_admin import UnleashAdmin
from service.harness.unleash_server import UnleashServer
from service.processes import free_port
from service.serving.flag_client import FlagClient
from service.store.events import create_engine, exposures

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
PROJECT = "default"
FLAG_YAML = """
flag: FLAG
description: flag-sync integration test
default: churn:v1
variants: {control: churn:v1, treatment: churn:v2, canary: churn:v2}
environments:
  development:
    enabled: true
    strategies:
      - name: eu-enterprise-canary
        rollout: 100
        segments: [eu-enterprise]
        variants: {canary: 100}
      - name: apac-only
        rollout: 100
        constraints: [{field: region, operator: IN, values: [apac]}]
        variants: {treatment: 100}
      - name: ab-test
        rollout: 80
        stickiness: userId
        variants: {control: 50, treatment: 50}
  production:
    enabled: false
    strategies:
      - name: eu-enterprise-canary
        rollout: 5
        segments: [eu-enterprise]
        variants: {canary: 100}
"""


class Rollout:
    """Runs `rollout ...` in-process against the session's server, with one data folder."""

    def __init__(self, server: UnleashServer, root: Path, flag: str) -> None:
        self.root, self.flag = root, flag
        self.flags_dir = root / "flags"
        self.flags_dir.mkdir(parents=True)
        (self.flags_dir / "context.yaml").write_text((REPO / "flags" / "context.yaml").read_text())
        self.write(FLAG_YAML)
        self.env = {
            "UNLEASH_ADMIN_URL": server.url,
            "UNLEASH_ADMIN_TOKEN": server.admin_token,
            "UNLEASH_ADMIN_TOKEN_FILE": None,
            "UNLEASH_URL": None,
            "ROLLOUT_DATA_DIR": str(root / "data"),
            "ROLLOUT_FLAGS_DIR": str(self.flags_dir),
            "ROLLOUT_DATABASE_URL": None,
            "ROLLOUT_ACTOR": "ci-bot",
        }

    def write(self, text: str, name: str = "flag.yaml") -> None:
        (self.flags_dir / name).write_text(textwrap.dedent(text).replace("FLAG", self.flag))

    def __call__(self, *args: str, env: dict[str, Any] | None = None) -> Result:
        runner = CliRunner()
        return runner.invoke(
            main, list(args), env={**self.env, **(env or {})}, catch_exceptions=False
        )


@pytest.fixture
def rollout(
    unleash_server: UnleashServer, tmp_path: Path, request: pytest.FixtureRequest
) -> Rollout:
    name = f"sync-{request.node.name[5:25].strip('_[]')}-{time.monotonic_ns() % 10**7}"
    return Rollout(unleash_server, tmp_path, name)


def ok(result: Result) -> str:
    assert result.exit_code == 0, result.output
    return result.output


def strategies(admin: UnleashAdmin, flag: str, env: str) -> list[dict[str, Any]]:
    return [dict(s) for s in admin.list_strategies(PROJECT, flag, env)]


def test_apply_creates_both_environments_fields_and_segments_then_changes_nothing(
    rollout: Rollout, unleash_admin: UnleashAdmin
) -> None:
    plan = rollout("flags", "plan", "--detailed-exitcode")
    assert plan.exit_code == 2, plan.output
    assert f"+ create  flag {rollout.flag}" in plan.output
    assert unleash_admin.find_feature(PROJECT, rollout.flag) is None  # plan wrote nothing

    ok(rollout("flags", "apply", "--reason", "first rollout"))

    feature = unleash_admin.get_feature(PROJECT, rollout.flag)
    assert feature.environment("development").enabled
    assert not feature.environment("production").enabled
    dev = strategies(unleash_admin, rollout.flag, "development")
    prod = strategies(unleash_admin, rollout.flag, "production")
    assert [s["title"] for s in dev] == ["eu-enterprise-canary", "apac-only", "ab-test"]
    assert [(s["title"], s["parameters"]["rollout"]) for s in prod] == [
        ("eu-enterprise-canary", "5")
    ]
    segment = {s.name: s for s in unleash_admin.list_segments()}["eu-enterprise"]
    assert dev[0]["segments"] == [segment.id] == prod[0]["segments"]
    assert dev[2]["variants"][1]["payload"] == {"type": "string", "value": "churn:v2"}
    fields = {f.name: f for f in unleash_admin.list_context_fields()}
    assert fields["region"].legal_values == ["eu", "us", "apac"]
    assert fields["segment"].legal_values == ["consumer", "smb", "enterprise"]
    variants = unleash_admin.get_feature_variants(PROJECT, rollout.flag, "production")
    assert variants[0]["payload"] == {"type": "string", "value": "churn:v1"}

    again = ok(rollout("flags", "apply"))
    assert "no change" in again and "applied" not in again
    assert rollout("flags", "plan", "--detailed-exitcode").exit_code == 0


def test_plan_shows_changes_per_environment_strategy_and_variant(
    rollout: Rollout, unleash_admin: UnleashAdmin
) -> None:
    ok(rollout("flags", "apply"))
    edited = (
        FLAG_YAML.replace("rollout: 80", "rollout: 60")
        .replace("treatment: churn:v2", "treatment: churn:v1")
        .replace("  production:\n    enabled: false", "  production:\n    enabled: true")
    )
    rollout.write(edited)
    output = ok(rollout("flags", "plan"))
    assert f"~ update  {rollout.flag}/development strategy ab-test" in output
    assert "rollout: 80 -> 60" in output
    assert "bentos.treatment: churn:v2 -> churn:v1" in output
    assert f"~ update  {rollout.flag}/production\n      off -> on" in output
    assert "drift" not in output

    ok(rollout("flags", "apply"))
    ab = strategies(unleash_admin, rollout.flag, "development")[2]
    assert ab["parameters"]["rollout"] == "60"
    assert ab["variants"][1]["payload"]["value"] == "churn:v1"
    assert unleash_admin.get_feature(PROJECT, rollout.flag).environment("production").enabled


def test_removed_and_reordered_strategies_are_applied_in_order(
    rollout: Rollout, unleash_admin: UnleashAdmin
) -> None:
    ok(rollout("flags", "apply"))
    reordered = FLAG_YAML.replace(
        """      - name: apac-only
        rollout: 100
        constraints: [{field: region, operator: IN, values: [apac]}]
        variants: {treatment: 100}
""",
        "",
    ).replace(
        "      - name: eu-enterprise-canary\n        rollout: 100\n",
        "      - name: late-canary\n        rollout: 100\n",
    )
    rollout.write(reordered)
    output = ok(rollout("flags", "apply"))
    assert f"- delete  {rollout.flag}/development strategy apac-only" in output
    assert f"- delete  {rollout.flag}/development strategy eu-enterprise-canary" in output
    assert f"+ create  {rollout.flag}/development strategy late-canary" in output
    assert [s["title"] for s in strategies(unleash_admin, rollout.flag, "development")] == [
        "late-canary",
        "ab-test",
    ]
    assert "no change" in ok(rollout("flags", "apply"))


def change_in_ui(admin: UnleashAdmin, flag: str) -> None:
    """What a person does in the Unleash UI: ab-test to 30%, production switched on."""
    ab = strategies(admin, flag, "development")[2]
    ab["parameters"]["rollout"] = "30"
    admin.update_strategy(PROJECT, flag, "development", ab["id"], ab)  # type: ignore[arg-type]
    admin.set_environment_enabled(PROJECT, flag, "production", True)


def test_drift_is_shown_refused_exported_and_overwritten_only_on_request(
    rollout: Rollout, unleash_admin: UnleashAdmin
) -> None:
    ok(rollout("flags", "apply"))
    change_in_ui(unleash_admin, rollout.flag)

    plan = ok(rollout("flags", "plan"))
    assert f"! drift  flag {rollout.flag} changed on the server since the last apply" in plan
    assert "environments.development.strategies.ab-test.rollout: 80 -> 30" in plan
    assert "environments.production.enabled: false -> true" in plan

    refused = rollout("flags", "apply")
    assert refused.exit_code == 1
    assert "refusing to apply" in refused.output and "--overwrite-drift" in refused.output
    assert (
        strategies(unleash_admin, rollout.flag, "development")[2]["parameters"]["rollout"] == "30"
    )

    exported = rollout.root / "exported"
    ok(rollout("flags", "export", "--out", str(exported), "--flag", rollout.flag))
    doc = yaml.safe_load((exported / f"{rollout.flag}.yaml").read_text())
    assert doc["environments"]["development"]["strategies"][2]["rollout"] == 30
    assert doc["environments"]["production"]["enabled"] is True
    assert "no changes" in ok(rollout("flags", "plan", "--dir", str(exported)))

    ok(rollout("flags", "apply", "--overwrite-drift", "--reason", "the plan wins"))
    assert (
        strategies(unleash_admin, rollout.flag, "development")[2]["parameters"]["rollout"] == "80"
    )
    assert "drift" not in ok(rollout("flags", "plan"))


def test_export_into_flags_round_trips_to_no_change(rollout: Rollout) -> None:
    ok(rollout("flags", "apply"))
    ok(rollout("flags", "export", "--flag", rollout.flag))  # rewrites flags/flag.yaml
    assert "Exported from Unleash" in (rollout.flags_dir / "flag.yaml").read_text()
    assert not (rollout.flags_dir / f"{rollout.flag}.yaml").exists()
    plan = rollout("flags", "plan", "--detailed-exitcode")
    assert plan.exit_code == 0, plan.output


SHADOW_ONLY_YAML = """
flag: FLAG
description: v1 serves everyone, v2 shadows it
default: churn:v1
shadows: [churn:v2]
environments:
  development:
    enabled: true
    strategies:
      - name: everyone
        rollout: 100
"""


def test_a_flag_with_shadows_and_no_variants_exports_to_a_valid_file(rollout: Rollout) -> None:
    # Regression: export wrote `variants: {}`, which validate then refused.
    rollout.write(SHADOW_ONLY_YAML)
    ok(rollout("flags", "apply"))
    ok(rollout("flags", "export", "--flag", rollout.flag))
    ok(rollout("flags", "validate"))
    flag = load_flags(rollout.flags_dir).flags[rollout.flag]
    assert (flag.default_bento, flag.variants, flag.shadows) == ("churn:v1", {}, ("churn:v2",))
    plan = rollout("flags", "plan", "--detailed-exitcode")
    assert plan.exit_code == 0, plan.output


def add_exposures(settings_dir: Path, flag: str, count: int) -> None:
    engine = create_engine(Settings.load({"data_dir": settings_dir}).event_store_url)
    row = {"request_id": "r", "flag": flag, "environment": "development", "variant": "control"}
    rows = [{**row, "ts": time.time(), "reason": "strategy_variant", "status": 200}] * count
    with engine.begin() as conn:
        conn.execute(sa.insert(exposures), rows)
    engine.dispose()


def test_audit_lists_applies_and_ui_changes_with_exposures_around_them(
    rollout: Rollout, unleash_admin: UnleashAdmin
) -> None:
    data_dir = rollout.root / "data"
    ok(rollout("flags", "apply", "--reason", "start the A/B test"))
    add_exposures(data_dir, rollout.flag, 7)
    change_in_ui(unleash_admin, rollout.flag)
    add_exposures(data_dir, rollout.flag, 3)

    output = ok(rollout("audit", rollout.flag))
    lines = output.splitlines()
    apply_line = next(line for line in lines if "(why: start the A/B test)" in line)
    assert "ci-bot" in apply_line and f"create flag {rollout.flag}" in apply_line
    ui_line = next(line for line in lines if "rollout 80% -> 30%" in line)
    assert "feature-strategy-update 'ab-test' in development" in ui_line
    assert "admin" in ui_line  # who: the token's user, as Unleash records it
    assert "7 -> 3" in ui_line or "7 -> 0" in ui_line
    # Copied once: a second listing shows each Unleash event once.
    again = ok(rollout("audit", rollout.flag)).splitlines()
    assert sum("rollout 80% -> 30%" in line for line in again) == 1


def test_embedded_and_server_mode_decide_the_same_in_both_environments(
    rollout: Rollout, unleash_server: UnleashServer, tmp_path: Path
) -> None:
    ok(rollout("flags", "apply"))
    flag_set = load_flags(rollout.flags_dir)
    contexts = [
        {"userId": f"u{i}", "properties": {"region": region, "segment": segment}}
        for i in range(60)
        for region, segment in (("eu", "enterprise"), ("apac", "smb"), ("us", "consumer"))
    ]
    tokens = {
        "development": unleash_server.backend_token,
        "production": unleash_server.production_backend_token,
    }
    for environment, token in tokens.items():
        base = {"data_dir": tmp_path / environment, "environment": environment}
        embedded = FlagClient(Settings.load(base), flag_set)
        server = FlagClient(
            Settings.load({**base, "unleash_url": unleash_server.url, "unleash_token": token})
        )
        embedded.start()
        server.start()
        try:
            assert server.cache.updated.wait(15), "the server-mode client got no flags"
            assert server.flag(rollout.flag) is not None
            for context in contexts:
                want = embedded.variant(rollout.flag, context)
                assert server.variant(rollout.flag, context) == want, (environment, context)
        finally:
            embedded.close()
            server.close()


BAD_INPUT: list[tuple[str, Callable[[str], str], str]] = [
    ("yaml", lambda y: y.replace("enabled: true", "enabled: [true"), "yaml"),
    (
        "unknown-field",
        lambda y: y.replace("field: region", "field: country"),
        "constraints[0].field: unknown context field 'country'",
    ),
    ("operator", lambda y: y.replace("operator: IN", "operator: LIKE"), "unknown operator 'LIKE'"),
    (
        "weights",
        lambda y: y.replace("control: 50, treatment: 50", "control: 50, treatment: 40"),
        "weights add up to 90, not 100",
    ),
    (
        "bento",
        lambda y: y.replace("canary: churn:v2", "canary: churn:v9"),
        "unknown bento 'churn:v9'",
    ),
    (
        "segment",
        lambda y: y.replace("segments: [eu-enterprise]", "segments: [nobody]"),
        "unknown segment 'nobody'",
    ),
]


@pytest.mark.parametrize(("case", "edit", "message"), BAD_INPUT, ids=[c[0] for c in BAD_INPUT])
def test_bad_flag_files_are_refused_before_any_write(
    rollout: Rollout,
    unleash_admin: UnleashAdmin,
    case: str,
    edit: Callable[[str], str],
    message: str,
) -> None:
    rollout.write(FLAG_YAML)
    rollout.write(edit(FLAG_YAML), name="broken.yaml")  # one good flag file, one broken
    (rollout.flags_dir / "broken.yaml").write_text(
        (rollout.flags_dir / "broken.yaml").read_text().replace(rollout.flag, rollout.flag + "-b")
    )
    result = rollout("flags", "apply")
    assert result.exit_code == 1
    assert message in result.output
    assert "broken.yaml" in result.output
    assert unleash_admin.find_feature(PROJECT, rollout.flag) is None  # nothing partial


def test_unreachable_server_and_rejected_token_give_one_clear_message(rollout: Rollout) -> None:
    dead = rollout("flags", "plan", env={"UNLEASH_ADMIN_URL": f"http://127.0.0.1:{free_port()}"})
    assert dead.exit_code == 1
    assert dead.output.startswith("error: cannot reach the Unleash Admin API at http://127.0.0.1:")
    assert len(dead.output.strip().splitlines()) == 1

    rejected = rollout("flags", "apply", env={"UNLEASH_ADMIN_TOKEN": "*:*.not-a-real-token"})
    assert rejected.exit_code == 1
    assert "HTTP 401" in rejected.output
    assert "not-a-real-token" not in rejected.output

    missing = rollout("flags", "plan", env={"UNLEASH_ADMIN_TOKEN": None})
    assert missing.exit_code == 1
    assert "no Unleash admin token" in missing.output


def test_admin_token_from_a_file_and_never_printed(
    rollout: Rollout, unleash_server: UnleashServer, tmp_path: Path
) -> None:
    token_file = tmp_path / "admin-token"
    token_file.write_text(unleash_server.admin_token + "\n")
    env = {"UNLEASH_ADMIN_TOKEN": None, "UNLEASH_ADMIN_TOKEN_FILE": str(token_file)}
    output = ok(rollout("flags", "apply", env=env)) + ok(rollout("audit", rollout.flag, env=env))
    secret = unleash_server.admin_token.split(".", 1)[1]
    assert secret not in output
    assert secret not in repr(UnleashAdmin(unleash_server.url, unleash_server.admin_token))
    assert not any(secret in p.read_text() for p in rollout.flags_dir.iterdir())


def test_shadow_bentos_travel_to_unleash_and_back(
    rollout: Rollout, unleash_admin: UnleashAdmin, tmp_path: Path
) -> None:
    rollout.write(FLAG_YAML.replace("default: churn:v1", "default: churn:v1\nshadows: [churn:v2]"))
    ok(rollout("flags", "apply"))
    variants = unleash_admin.get_feature_variants(PROJECT, rollout.flag, "development")
    assert [(v["name"], v["payload"]["value"], v["weight"]) for v in variants] == [
        ("default", "churn:v1", 1000),
        ("shadow-1", "churn:v2", 0),
    ]
    assert "no change" in ok(rollout("flags", "apply"))

    rollout.write(FLAG_YAML)  # shadows removed in flags/
    assert "shadows: churn:v2 -> (none)" in ok(rollout("flags", "plan"))
    ok(rollout("flags", "apply"))
    variants = unleash_admin.get_feature_variants(PROJECT, rollout.flag, "development")
    assert [v["name"] for v in variants] == ["default"]

    rollout.write(FLAG_YAML.replace("default: churn:v1", "default: churn:v1\nshadows: [churn:v2]"))
    ok(rollout("flags", "apply"))
    exported = tmp_path / "exported"
    ok(rollout("flags", "export", "--out", str(exported), "--flag", rollout.flag))
    doc = yaml.safe_load((exported / f"{rollout.flag}.yaml").read_text())
    assert doc["shadows"] == ["churn:v2"], doc
