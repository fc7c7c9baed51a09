"""`rollout rollback` in server mode: a real Unleash, its Admin API, the audit trail.

The store is the session's (`churn:v1`, `churn:v2`, both gated at build); the flag is made on
the server directly, the way a person in the Unleash UI might have left it mid-rollout.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import sqlalchemy as sa
from click.testing import CliRunner, Result

from service.cli import main
from service.config import Settings
from service.flags.client_features import default_variant
from service.flags.unleash_admin import Strategy, StrategyVariant, UnleashAdmin
from service.harness.unleash_server import UnleashServer

if TYPE_CHECKING:
    from bento_fixtures import BuiltBentos

pytestmark = pytest.mark.integration

PROJECT, ENV = "default", "development"


def variant(name: str, tag: str, weight: int) -> StrategyVariant:
    payload = {"type": "string", "value": tag}
    return {
        "name": name,
        "weight": weight,
        "weightType": "variable",
        "stickiness": "userId",
        "payload": payload,
    }


@pytest.fixture
def mid_rollout_flag(unleash_admin: UnleashAdmin) -> Iterator[str]:
    """Default churn:v1, an EU canary on churn:v2 and an A/B test v1 vs v2."""
    name = f"churn-rollback-{uuid.uuid4().hex[:8]}"
    admin = unleash_admin
    admin.create_feature(PROJECT, name, description="rollback test")
    canary: Strategy = {
        "name": "flexibleRollout",
        "title": "eu-canary",
        "parameters": {"rollout": "100", "stickiness": "userId", "groupId": name},
        "constraints": [{"contextName": "userId", "operator": "IN", "values": ["u1", "u2"]}],
        "variants": [variant("canary", "churn:v2", 1000)],
    }
    ab: Strategy = {
        "name": "flexibleRollout",
        "title": "ab-test",
        "parameters": {"rollout": "80", "stickiness": "userId", "groupId": name},
        "variants": [variant("control", "churn:v1", 500), variant("treatment", "churn:v2", 500)],
    }
    admin.add_strategy(PROJECT, name, ENV, canary)
    admin.add_strategy(PROJECT, name, ENV, ab)
    admin.set_feature_variants(PROJECT, name, ENV, [default_variant("churn:v1")])
    admin.set_environment_enabled(PROJECT, name, ENV, True)
    yield name
    admin.delete_feature(PROJECT, name)


def served(admin: UnleashAdmin, flag: str) -> tuple[list[str], list[list[str]]]:
    defaults = [v["payload"]["value"] for v in admin.get_feature_variants(PROJECT, flag, ENV)]
    strategies = [
        [v["payload"]["value"] for v in s.get("variants", [])]
        for s in admin.list_strategies(PROJECT, flag, ENV)
    ]
    return defaults, strategies


def rollout(settings: Settings, *args: str) -> Result:
    return CliRunner().invoke(main, list(args), obj={"settings": settings})


def test_rollback_through_the_admin_api_is_one_audited_change(
    built_bentos: BuiltBentos,
    unleash_server: UnleashServer,
    unleash_admin: UnleashAdmin,
    mid_rollout_flag: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    token_file = tmp_path / "admin-token"
    token_file.write_text(unleash_server.admin_token + "\n")
    monkeypatch.delenv("UNLEASH_ADMIN_TOKEN", raising=False)
    monkeypatch.setenv("UNLEASH_ADMIN_TOKEN_FILE", str(token_file))
    settings = Settings.load(
        {"data_dir": built_bentos.settings.data_dir, "unleash_url": unleash_server.url}
    )
    flag = mid_rollout_flag

    result = rollout(settings, "rollback", flag)
    assert result.exit_code == 0, result.output
    assert f"rolled back {flag} to churn:v1 (server; back to the flag's default" in result.output
    assert unleash_server.admin_token not in result.output
    assert served(unleash_admin, flag) == (["churn:v1"], [["churn:v1"], ["churn:v1", "churn:v1"]])
    # Only the bentos changed: who is targeted, and how much, stays as it was.
    canary, ab = unleash_admin.list_strategies(PROJECT, flag, ENV)
    assert canary["constraints"][0]["values"] == ["u1", "u2"]
    assert (ab["parameters"]["rollout"], [v["weight"] for v in ab["variants"]]) == (
        "80",
        [500, 500],
    )

    again = rollout(settings, "rollback", flag, "--to", "churn:v2")
    assert again.exit_code == 0, again.output
    assert served(unleash_admin, flag)[0] == ["churn:v2"]

    engine = sa.create_engine(settings.event_store_url)
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text("select action, server, why from flag_audit where flag = :f order by id"),
            {"f": flag},
        ).all()
    engine.dispose()
    assert [(r[0], r[1]) for r in rows] == [("rollback", unleash_server.url)] * 2
    assert rows[1][2] == "--to churn:v2"


def test_rolling_back_to_an_unknown_bento_changes_nothing(
    built_bentos: BuiltBentos,
    unleash_server: UnleashServer,
    unleash_admin: UnleashAdmin,
    mid_rollout_flag: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("UNLEASH_ADMIN_TOKEN", unleash_server.admin_token)
    settings = Settings.load(
        {"data_dir": built_bentos.settings.data_dir, "unleash_url": unleash_server.url}
    )
    before = served(unleash_admin, mid_rollout_flag)
    result = rollout(settings, "rollback", mid_rollout_flag, "--to", "churn:v9")
    assert result.exit_code == 1
    assert "error: unknown bento churn:v9; declared: churn:v1, churn:v2" in result.output
    assert served(unleash_admin, mid_rollout_flag) == before


FLAG_FILE = """\
# A/B of churn:v2 against churn:v1, with churn:v2 also shadowing.
flag: {name}
default: churn:v2              # already shipped; the validation said roll back
variants: {{control: churn:v1, treatment: churn:v2}}
shadows: [churn:v1]
environments:
  development:
    enabled: true
    strategies:
      - name: ab-test
        rollout: 80
        stickiness: userId
        variants: {{control: 50, treatment: 50}}
"""


def test_a_server_rollback_keeps_shadows_updates_flags_and_leaves_no_drift(
    built_bentos: BuiltBentos,
    unleash_server: UnleashServer,
    unleash_admin: UnleashAdmin,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Issue 13: `--dry-run` listed no change; a real rollback dropped the flag's shadows and
    left flags/ stale, so the next `flags plan` proposed putting the rolled-back bento back."""
    name = f"churn-rb-{uuid.uuid4().hex[:8]}"
    flags = tmp_path / "flags"
    flags.mkdir()
    (flags / f"{name}.yaml").write_text(FLAG_FILE.format(name=name))
    (flags / "context.yaml").write_text(
        (Path(__file__).parents[2] / "flags" / "context.yaml").read_text()
    )
    monkeypatch.setenv("UNLEASH_ADMIN_TOKEN", unleash_server.admin_token)
    settings = Settings.load(
        {
            "data_dir": built_bentos.settings.data_dir,
            "unleash_url": unleash_server.url,
            "flags_dir": flags,
        }
    )
    applied = rollout(settings, "flags", "apply", "--url", unleash_server.url)
    assert applied.exit_code == 0, applied.output
    try:
        text = (flags / f"{name}.yaml").read_text()
        dry = rollout(settings, "rollback", name, "--to", "churn:v1", "--dry-run")
        assert dry.exit_code == 0, dry.output
        assert f"would roll back {name} to churn:v1" in dry.output
        assert "development: strategy ab-test -> churn:v1" in dry.output
        assert "development: default -> churn:v1" in dry.output
        assert "+default: churn:v1" in dry.output  # the flags/ edit, as a diff
        assert (flags / f"{name}.yaml").read_text() == text  # nothing written
        assert served(unleash_admin, name)[0][0] == "churn:v2"

        done = rollout(settings, "rollback", name, "--to", "churn:v1")
        assert done.exit_code == 0, done.output
        variants = unleash_admin.get_feature_variants(PROJECT, name, ENV)
        shadows = [v for v in variants if v["name"].startswith("shadow-")]
        assert [v["payload"]["value"] for v in shadows] == ["churn:v1"]  # the shadow stays
        assert served(unleash_admin, name)[1] == [["churn:v1", "churn:v1"]]
        edited = (flags / f"{name}.yaml").read_text()
        assert "default: churn:v1" in edited and "shadows: [churn:v1]" in edited
        assert "# A/B of churn:v2 against churn:v1" in edited  # comments stay

        plan = rollout(settings, "flags", "plan", "--url", unleash_server.url)
        assert plan.exit_code == 0, plan.output
        assert "! drift" not in plan.output, plan.output
        assert "no changes: the server matches flags/" in plan.output, plan.output
    finally:
        unleash_admin.delete_feature(PROJECT, name)
