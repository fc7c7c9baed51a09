"""Unleash's client API read with a backend token: the exact feature state SDKs (and so the
selector) evaluate, for `rollout flags lint` against a live server."""

from __future__ import annotations

from typing import Any

import requests

from service.errors import UnleashAdminError

DEFAULT_TIMEOUT = 10.0


def client_features(url: str, token: str, timeout: float = DEFAULT_TIMEOUT) -> dict[str, Any]:
    """GET /api/client/features (segments inlined as the server hands them to SDKs).

    Raises UnleashAdminError naming the server's answer on any failure; the token is never in
    the message.
    """
    base = url.rstrip("/").removesuffix("/api")
    try:
        response = requests.get(
            f"{base}/api/client/features",
            headers={"Authorization": token, "UNLEASH-APPNAME": "rollout-flags-lint"},
            params={"inlineSegmentConstraints": "true"},
            timeout=timeout,
        )
    except requests.RequestException as exc:
        raise UnleashAdminError(f"cannot reach Unleash at {base}: {type(exc).__name__}") from exc
    if response.status_code != 200:
        raise UnleashAdminError(
            f"Unleash at {base} answered HTTP {response.status_code} to the client API "
            f"(a backend token for this environment?): {response.text[:200]}"
        )
    body = response.json()
    if not isinstance(body, dict) or not isinstance(body.get("features"), list):
        raise UnleashAdminError(f"Unleash at {base}: the client API answered no feature list")
    return body
