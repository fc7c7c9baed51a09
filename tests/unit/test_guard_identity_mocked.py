"""The guard's identity and report links, with the Unleash Admin API mocked at the transport.

The answers are shaped like unleash-server 8.2.0's (checked against a real one by
tests/integration/test_guard_identity.py).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import responses
from responses import matchers

from service.errors import RolloutError, UnleashAdminError
from service.flags.unleash_admin import FeatureLink, UnleashAdmin
from service.rollout.identity import (
    TOKEN_DESCRIPTION,
    _strong_password,
    create_guard_token,
    report_url,
)

URL = "http://unleash.test"
USERS = f"{URL}/api/admin/user-admin"
TOKENS = f"{URL}/api/admin/user/tokens"
FEATURE = f"{URL}/api/admin/projects/default/features/churn-model"
SECRET = "user:0123456789abcdef"
ADMIN_USER = {"id": 1, "username": "admin", "name": "admin"}
GUARD_USER = {"id": 7, "username": "rollout-guard", "name": "rollout-guard"}


@pytest.fixture
def mocked() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock() as rsps:
        yield rsps


@pytest.fixture
def admin() -> Iterator[UnleashAdmin]:
    with UnleashAdmin(URL, "*:*.admin-secret") as client:
        yield client


def users(*listed: dict[str, object]) -> dict[str, object]:
    return {"users": list(listed), "rootRoles": [{"id": 2, "name": "Editor"}]}


def sent(call: responses.Call) -> dict[str, object]:
    body = call.request.body
    return dict(json.loads(body)) if body else {}


def login_and_token(rsps: responses.RequestsMock, pats: list[dict[str, object]]) -> None:
    rsps.post(
        f"{URL}/auth/simple/login",
        json=GUARD_USER,
        headers={"Set-Cookie": "unleash-session=s%3Aabc; Path=/; HttpOnly"},
    )
    cookie = matchers.header_matcher({"Cookie": "unleash-session=s%3Aabc"})
    rsps.get(TOKENS, json={"pats": pats}, match=[cookie])
    created = {"id": 9, "description": TOKEN_DESCRIPTION, "expiresAt": "2027-01-01T00:00:00Z"}
    rsps.post(TOKENS, status=201, json={**created, "secret": SECRET}, match=[cookie])


def test_new_user_is_created_as_editor_and_gets_a_token(
    mocked: responses.RequestsMock, admin: UnleashAdmin
) -> None:
    mocked.get(USERS, json=users(ADMIN_USER))
    create = mocked.post(USERS, status=201, json={**GUARD_USER, "inviteLink": "http://x/"})
    login_and_token(mocked, pats=[])

    assert create_guard_token(admin, expires_days=30) == SECRET

    body = sent(create.calls[0])
    assert body["username"] == "rollout-guard"
    assert (body["rootRole"], body["sendEmail"]) == ("Editor", False)
    login = next(c for c in mocked.calls if c.request.url.endswith("/auth/simple/login"))
    assert sent(login) == {"username": "rollout-guard", "password": body["password"]}
    assert "Authorization" not in login.request.headers  # the guard, not the admin, logs in
    token = sent(mocked.calls[-1])
    assert token["description"] == TOKEN_DESCRIPTION
    assert str(token["expiresAt"]).endswith("+00:00")


def test_existing_user_gets_a_new_password_and_its_old_token_is_revoked(
    mocked: responses.RequestsMock, admin: UnleashAdmin
) -> None:
    mocked.get(USERS, json=users(ADMIN_USER, GUARD_USER))
    reset = mocked.post(f"{USERS}/7/change-password")
    old = {"id": 3, "description": TOKEN_DESCRIPTION, "expiresAt": "2026-12-31T00:00:00Z"}
    other = {"id": 4, "description": "someone's script", "expiresAt": "2026-12-31T00:00:00Z"}
    login_and_token(mocked, pats=[old, other])
    revoke = mocked.delete(f"{TOKENS}/3")

    assert create_guard_token(admin) == SECRET

    password = sent(reset.calls[0])["password"]
    login = next(c for c in mocked.calls if c.request.url.endswith("/auth/simple/login"))
    assert sent(login)["password"] == password
    assert revoke.call_count == 1  # token 4 is not ours: left alone


def test_failures_name_the_user_but_never_the_password_or_secret(
    mocked: responses.RequestsMock, admin: UnleashAdmin
) -> None:
    mocked.get(USERS, json=users(GUARD_USER))
    mocked.post(f"{USERS}/7/change-password")
    mocked.post(
        f"{URL}/auth/simple/login",
        status=401,
        json={"name": "PasswordMismatchError", "message": "Wrong password, try again."},
    )

    with pytest.raises(UnleashAdminError) as caught:
        create_guard_token(admin)

    password = sent(mocked.calls[1])["password"]
    message = str(caught.value)
    assert "rollout-guard" in message and "HTTP 401" in message
    assert str(password) not in message and "admin-secret" not in message
    assert caught.value.__suppress_context__  # tracebacks do not show the unredacted original


def test_create_user_returns_the_id_of_an_existing_user(
    mocked: responses.RequestsMock, admin: UnleashAdmin
) -> None:
    mocked.get(USERS, json=users(ADMIN_USER, GUARD_USER))

    assert admin.create_user("rollout-guard", "unused-Pa55-word") == 7
    assert len(mocked.calls) == 1  # nothing created, nothing changed


def test_passwords_pass_unleash_owasp_rules() -> None:
    passwords = {_strong_password() for _ in range(200)}

    assert len(passwords) == 200
    for password in passwords:
        assert 10 <= len(password) <= 128
        for needed in (r"[a-z]", r"[A-Z]", r"[0-9]", r"[^A-Za-z0-9]"):
            assert re.search(needed, password), password
        assert not re.search(r"(.)\1\1", password), password


LINKS = [
    {"id": "01A", "url": "https://ci.example/run/1", "title": "build", "feature": "churn-model"},
    {"id": "01B", "url": "file:///r/1.html", "title": "rollout guard: latest report"},
]


def test_feature_links_are_read_from_the_feature(
    mocked: responses.RequestsMock, admin: UnleashAdmin
) -> None:
    mocked.get(FEATURE, json={"name": "churn-model", "links": [*LINKS, {"id": "01C", "url": "x"}]})

    assert admin.feature_links("default", "churn-model") == [
        FeatureLink("01A", "https://ci.example/run/1", "build"),
        FeatureLink("01B", "file:///r/1.html", "rollout guard: latest report"),
        FeatureLink("01C", "x", ""),
    ]


@pytest.mark.parametrize(
    ("title", "method", "path"),
    [
        ("rollout guard: latest report", "PUT", "/link/01B"),
        ("a new title", "POST", "/link"),
    ],
    ids=["same-title-updates", "new-title-creates"],
)
def test_set_feature_link_keeps_one_link_per_title(
    mocked: responses.RequestsMock, admin: UnleashAdmin, title: str, method: str, path: str
) -> None:
    mocked.get(FEATURE, json={"name": "churn-model", "links": LINKS})
    body = matchers.json_params_matcher({"url": "file:///r/2.html", "title": title})
    mocked.add(method, FEATURE + path, status=204, match=[body])

    admin.set_feature_link("default", "churn-model", title, "file:///r/2.html")


def test_set_feature_link_reports_the_server_refusal(
    mocked: responses.RequestsMock, admin: UnleashAdmin
) -> None:
    mocked.get(FEATURE, json={"name": "churn-model", "links": []})
    mocked.post(
        f"{FEATURE}/link",
        status=403,
        json={"name": "OperationDeniedError", "message": "Too many links (10) exist"},
    )

    with pytest.raises(UnleashAdminError, match=r"HTTP 403: OperationDeniedError: Too many links"):
        admin.set_feature_link("default", "churn-model", "t", "https://x.example")


@pytest.mark.parametrize(
    ("relative", "base_url", "expected"),
    [
        ("churn/20261125T130102Z-ab/report.html", "https://reports.example/r/",
         "https://reports.example/r/churn/20261125T130102Z-ab/report.html"),
        ("churn/a b/report.html", "http://127.0.0.1:8000",
         "http://127.0.0.1:8000/churn/a%20b/report.html"),
    ],
    ids=["served", "quoted"],
)  # fmt: skip
def test_report_url_under_a_served_reports_dir(
    tmp_path: Path, relative: str, base_url: str, expected: str
) -> None:
    assert report_url(tmp_path / "reports" / relative, base_url, tmp_path / "reports") == expected


def test_report_url_without_a_base_is_a_file_url(tmp_path: Path) -> None:
    path = tmp_path / "reports" / "churn" / "a b" / "report.html"

    url = report_url(path, None, tmp_path / "reports")

    assert url == path.resolve().as_uri() and url.startswith("file:///") and "a%20b" in url


def test_report_url_refuses_a_report_outside_the_served_dir(tmp_path: Path) -> None:
    with pytest.raises(RolloutError, match="not under the reports directory"):
        report_url(tmp_path / "elsewhere.html", "https://reports.example", tmp_path / "reports")
