"""The one boundary to the Unleash Admin API (checked against unleash-server 8.2.0's OpenAPI).

Every method either returns a typed result or raises :class:`service.errors.UnleashAdminError`,
whose message names the method, the path and the server's answer (or the URL it could not
reach). Request bodies use the Admin API's own field names (``contextName``, ``weightType``...)
so a strategy read from the server can be sent back unchanged; they are typed below.

    admin = UnleashAdmin("http://127.0.0.1:4242", admin_token)
    admin.create_feature("default", "churn-model")
    admin.add_strategy("default", "churn-model", "development", {
        "name": "flexibleRollout",
        "parameters": {"rollout": "50", "stickiness": "userId", "groupId": "churn-model"},
        "variants": [{"name": "v2", "weight": 1000, "weightType": "variable",
                      "stickiness": "userId", "payload": {"type": "string", "value": "churn:v2"}}],
    })
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, NotRequired, Required, Self, TypedDict
from urllib.parse import quote

import requests

from service.errors import ConfigError, UnleashAdminError

DEFAULT_TIMEOUT = 10.0


class VariantPayload(TypedDict):
    """A variant's payload; we carry the bento tag as ``{"type": "string", "value": tag}``."""

    type: str
    value: str


class Constraint(TypedDict, total=False):
    """A strategy or segment constraint, e.g. ``region IN [eu]``."""

    contextName: Required[str]
    operator: Required[str]
    values: list[str]
    value: str
    inverted: bool
    caseInsensitive: bool


class StrategyVariant(TypedDict):
    """A variant inside a strategy; ``weight`` is 0..1000 over the strategy's variants."""

    name: str
    weight: int
    weightType: str
    stickiness: str
    payload: NotRequired[VariantPayload]


class VariantOverride(TypedDict):
    contextName: str
    values: list[str]


class Variant(TypedDict):
    """A flag-level (environment) variant: served when the matching strategy has none."""

    name: str
    weight: int
    weightType: NotRequired[str]
    stickiness: NotRequired[str]
    payload: NotRequired[VariantPayload]
    overrides: NotRequired[list[VariantOverride]]


class Strategy(TypedDict, total=False):
    """An activation strategy; ``parameters`` values are strings (``{"rollout": "50"}``)."""

    id: str
    name: Required[str]
    title: str
    disabled: bool
    sortOrder: int
    parameters: dict[str, str]
    constraints: list[Constraint]
    variants: list[StrategyVariant]
    segments: list[int]


@dataclass(frozen=True)
class FeatureEnvironment:
    """A flag's state in one environment."""

    name: str
    enabled: bool
    strategies: list[Strategy] = field(default_factory=list)
    variants: list[Variant] = field(default_factory=list)

    @classmethod
    def from_api(cls, raw: dict[str, Any]) -> FeatureEnvironment:
        return cls(
            name=raw["name"],
            enabled=bool(raw["enabled"]),
            strategies=list(raw.get("strategies") or []),
            variants=list(raw.get("variants") or []),
        )


@dataclass(frozen=True)
class Feature:
    """A feature flag as the Admin API describes it."""

    name: str
    project: str
    type: str
    description: str
    stale: bool
    environments: list[FeatureEnvironment]

    @classmethod
    def from_api(cls, raw: dict[str, Any], project: str) -> Feature:
        return cls(
            name=raw["name"],
            project=raw.get("project") or project,
            type=raw.get("type") or "",
            description=raw.get("description") or "",
            stale=bool(raw.get("stale")),
            environments=[FeatureEnvironment.from_api(e) for e in raw.get("environments") or []],
        )

    def environment(self, name: str) -> FeatureEnvironment:
        """The flag's state in environment ``name``; KeyError if the flag has no such one."""
        for env in self.environments:
            if env.name == name:
                return env
        raise KeyError(f"flag {self.name!r} has no environment {name!r}")


@dataclass(frozen=True)
class ContextField:
    """A context field the UI offers for constraints, with its legal values."""

    name: str
    description: str
    legal_values: list[str]
    stickiness: bool

    @classmethod
    def from_api(cls, raw: dict[str, Any]) -> ContextField:
        return cls(
            name=raw["name"],
            description=raw.get("description") or "",
            legal_values=[v["value"] for v in raw.get("legalValues") or []],
            stickiness=bool(raw.get("stickiness")),
        )


@dataclass(frozen=True)
class Segment:
    """A reusable, named set of constraints that strategies refer to by id."""

    id: int
    name: str
    description: str
    constraints: list[Constraint]

    @classmethod
    def from_api(cls, raw: dict[str, Any]) -> Segment:
        return cls(
            id=int(raw["id"]),
            name=raw["name"],
            description=raw.get("description") or "",
            constraints=list(raw.get("constraints") or []),
        )


@dataclass(frozen=True)
class Event:
    """One entry of Unleash's event log (who changed what, when): the audit trail."""

    id: int
    type: str
    created_at: str
    created_by: str
    feature_name: str | None
    project: str | None
    environment: str | None
    data: dict[str, Any] | None
    pre_data: dict[str, Any] | None

    @classmethod
    def from_api(cls, raw: dict[str, Any]) -> Event:
        return cls(
            id=int(raw["id"]),
            type=raw["type"],
            created_at=raw["createdAt"],
            created_by=raw.get("createdBy") or "",
            feature_name=raw.get("featureName"),
            project=raw.get("project"),
            environment=raw.get("environment"),
            data=raw.get("data"),
            pre_data=raw.get("preData"),
        )


@dataclass(frozen=True)
class FeatureLink:
    """A link shown on the flag's page in the UI (``url`` as Unleash normalized it)."""

    id: str
    url: str
    title: str

    @classmethod
    def from_api(cls, raw: dict[str, Any]) -> FeatureLink:
        return cls(id=str(raw["id"]), url=raw["url"], title=raw.get("title") or "")


@dataclass(frozen=True)
class PersonalAccessToken:
    """A user's personal access token as listed (its secret is only shown once, at creation)."""

    id: int
    description: str
    expires_at: str

    @classmethod
    def from_api(cls, raw: dict[str, Any]) -> PersonalAccessToken:
        return cls(
            id=int(raw["id"]), description=raw.get("description") or "", expires_at=raw["expiresAt"]
        )


def _segment(value: str) -> str:
    """Quote one path segment (flag names may hold characters such as ``.``, ``:``)."""
    return quote(value, safe="")


def _feature_path(project: str, name: str) -> str:
    return f"/api/admin/projects/{_segment(project)}/features/{_segment(name)}"


def _environment_path(project: str, name: str, environment: str) -> str:
    return f"{_feature_path(project, name)}/environments/{_segment(environment)}"


class UnleashAdmin:
    """Client for the Unleash Admin API; raises UnleashAdminError on any failure.

    The admin token goes in the ``Authorization`` header and never into ``repr`` or messages.
    """

    def __init__(self, url: str, token: str, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._session = requests.Session()
        self._session.headers.update({"Authorization": token, "Accept": "application/json"})

    @classmethod
    def login(
        cls, url: str, username: str, password: str, *, timeout: float = DEFAULT_TIMEOUT
    ) -> Self:
        """A client acting as user ``username``, by password login and a session cookie.

        This is how a user's personal access tokens are made (an API token cannot make them).
        A wrong password raises UnleashAdminError (HTTP 401); the password is in no message.
        """
        client = cls(url, "", timeout=timeout)
        del client._session.headers["Authorization"]
        try:
            body = {"username": username, "password": password}
            client._request("POST", "/auth/simple/login", json=body)
        except BaseException:
            client.close()
            raise
        return client

    def __repr__(self) -> str:
        return f"UnleashAdmin(url={self.url!r}, token='***')"

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- server -----------------------------------------------------------------------------

    def health(self) -> str:
        """The server's health (``"GOOD"`` when up)."""
        return str(self._request("GET", "/health")["health"])

    # -- flags ------------------------------------------------------------------------------

    def list_features(self, project: str) -> list[Feature]:
        """All flags of ``project`` (environments without strategies: see get_feature)."""
        body = self._request("GET", f"/api/admin/projects/{_segment(project)}/features")
        return [Feature.from_api(raw, project) for raw in body["features"]]

    def get_feature(self, project: str, name: str) -> Feature:
        """One flag with its environments, strategies and environment variants."""
        return Feature.from_api(self._request("GET", _feature_path(project, name)), project)

    def find_feature(self, project: str, name: str) -> Feature | None:
        """Like get_feature, but None when the flag does not exist (or is archived)."""
        raw = self._request("GET", _feature_path(project, name), missing_ok=True)
        return None if raw is None else Feature.from_api(raw, project)

    def create_feature(
        self, project: str, name: str, type: str = "experiment", description: str = ""
    ) -> Feature:
        """Create flag ``name`` (disabled in every environment, no strategies)."""
        body = {"name": name, "type": type, "description": description}
        path = f"/api/admin/projects/{_segment(project)}/features"
        return Feature.from_api(self._request("POST", path, json=body), project)

    def set_feature_description(self, project: str, name: str, description: str) -> None:
        """Replace the flag's description (a JSON patch on the flag)."""
        patch = [{"op": "replace", "path": "/description", "value": description}]
        self._request("PATCH", _feature_path(project, name), json=patch)

    def delete_feature(self, project: str, name: str) -> None:
        """Archive the flag, then delete it from the archive, so its name can be reused.

        A flag that is already archived (or absent) is still deleted (or left alone).
        """
        self._request("DELETE", _feature_path(project, name), missing_ok=True)
        self._request("DELETE", f"/api/admin/archive/{_segment(name)}", missing_ok=True)

    def set_environment_enabled(
        self, project: str, name: str, environment: str, enabled: bool
    ) -> None:
        """Turn the flag on or off in ``environment``."""
        switch = "on" if enabled else "off"
        self._request("POST", f"{_environment_path(project, name, environment)}/{switch}")

    def set_feature_variants(
        self, project: str, name: str, environment: str, variants: Sequence[Variant]
    ) -> list[Variant]:
        """Replace the flag's environment variants (ours: the default bento); returns them.

        Unleash 8 deprecates environment variants: the per-environment ``PUT .../variants``
        answers 403 for a flag that has none yet (unless the server runs with
        ``UNLEASH_EXPERIMENTAL_ENABLE_LEGACY_VARIANTS``), so this uses ``variants-batch``,
        which 8.2.0 accepts on every flag and documents without deprecation.
        """
        path = f"{_feature_path(project, name)}/variants-batch"
        body = {"variants": list(variants), "environments": [environment]}
        return list(self._request("PUT", path, json=body)["variants"])

    def get_feature_variants(self, project: str, name: str, environment: str) -> list[Variant]:
        """The flag's environment variants."""
        path = f"{_environment_path(project, name, environment)}/variants"
        return list(self._request("GET", path)["variants"])

    def feature_links(self, project: str, name: str) -> list[FeatureLink]:
        """The links on the flag's page (the feature's ``links``), oldest first."""
        raw = self._request("GET", _feature_path(project, name))
        return [FeatureLink.from_api(link) for link in raw.get("links") or []]

    def set_feature_link(self, project: str, name: str, title: str, url: str) -> None:
        """Point the flag's link titled ``title`` at ``url``, creating it if there is none.

        One link per title, so repeated actions update it instead of piling up links
        (Unleash allows 10 per flag). Unleash normalizes ``url`` (https when it has no scheme,
        no ``www.``, no trailing slash); ``file://`` URLs are accepted as they are.
        """
        body = {"url": url, "title": title}
        path = f"{_feature_path(project, name)}/link"
        existing = next((lk for lk in self.feature_links(project, name) if lk.title == title), None)
        if existing is None:
            self._request("POST", path, json=body)
        else:
            self._request("PUT", f"{path}/{_segment(existing.id)}", json=body)

    # -- strategies -------------------------------------------------------------------------

    def list_strategies(self, project: str, name: str, environment: str) -> list[Strategy]:
        """The flag's strategies in ``environment``, in evaluation order."""
        path = f"{_environment_path(project, name, environment)}/strategies"
        return list(self._request("GET", path))

    def add_strategy(self, project: str, name: str, environment: str, strategy: Strategy) -> str:
        """Add ``strategy`` to the flag in ``environment``; returns the new strategy's id."""
        path = f"{_environment_path(project, name, environment)}/strategies"
        return str(self._request("POST", path, json=strategy)["id"])

    def update_strategy(
        self, project: str, name: str, environment: str, strategy_id: str, strategy: Strategy
    ) -> Strategy:
        """Replace strategy ``strategy_id`` with ``strategy`` (its ``id`` key is ignored)."""
        path = f"{_environment_path(project, name, environment)}/strategies/{_segment(strategy_id)}"
        body = {key: value for key, value in strategy.items() if key != "id"}
        result: Strategy = self._request("PUT", path, json=body)
        return result

    def delete_strategy(self, project: str, name: str, environment: str, strategy_id: str) -> None:
        """Remove strategy ``strategy_id`` from the flag in ``environment``."""
        path = f"{_environment_path(project, name, environment)}/strategies/{_segment(strategy_id)}"
        self._request("DELETE", path)

    def set_strategy_order(
        self, project: str, name: str, environment: str, strategy_ids: Sequence[str]
    ) -> None:
        """Evaluate the flag's strategies in ``environment`` in the order of ``strategy_ids``."""
        path = f"{_environment_path(project, name, environment)}/strategies/set-sort-order"
        body = [{"id": sid, "sortOrder": order} for order, sid in enumerate(strategy_ids)]
        self._request("POST", path, json=body)

    # -- context fields and segments ---------------------------------------------------------

    def list_context_fields(self) -> list[ContextField]:
        """Every context field (built-in ones such as ``userId`` included)."""
        return [ContextField.from_api(raw) for raw in self._request("GET", "/api/admin/context")]

    def create_context_field(
        self, name: str, legal_values: Sequence[str] = (), description: str = ""
    ) -> ContextField:
        """Create context field ``name``, or replace its legal values and description."""
        body = {
            "name": name,
            "description": description,
            "legalValues": [{"value": value} for value in legal_values],
        }
        if any(existing.name == name for existing in self.list_context_fields()):
            body.pop("name")
            self._request("PUT", f"/api/admin/context/{_segment(name)}", json=body)
            return ContextField.from_api(
                self._request("GET", f"/api/admin/context/{_segment(name)}")
            )
        return ContextField.from_api(self._request("POST", "/api/admin/context", json=body))

    def list_segments(self) -> list[Segment]:
        """Every global segment."""
        body = self._request("GET", "/api/admin/segments")
        return [Segment.from_api(raw) for raw in body["segments"]]

    def create_segment(
        self, name: str, constraints: Sequence[Constraint], description: str = ""
    ) -> Segment:
        """Create segment ``name``, or replace its constraints if it exists; returns it."""
        body = {"name": name, "description": description, "constraints": list(constraints)}
        existing = next((s for s in self.list_segments() if s.name == name), None)
        if existing is None:
            return Segment.from_api(self._request("POST", "/api/admin/segments", json=body))
        self._request("PUT", f"/api/admin/segments/{existing.id}", json=body)
        return Segment.from_api(self._request("GET", f"/api/admin/segments/{existing.id}"))

    # -- users and personal access tokens -----------------------------------------------------

    def find_user(self, username: str) -> int | None:
        """The id of the user whose username is exactly ``username``, or None (needs admin)."""
        body = self._request("GET", "/api/admin/user-admin")
        return next((int(u["id"]) for u in body["users"] if u.get("username") == username), None)

    def create_user(self, username: str, password: str, root_role: str = "Editor") -> int:
        """Create a password user (no email, no welcome email) and return its id.

        If a user named ``username`` exists already it is left unchanged (password and root
        role included) and its id is returned. ``root_role`` is ``Admin``, ``Editor`` or
        ``Viewer``. The answer's invite link is dropped: it would let anyone set the password.
        """
        existing = self.find_user(username)
        if existing is not None:
            return existing
        body = {
            "username": username,
            "name": username,
            "password": password,
            "rootRole": root_role,
            "sendEmail": False,
        }
        return int(self._request("POST", "/api/admin/user-admin", json=body)["id"])

    def set_user_password(self, user_id: int, password: str) -> None:
        """Set user ``user_id``'s password (as an admin); ends the user's sessions.

        Unleash requires 10+ characters with a lowercase and an uppercase letter, a digit and
        a symbol, and no character three times in a row (else HTTP 400).
        """
        body = {"password": password}
        self._request("POST", f"/api/admin/user-admin/{int(user_id)}/change-password", json=body)

    def list_personal_access_tokens(self) -> list[PersonalAccessToken]:
        """The logged-in user's personal access tokens (a client made by :meth:`login`)."""
        body = self._request("GET", "/api/admin/user/tokens")
        return [PersonalAccessToken.from_api(raw) for raw in body["pats"]]

    def create_personal_access_token(self, description: str, expires_at: datetime) -> str:
        """Create a personal access token for the logged-in user; returns its secret.

        Needs a client made by :meth:`login`. ``description`` must be unique among the user's
        tokens (HTTP 409 otherwise) and a user holds at most 10; ``expires_at`` must be
        timezone-aware and in the future. The secret is shown only in this answer.
        """
        body = {"description": description, "expiresAt": expires_at.isoformat()}
        return str(self._request("POST", "/api/admin/user/tokens", json=body)["secret"])

    def delete_personal_access_token(self, token_id: int) -> None:
        """Revoke the logged-in user's personal access token ``token_id``."""
        self._request("DELETE", f"/api/admin/user/tokens/{int(token_id)}")

    # -- usage metrics ------------------------------------------------------------------------

    def feature_usage(self, name: str, hours_back: int = 1) -> dict[str, int]:
        """How often SDKs evaluated flag ``name`` in the last ``hours_back`` hours, as they
        reported it: ``{"yes": enabled, "no": not enabled}`` over every app and environment
        (what the flag's Metrics tab in the UI shows)."""
        path = f"/api/admin/client-metrics/features/{quote(name, safe='')}/raw"
        body = self._request("GET", path, params={"hoursBack": str(hours_back)})
        rows = body.get("data", []) if isinstance(body, dict) else []
        return {
            "yes": sum(int(row.get("yes", 0)) for row in rows),
            "no": sum(int(row.get("no", 0)) for row in rows),
        }

    # -- event log ----------------------------------------------------------------------------

    def get_events(self, feature: str | None = None, *, limit: int = 100) -> list[Event]:
        """The newest ``limit`` events of the log, newest first (of flag ``feature`` if given)."""
        params = {"limit": str(limit)}
        if feature is not None:
            params["feature"] = f"IS:{feature}"
        body = self._request("GET", "/api/admin/search/events", params=params)
        return [Event.from_api(raw) for raw in body["events"]]

    # -- transport ------------------------------------------------------------------------------

    def _request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, str] | None = None,
        missing_ok: bool = False,
    ) -> Any:
        """Send one request; return its JSON body (None if empty) or raise UnleashAdminError."""
        try:
            response = self._session.request(
                method, self.url + path, json=json, params=params, timeout=self.timeout
            )
        except requests.RequestException as exc:
            raise UnleashAdminError(
                f"cannot reach the Unleash Admin API at {self.url} ({method} {path}): {exc}"
            ) from exc
        if missing_ok and response.status_code == 404:
            return None
        if not response.ok:
            raise UnleashAdminError(
                f"Unleash Admin API {method} {path} failed with HTTP {response.status_code}: "
                f"{_server_answer(response)}"
            )
        return response.json() if response.content else None


def _server_answer(response: requests.Response) -> str:
    """The server's own explanation: its error message and details, or the raw body."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:500] or response.reason
    if not isinstance(body, dict):
        return str(body)[:500]
    message = str(body.get("message") or body.get("error") or str(body)[:500])
    details = [str(d.get("description") or d.get("message")) for d in body.get("details") or []]
    extra = "; ".join(d for d in details if d not in message)
    return f"{body.get('name', 'Error')}: {message}" + (f" ({extra})" if extra else "")


def admin_from_environment(url: str | None = None) -> UnleashAdmin:
    """An Admin API client for the `rollout flags`/`audit` commands; raises ConfigError.

    The URL is `url`, else UNLEASH_ADMIN_URL, else UNLEASH_URL (a trailing ``/api`` dropped).
    The admin token comes from UNLEASH_ADMIN_TOKEN or the file UNLEASH_ADMIN_TOKEN_FILE names;
    only these commands read it: the selector runs with a backend token.
    """
    url = url or os.environ.get("UNLEASH_ADMIN_URL") or os.environ.get("UNLEASH_URL")
    if not url:
        raise ConfigError("no Unleash server: pass --url or set UNLEASH_ADMIN_URL (or UNLEASH_URL)")
    return UnleashAdmin(url.rstrip("/").removesuffix("/api"), _admin_token())


def token_from_environment(name: str) -> str | None:
    """The token in $NAME, else in the file $NAME_FILE names; None when neither is set."""
    token = os.environ.get(name, "").strip()
    path = os.environ.get(f"{name}_FILE")
    if not token and path:
        try:
            token = Path(path).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"cannot read {name}_FILE {path}: {exc.strerror}") from exc
    return token or None


def _admin_token() -> str:
    token = token_from_environment("UNLEASH_ADMIN_TOKEN")
    if not token:
        raise ConfigError(
            "no Unleash admin token: set UNLEASH_ADMIN_TOKEN or UNLEASH_ADMIN_TOKEN_FILE "
            "(an admin API token; never put it in flags/)"
        )
    return token
