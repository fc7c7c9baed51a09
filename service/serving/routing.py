"""The routing decision: which bento serves this context for this flag, and why.

Everyone a strategy variant does not send to a servable bento gets the flag's fallback: its
explicit default if it has one that can serve, else its model family's stable version (the
registry's fact). How the flag is configured never raises here: a mistake is routed around and
reported with the decision (`problem`), for the log and /metrics. Only a flag that does not
exist (404) or a flag no bento at all can serve (503) raises.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from service.errors import BentoUnavailable, UnknownFlag
from service.flags.client_features import DEFAULT_VARIANT, SHADOW_PREFIX
from service.flags.routes import (
    NO_BENTO_IN_PAYLOAD,
    UNKNOWN_BENTO,
    FlagRoutes,
    fallback_bento,
)
from service.serving.catalog import Catalog
from service.serving.flag_client import FlagClient

# Why a bento was chosen; stable strings, logged with every exposure and counted in /metrics.
STRATEGY_VARIANT = "strategy_variant"
FLAG_DISABLED = "flag_disabled"
FLAG_ARCHIVED = "flag_archived"
NO_MATCHING_STRATEGY = "no_matching_strategy"
NO_VARIANT = "no_variant"
FALLBACK = "fallback_after_error"
REASONS = (
    STRATEGY_VARIANT,
    FLAG_DISABLED,
    FLAG_ARCHIVED,
    NO_MATCHING_STRATEGY,
    NO_VARIANT,
    NO_BENTO_IN_PAYLOAD,
    UNKNOWN_BENTO,
    FALLBACK,
)


@dataclass(frozen=True)
class FlagMistake:
    """A mistake in the flag that this decision routed around (for the log and /metrics)."""

    reason: str
    strategy: str
    variant: str
    tag: str | None
    message: str


@dataclass(frozen=True)
class RoutingDecision:
    flag: str
    variant: str
    bento: str
    reason: str
    default_bento: str
    detail: str | None = None  # e.g. the refused tag, for the log
    problem: FlagMistake | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "flag": self.flag,
            "variant": self.variant,
            "bento": self.bento,
            "reason": self.reason,
            "default_bento": self.default_bento,
            **({"detail": self.detail} if self.detail else {}),
        }


def decide(
    flags: FlagClient, catalog: Catalog, flag: str, context: dict[str, Any]
) -> RoutingDecision:
    """Resolve one request; UnknownFlag for a flag never seen, BentoUnavailable if none serves."""
    routes = flags.flag(flag)
    family = flags.family(flag)
    archived = routes is None  # gone from the feature state, but its family is remembered
    if routes is None:
        if family is None:  # never seen: a caller's typo, not a flag to serve
            raise UnknownFlag(f"unknown flag '{flag}'")
        routes = FlagRoutes(flag, False, None, family, (family,), (), ())
    family = family or _only_family(catalog.stable)
    fallback = fallback_bento(routes, catalog.__contains__, catalog.stable, family)

    def default(reason: str, problem: FlagMistake | None = None) -> RoutingDecision:
        if fallback is None:  # the only configuration that cannot be served: a 503
            raise BentoUnavailable(_no_bento(routes, catalog, family))
        detail = problem.message if problem else None
        return RoutingDecision(flag, DEFAULT_VARIANT, fallback, reason, fallback, detail, problem)

    if archived:
        return default(FLAG_ARCHIVED)
    variant = flags.variant(flag, context)
    if not variant.flag_enabled:
        return default(FLAG_DISABLED if not routes.enabled else NO_MATCHING_STRATEGY)
    # Flag-level variants `default` and `shadow-N` only hold bento tags; none serves on its own.
    if variant.name == DEFAULT_VARIANT or variant.name.startswith(SHADOW_PREFIX):
        return default(STRATEGY_VARIANT)
    if variant.name == "disabled" and not variant.payload:  # a matched strategy, no variants
        return default(NO_VARIANT)
    reading = routes.reading(variant.name, variant.payload)
    # `strategies_of` only for a mistake: the happy path is the one every request takes.
    if reading.bento is None:
        raw = (variant.payload or {}).get("value")
        message = f"variant '{variant.name}': {reading.problem}"
        where = routes.strategies_of(variant.name)
        return default(
            NO_BENTO_IN_PAYLOAD,
            FlagMistake(NO_BENTO_IN_PAYLOAD, where, variant.name, raw, message),
        )
    if reading.bento not in catalog:
        message = f"variant '{variant.name}' names unknown bento '{reading.bento}'"
        where = routes.strategies_of(variant.name)
        return default(
            UNKNOWN_BENTO,
            FlagMistake(UNKNOWN_BENTO, where, variant.name, reading.bento, message),
        )
    # Without a fallback ("" here) a failure of this bento cannot be covered: the selector says so.
    return RoutingDecision(flag, variant.name, reading.bento, STRATEGY_VARIANT, fallback or "")


def _only_family(stable: dict[str, str]) -> str | None:
    """A flag that names no bento yet (just made in the UI, variants still to come) belongs to
    the only model family there is, when there is one; with several it stays unknown."""
    return next(iter(stable)) if len(stable) == 1 else None


def _no_bento(routes: FlagRoutes, catalog: Catalog, family: str | None) -> str:
    """Why no bento at all can serve the flag, in words an operator can act on."""
    if routes.explicit_default and routes.explicit_default not in catalog:
        head = f"its default '{routes.explicit_default}' is not in the catalog, and "
    else:
        head = ""
    if family is None:
        return (
            f"flag '{routes.name}': {head}no variant names a bento, so its model family is "
            "unknown (give a strategy variant a payload such as churn:v2)"
        )
    stable = catalog.stable.get(family)
    if stable is None:
        return (
            f"flag '{routes.name}': {head}model family '{family}' has no stable version "
            f"(declare one: rollout models promote {family}:<version>)"
        )
    return f"flag '{routes.name}': {head}the stable bento {stable} is not in the catalog"
