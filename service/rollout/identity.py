"""Who the rollout guard is in Unleash, and where its evidence lives.

Unleash's event log names the author of a change by ``user.email || user.username``, and the
API tokens an admin can make cannot carry a name of our choosing (admin tokens cannot be made
through the API at all; ``INIT_ADMIN_API_TOKENS`` ones are all called ``admin``). So the guard
is a real Unleash user, ``rollout-guard``, acting through a personal access token. Its root
role is Editor: on 8.2.0 that is enough to update strategies, set variants (``variants-batch``),
switch environments and set links in project ``default`` (checked by the integration test).

    secret = create_guard_token(admin)          # once, with the admin token
    guard = UnleashAdmin(admin.url, secret)     # every change shows "rollout-guard"
    guard.set_feature_link("default", flag, REPORT_LINK_TITLE, report_url(path, base, reports))

The flag's link to the report makes the evidence reachable from the flag's page and the event
log (``feature-link-added``/``-updated`` events carry the URL).
"""

from __future__ import annotations

import re
import secrets
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote

from service.errors import RolloutError, UnleashAdminError
from service.flags.unleash_admin import UnleashAdmin

GUARD_USERNAME = "rollout-guard"
GUARD_ROOT_ROLE = "Editor"
TOKEN_DESCRIPTION = "rollout guard: automatic ramps and rollbacks"
REPORT_LINK_TITLE = "rollout guard: latest report"


def create_guard_token(
    admin: UnleashAdmin, username: str = GUARD_USERNAME, expires_days: int = 365
) -> str:
    """Make the guard's personal access token (and its user, if needed); returns the secret.

    ``admin`` needs an admin token. The user gets a fresh random password each time (an
    existing user's is reset: nobody knows it, and nobody needs to), then logs in and makes a
    token described :data:`TOKEN_DESCRIPTION`. Unleash wants descriptions unique per user, so
    the guard's previous token of that description is revoked: one live guard token at a time.
    Raises UnleashAdminError; neither the password nor the secret is in any message.
    """
    password = _strong_password()
    try:
        user_id = admin.find_user(username)
        if user_id is None:
            admin.create_user(username, password, root_role=GUARD_ROOT_ROLE)
        else:
            admin.set_user_password(user_id, password)
        with UnleashAdmin.login(admin.url, username, password, timeout=admin.timeout) as guard:
            return _replace_token(guard, datetime.now(UTC) + timedelta(days=expires_days))
    except UnleashAdminError as exc:
        # `from None`: the chained original would carry the unredacted message.
        raise UnleashAdminError(
            f"cannot make the guard's token for Unleash user {username!r}: "
            + exc.message.replace(password, "***")
        ) from None


def _replace_token(guard: UnleashAdmin, expires_at: datetime) -> str:
    for token in guard.list_personal_access_tokens():
        if token.description == TOKEN_DESCRIPTION:
            guard.delete_personal_access_token(token.id)
    return guard.create_personal_access_token(TOKEN_DESCRIPTION, expires_at)


def _strong_password() -> str:
    """A random password that passes Unleash's OWASP test (all four classes, no ``aaa``)."""
    while True:
        candidate = secrets.token_urlsafe(32)  # 43 chars of [A-Za-z0-9_-]
        classes = (r"[a-z]", r"[A-Z]", r"[0-9]", r"[^A-Za-z0-9]")
        if all(re.search(c, candidate) for c in classes) and not re.search(r"(.)\1\1", candidate):
            return candidate


def report_url(path: Path, base_url: str | None, reports_dir: Path) -> str:
    """The URL a flag's link should carry for the report at ``path``.

    With ``base_url`` (ROLLOUT_REPORTS_URL: where ``reports_dir`` is served over HTTP) it is
    ``base_url`` joined with the path relative to ``reports_dir``; without, a ``file://`` URL
    of the absolute path. Unleash 8.2.0 accepts and shows ``file://`` links, but browsers will
    not open them from the UI's web page: set ROLLOUT_REPORTS_URL for a clickable link.
    Raises RolloutError when ``base_url`` is given and ``path`` is outside ``reports_dir``.
    """
    absolute = path.resolve()
    if not base_url:
        return absolute.as_uri()
    try:
        relative = absolute.relative_to(reports_dir.resolve())
    except ValueError:
        raise RolloutError(
            f"report {absolute} is not under the reports directory {reports_dir}, "
            f"so it is not served at {base_url}"
        ) from None
    return f"{base_url.rstrip('/')}/{quote(relative.as_posix())}"
