"""What one flag's feature state routes to, and every mistake in it (`rollout flags lint`).

A flag made in the Unleash UI has no flag-level variant: its strategy variants carry bento tags
as payloads, and the family those tags belong to (`churn` for `churn:v2`) decides which stable
version serves everyone else. This module reads a feature in Unleash's client-features shape
(what the SDK and embedded mode hold; `admin_feature` adapts an Admin API flag) into `FlagRoutes`
once per new state, so the request path only looks things up.

`lint` lists each mistake with the flag, environment, strategy, variant and tag, a stable
reason string (counted in /metrics), and what to change in the UI. It is pure: the bentos that
can serve and the stable versions are passed in by the caller (the selector's catalog, or the
registry for the CLI).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

from service.flags.client_features import DEFAULT_VARIANT, SHADOW_PREFIX
from service.flags.payloads import PayloadReading, family_of, read_payload
from service.flags.unleash_admin import Feature

# Reasons a flag is degraded; stable strings, used as metric labels.
UNKNOWN_BENTO = "unknown_bento"
NO_BENTO_IN_PAYLOAD = "no_bento_in_payload"
NO_STABLE_VERSION = "no_stable_version"
STABLE_NOT_SERVED = "stable_not_served"
NO_FAMILY = "no_family"
MIXED_FAMILIES = "mixed_families"


@dataclass(frozen=True)
class VariantSite:
    """One variant where the flag defines it: a strategy's (by title) or the flag's own."""

    strategy: str | None  # None: a flag-level (environment) variant
    variant: str
    reading: PayloadReading
    raw_value: str | None


@dataclass(frozen=True)
class FlagRoutes:
    """One flag's feature state, read for routing."""

    name: str
    enabled: bool
    explicit_default: str | None  # the flag-level `default` variant's bento, if any
    family: str | None  # of the bentos its variants name; None when they name none
    families: tuple[str, ...]
    shadows: tuple[str, ...]
    sites: tuple[VariantSite, ...]

    def reading(self, variant: str, payload: Mapping[str, Any] | None) -> PayloadReading:
        """The bento a served variant names (its reading is cached per payload value)."""
        value = (payload or {}).get("value")
        for site in self.sites:
            if site.variant == variant and site.raw_value == value:
                return site.reading
        return read_payload(payload)

    def strategies_of(self, variant: str) -> str:
        """Where `variant` is defined, for a log line: strategy titles, comma-separated."""
        names = [s.strategy or "(flag-level)" for s in self.sites if s.variant == variant]
        return ", ".join(dict.fromkeys(names)) or "-"


@dataclass(frozen=True)
class RoutingProblem:
    """One mistake in a flag: what, where, and what to change."""

    flag: str
    environment: str
    reason: str
    message: str
    fix: str
    strategy: str | None = None
    variant: str | None = None
    tag: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}

    def line(self) -> str:
        where = [f"flag {self.flag}", f"environment {self.environment}"]
        if self.strategy:
            where.append(f"strategy '{self.strategy}'")
        if self.variant:
            where.append(f"variant '{self.variant}'")
        if self.tag:
            where.append(f"tag '{self.tag}'")
        return f"{' / '.join(where)}: {self.reason}: {self.message}. Fix: {self.fix}"


def flag_routes(feature: Mapping[str, Any]) -> FlagRoutes:
    """Read one client-features flag; never raises on a malformed one (it lints instead)."""
    sites = [*_strategy_sites(feature), *_flag_level_sites(feature)]
    serving = [s for s in sites if not s.variant.startswith(SHADOW_PREFIX)]
    default = next((s.reading.bento for s in serving if s.variant == DEFAULT_VARIANT), None)
    tags = [default, *(s.reading.bento or _tag_like(s.raw_value) for s in serving)]
    families = tuple(dict.fromkeys(family_of(t) for t in tags if t))
    shadows = tuple(
        dict.fromkeys(
            s.reading.bento
            for s in sorted(sites, key=lambda s: s.variant)
            if s.strategy is None and s.variant.startswith(SHADOW_PREFIX) and s.reading.bento
        )
    )
    return FlagRoutes(
        name=str(feature.get("name")),
        enabled=bool(feature.get("enabled")),
        explicit_default=default,
        family=families[0] if families else None,
        families=families,
        shadows=shadows,
        sites=tuple(sites),
    )


def _strategy_sites(feature: Mapping[str, Any]) -> list[VariantSite]:
    sites = []
    for index, strategy in enumerate(feature.get("strategies") or []):
        if not isinstance(strategy, Mapping):
            continue
        # The client API (what the selector polls) leaves titles out: then the position, as the
        # UI lists strategies in evaluation order ("#2 flexibleRollout": the second one).
        title = str(strategy.get("title") or f"#{index + 1} {strategy.get('name', 'strategy')}")
        for variant in strategy.get("variants") or []:
            sites.append(_site(title, variant))
    return sites


def _flag_level_sites(feature: Mapping[str, Any]) -> list[VariantSite]:
    return [_site(None, v) for v in feature.get("variants") or [] if isinstance(v, Mapping)]


def _site(strategy: str | None, variant: Mapping[str, Any]) -> VariantSite:
    payload = variant.get("payload")
    payload = payload if isinstance(payload, Mapping) else None
    value = payload.get("value") if payload else None
    return VariantSite(
        strategy,
        str(variant.get("name")),
        read_payload(payload),
        value if isinstance(value, str) else None,
    )


def _tag_like(raw: str | None) -> str | None:
    """A family is still learnt from a payload that is only half right (e.g. `churn:`)."""
    if raw and ":" in raw and not raw.lstrip().startswith("{"):
        return raw.strip()
    return None


# --- lint ------------------------------------------------------------------------------------


def fallback_bento(
    routes: FlagRoutes,
    serves: Callable[[str], bool],
    stable: Mapping[str, str],
    family: str | None = None,
) -> str | None:
    """Who serves everyone no strategy variant sends elsewhere: the explicit default if it can
    serve, else the family's stable version if it can; None when no bento can."""
    if routes.explicit_default and serves(routes.explicit_default):
        return routes.explicit_default
    tag = stable.get(family or routes.family or "")
    return tag if tag and serves(tag) else None


def lint(
    routes: FlagRoutes,
    environment: str,
    known: Collection[str],
    stable: Mapping[str, str],
    family: str | None = None,
) -> list[RoutingProblem]:
    """Every mistake in one flag, in the order a person would fix them.

    `known`: the bento tags that can serve (the selector's catalog, or the declared versions);
    `stable`: family -> stable tag; `family`: the flag's family when its state names none (e.g.
    remembered from an earlier state).
    """
    found: list[RoutingProblem] = []
    if not routes.sites and not routes.family and not family:
        return found  # names no bento anywhere: not a model flag (e.g. a UI feature toggle)

    def problem(reason: str, message: str, fix: str, site: VariantSite | None = None) -> None:
        where = {}
        if site is not None:
            where = {"strategy": site.strategy or "(flag-level)", "variant": site.variant}
        tag = site.reading.bento or site.raw_value if site else None
        found.append(
            RoutingProblem(routes.name, environment, reason, message, fix, tag=tag, **where)
        )

    for site in routes.sites:
        _lint_site(site, known, problem)
    _lint_family(routes, known, stable, family, problem)
    return found


def _lint_site(site: VariantSite, known: Collection[str], problem: Callable[..., None]) -> None:
    tag = site.reading.bento
    if tag is None:
        problem(
            NO_BENTO_IN_PAYLOAD,
            site.reading.problem or "the payload names no bento",
            'edit the variant\'s payload: a string like churn:v2, or JSON {"bento": "churn:v2"}',
            site,
        )
    elif tag not in known:
        valid = ", ".join(sorted(t for t in known if family_of(t) == family_of(tag))) or "none"
        problem(
            UNKNOWN_BENTO,
            f"'{tag}' is not a bento the selector can serve; its users get the stable bento",
            f"set the payload to one of: {valid} (see `rollout models list`)",
            site,
        )


def _lint_family(
    routes: FlagRoutes,
    known: Collection[str],
    stable: Mapping[str, str],
    family: str | None,
    problem: Callable[..., None],
) -> None:
    family = routes.family or family
    if len(routes.families) > 1:
        problem(
            MIXED_FAMILIES,
            f"variants name bentos of several families ({', '.join(routes.families)}); "
            f"the stable bento of '{routes.families[0]}' serves everyone else",
            "make every variant of this flag name the same model family",
        )
    if routes.explicit_default:
        if routes.explicit_default not in known:
            problem(
                UNKNOWN_BENTO,
                f"the flag-level default '{routes.explicit_default}' cannot serve",
                "fix or delete the flag-level `default` variant",
            )
        else:
            return
    if family is None:
        problem(
            NO_FAMILY,
            "no variant names a bento, so no model family (and no stable version) is known",
            "add a strategy variant whose payload is a bento tag, e.g. churn:v2",
        )
    elif family not in stable:
        problem(
            NO_STABLE_VERSION,
            f"model family '{family}' declares no stable version; only strategy variants serve",
            f"ask the ML engineer to declare one: `rollout models promote {family}:<version>`",
        )
    elif stable[family] not in known:
        problem(
            STABLE_NOT_SERVED,
            f"the stable bento {stable[family]} of '{family}' is not served",
            f"serve {stable[family]} and list it in the catalog",
        )


def admin_feature(feature: Feature, environment: str) -> dict[str, Any]:
    """An Admin API flag in one environment, in the client-features shape `flag_routes` reads."""
    try:
        env = feature.environment(environment)
    except KeyError:
        return {"name": feature.name, "enabled": False, "strategies": [], "variants": []}
    return {
        "name": feature.name,
        "enabled": env.enabled,
        "strategies": [s for s in env.strategies if not s.get("disabled")],
        "variants": list(env.variants),
    }
