"""Plan, drift and export logic of service.flags.sync, on in-memory server states.

The server side is built the way Unleash 8.2.0 answers the Admin API (strategies with ids,
titles, segment ids; environment variants read separately); HTTP appears only in the apply
tests, mocked at the transport with `responses`.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest
import responses
import yaml

from service.errors import ConfigError, UnleashAdminError
from service.flags.client_features import default_variant, strategy
from service.flags.definitions import load_flags
from service.flags.documents import diff, flag_doc
from service.flags.export import export_context, export_flag
from service.flags.model import FlagSet
from service.flags.plan import DriftError, apply_plan, make_plan
from service.flags.server_state import ServerState
from service.flags.unleash_admin import (
    ContextField,
    Feature,
    Segment,
    UnleashAdmin,
    admin_from_environment,
)

REPO = Path(__file__).resolve().parents[2]
URL = "http://unleash.test"
FLAG = """
flag: churn-model
description: test flag
default: churn:v1
variants: {control: churn:v1, treatment: churn:v2, canary: churn:v2}
environments:
  development:
    enabled: true
    strategies:
      - name: canary
        rollout: 100
        segments: [eu-enterprise]
        variants: {canary: 100}
      - name: ab-test
        rollout: 80
        constraints: [{field: region, operator: NOT_IN, values: [apac]}]
        variants: {control: 50, treatment: 50}
  production:
    enabled: false
    strategies:
      - name: canary
        rollout: 5
        segments: [eu-enterprise]
        variants: {canary: 100}
"""


def flag_set(tmp_path: Path, text: str = FLAG) -> FlagSet:
    folder = tmp_path / f"flags-{abs(hash(text))}"
    folder.mkdir(exist_ok=True)
    (folder / "context.yaml").write_text((REPO / "flags" / "context.yaml").read_text())
    (folder / "flag.yaml").write_text(textwrap.dedent(text))
    return load_flags(folder)


def server_state(flags: FlagSet | None, segment_id: int = 7) -> ServerState:
    """The state a server holds after flags were applied (None: a server without the flag)."""
    segment = Segment(
        segment_id,
        "eu-enterprise",
        "Enterprise users in the EU.",
        [
            {
                "contextName": "region",
                "operator": "IN",
                "values": ["eu"],
                "inverted": False,
                "caseInsensitive": False,
            },
            {
                "contextName": "segment",
                "operator": "IN",
                "values": ["enterprise"],
                "inverted": False,
                "caseInsensitive": False,
            },
        ],
    )
    fields = {
        "region": ContextField(
            "region", "Where the user's account is homed.", ["eu", "us", "apac"], False
        ),
        "segment": ContextField(
            "segment", "Customer tier.", ["consumer", "smb", "enterprise"], False
        ),
    }
    features: dict[str, Feature | None] = {"churn-model": None}
    if flags is not None:
        features["churn-model"] = feature(flags, {"eu-enterprise": segment_id})
    return ServerState(URL, fields, {"eu-enterprise": segment}, features)


def feature(flags: FlagSet, segment_ids: dict[str, int]) -> Feature:
    flag = flags.flags["churn-model"]
    environments = []
    for name in ("development", "production"):
        env = flag.environments[name]
        strategies = []
        for index, spec in enumerate(env.strategies):
            wire: dict[str, Any] = dict(strategy(flag, spec))
            wire.update(id=f"{name}-{spec.name}", sortOrder=index, disabled=False)
            wire["segments"] = [segment_ids[s] for s in spec.segments]
            strategies.append(wire)
        environments.append(
            {
                "name": name,
                "enabled": env.enabled,
                "strategies": strategies,
                "variants": [default_variant(flag.default_bento)],
            }
        )
    raw = {"name": flag.name, "type": "experiment", "description": flag.description}
    return Feature.from_api({**raw, "environments": environments}, "default")


def test_server_state_reads_back_as_the_same_document(tmp_path: Path) -> None:
    flags = flag_set(tmp_path)
    server = server_state(flags)
    assert server.doc("churn-model") == flag_doc(flags.flags["churn-model"])


def test_export_writes_files_that_load_to_the_same_flag(tmp_path: Path) -> None:
    server = server_state(flag_set(tmp_path))
    folder = tmp_path / "exported"
    folder.mkdir()
    doc = server.doc("churn-model")
    assert doc is not None
    (folder / "churn-model.yaml").write_text(export_flag(doc))
    (folder / "context.yaml").write_text(export_context(server))
    again = load_flags(folder)
    assert flag_doc(again.flags["churn-model"]) == doc
    assert again.segments["eu-enterprise"] == flag_set(tmp_path).segments["eu-enterprise"]
    assert make_plan(again, server, {"churn-model": doc}).changes == []


CANARY = """      - name: canary
        rollout: 100
        segments: [eu-enterprise]
        variants: {canary: 100}
"""
AB_TEST = """      - name: ab-test
        rollout: 80
        constraints: [{field: region, operator: NOT_IN, values: [apac]}]
        variants: {control: 50, treatment: 50}
"""
STRATEGY_PATH = (
    "/api/admin/projects/default/features/churn-model/environments/development/strategies"
)


EDITS = [
    # (id, edit of the flag file, expected plan lines)
    ("unchanged", lambda y: y, []),
    (
        "rollout",
        lambda y: y.replace("rollout: 80", "rollout: 60"),
        ["~ update  churn-model/development strategy ab-test", "rollout: 80 -> 60"],
    ),
    (
        "switch-on",
        lambda y: y.replace("enabled: false", "enabled: true"),
        ["~ update  churn-model/production", "off -> on"],
    ),
    (
        "bento",
        lambda y: y.replace("treatment: churn:v2", "treatment: churn:v1"),
        ["bentos.treatment: churn:v2 -> churn:v1"],
    ),
    (
        "default",
        lambda y: y.replace("default: churn:v1", "default: churn:v2"),
        ["~ update  flag churn-model", "default: churn:v1 -> churn:v2"],
    ),
    (
        "weights",
        lambda y: y.replace("control: 50, treatment: 50", "control: 10, treatment: 90"),
        ["variants.control: 50 -> 10", "variants.treatment: 50 -> 90"],
    ),
    ("constraint", lambda y: y.replace("NOT_IN", "IN"), ["constraints"]),
    (
        "segment-dropped",
        lambda y: y.replace(CANARY, CANARY.replace("        segments: [eu-enterprise]\n", "")),
        ["segments: [eu-enterprise] -> (removed)"],
    ),
    (
        "description",
        lambda y: y.replace("description: test flag", "description: new words"),
        ["description: test flag -> new words"],
    ),
    (
        "reorder",
        lambda y: y.replace(CANARY + AB_TEST, AB_TEST + CANARY),
        ["~ reorder churn-model/development strategies", "order: ab-test, canary"],
    ),
    (
        "removed",
        lambda y: y.replace(AB_TEST, ""),
        ["- delete  churn-model/development strategy ab-test"],
    ),
]


@pytest.mark.parametrize(
    ("edit", "expected"), [(e, x) for _, e, x in EDITS], ids=[i for i, _, _ in EDITS]
)
def test_plan_names_each_difference(tmp_path: Path, edit: Any, expected: list[str]) -> None:
    assert (edit(FLAG) != FLAG) == bool(expected)  # the edit really applies to the file
    server = server_state(flag_set(tmp_path))
    plan = make_plan(
        flag_set(tmp_path, edit(FLAG)), server, {"churn-model": server.doc("churn-model")}
    )
    rendered = plan.render()
    for line in expected:
        assert line in rendered
    assert bool(plan.changes) == bool(expected)
    assert plan.drift == {}


def test_plan_creates_what_a_fresh_server_lacks(tmp_path: Path) -> None:
    server = ServerState(URL, {}, {}, {"churn-model": None})
    plan = make_plan(flag_set(tmp_path), server, {})
    assert [(c.action, c.target) for c in plan.changes] == [
        ("create", "context field region"),
        ("create", "context field segment"),
        ("create", "segment eu-enterprise"),
        ("create", "flag churn-model"),
    ]


def test_drift_is_the_difference_between_the_last_apply_and_the_server(tmp_path: Path) -> None:
    applied = flag_set(tmp_path)
    in_ui = flag_set(tmp_path, FLAG.replace("rollout: 80", "rollout: 30"))
    plan = make_plan(
        applied, server_state(in_ui), {"churn-model": flag_doc(applied.flags["churn-model"])}
    )
    assert plan.drift == {
        "churn-model": ["environments.development.strategies.ab-test.rollout: 80 -> 30"]
    }
    assert plan.blocking_drift == plan.drift


def test_a_flag_never_applied_from_here_that_differs_is_drift(tmp_path: Path) -> None:
    elsewhere = flag_set(tmp_path, FLAG.replace("rollout: 80", "rollout: 30"))
    plan = make_plan(flag_set(tmp_path), server_state(elsewhere), {})
    assert plan.drift["churn-model"][0].startswith("exists on the server but was never applied")


def test_drift_that_flags_already_match_does_not_block(tmp_path: Path) -> None:
    exported = flag_set(tmp_path, FLAG.replace("rollout: 80", "rollout: 30"))
    baseline = flag_doc(flag_set(tmp_path).flags["churn-model"])
    plan = make_plan(exported, server_state(exported), {"churn-model": baseline})
    assert plan.drift and not plan.changes and plan.blocking_drift == {}


@responses.activate
def test_apply_over_drift_refuses_before_any_request(tmp_path: Path) -> None:
    applied = flag_set(tmp_path)
    server = server_state(flag_set(tmp_path, FLAG.replace("rollout: 80", "rollout: 30")))
    plan = make_plan(applied, server, {"churn-model": flag_doc(applied.flags["churn-model"])})
    with pytest.raises(DriftError, match="--overwrite-drift"):
        apply_plan(UnleashAdmin(URL, "*:*.secret"), plan, server)
    assert len(responses.calls) == 0


@responses.activate
def test_apply_with_force_writes_the_strategy_by_id(tmp_path: Path) -> None:
    applied = flag_set(tmp_path)
    server = server_state(flag_set(tmp_path, FLAG.replace("rollout: 80", "rollout: 30")))
    plan = make_plan(applied, server, {"churn-model": flag_doc(applied.flags["churn-model"])})
    responses.put(f"{URL}{STRATEGY_PATH}/development-ab-test", json={})
    apply_plan(UnleashAdmin(URL, "*:*.secret"), plan, server, force=True)
    [call] = responses.calls
    body = yaml.safe_load(call.request.body or "")
    assert body["parameters"]["rollout"] == "80" and body["segments"] == []
    assert call.request.headers["Authorization"] == "*:*.secret"


@pytest.mark.parametrize(
    ("old", "new", "lines"),
    [
        ({"a": 1}, {"a": 1}, []),
        ({"a": 1}, {"a": 2}, ["a: 1 -> 2"]),
        ({"a": {"b": [1]}}, {"a": {"b": [2]}}, ["a.b: [1] -> [2]"]),
        ({}, {"x": "y"}, ["x: (none) -> y"]),
        ({"x": "y"}, {}, ["x: y -> (removed)"]),
        (
            {"strategies": [{"name": "a"}, {"name": "b"}]},
            {"strategies": [{"name": "b"}, {"name": "a"}]},
            ["strategies order: a, b -> b, a"],
        ),
    ],
    ids=["same", "scalar", "nested", "added", "removed", "order"],
)
def test_diff_in_words(old: Any, new: Any, lines: list[str]) -> None:
    assert diff(old, new) == lines


@pytest.mark.parametrize(
    ("env", "file_text", "error"),
    [
        ({"UNLEASH_ADMIN_URL": URL, "UNLEASH_ADMIN_TOKEN": "*:*.secret"}, None, None),
        ({"UNLEASH_ADMIN_URL": URL, "UNLEASH_ADMIN_TOKEN_FILE": "FILE"}, "*:*.secret\n", None),
        ({"UNLEASH_URL": f"{URL}/api", "UNLEASH_ADMIN_TOKEN": "*:*.secret"}, None, None),
        ({"UNLEASH_ADMIN_URL": URL}, None, "no Unleash admin token"),
        ({"UNLEASH_ADMIN_TOKEN": "*:*.secret"}, None, "no Unleash server"),
        ({"UNLEASH_ADMIN_URL": URL, "UNLEASH_ADMIN_TOKEN_FILE": "FILE"}, None, "cannot read"),
    ],
    ids=["env", "file", "client-url", "no-token", "no-url", "missing-file"],
)
def test_admin_token_from_environment_or_file(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    env: dict[str, str],
    file_text: str | None,
    error: str | None,
) -> None:
    for name in (
        "UNLEASH_ADMIN_URL",
        "UNLEASH_URL",
        "UNLEASH_ADMIN_TOKEN",
        "UNLEASH_ADMIN_TOKEN_FILE",
    ):
        monkeypatch.delenv(name, raising=False)
    token_file = tmp_path / "token"
    if file_text is not None:
        token_file.write_text(file_text)
    for name, value in env.items():
        monkeypatch.setenv(name, str(token_file) if value == "FILE" else value)
    if error:
        with pytest.raises(ConfigError, match=error):
            admin_from_environment()
        return
    admin = admin_from_environment()
    assert admin.url == URL
    assert "secret" not in repr(admin)


@responses.activate
@pytest.mark.parametrize(
    ("status", "body", "message"),
    [
        (
            401,
            {"name": "AuthenticationRequired", "message": "You must log in"},
            "HTTP 401: AuthenticationRequired: You must log in",
        ),
        (403, {"name": "NoAccessError", "message": "no permission"}, "HTTP 403"),
        (500, "oops", "HTTP 500: oops"),
    ],
    ids=["401", "403", "500"],
)
def test_server_answers_are_passed_on(status: int, body: Any, message: str) -> None:
    responses.get(f"{URL}/api/admin/context", json=body, status=status) if isinstance(
        body, dict
    ) else responses.get(f"{URL}/api/admin/context", body=body, status=status)
    with pytest.raises(UnleashAdminError, match=message):
        UnleashAdmin(URL, "*:*.secret").list_context_fields()
