"""The routing decision: which bento serves this context for this flag, and why."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from service.errors import BentoUnavailable, UnknownFlag
from service.flags.client_features import SHADOW_PREFIX
from service.serving.catalog import BentoCatalog
from service.serving.flag_client import FlagClient

# Why a bento was chosen; stable strings, logged with every exposure.
STRATEGY_VARIANT = "strategy_variant"
FLAG_DISABLED = "flag_disabled"
NO_MATCHING_STRATEGY = "no_matching_strategy"
NO_VARIANT = "no_variant"
UNKNOWN_BENTO = "unknown_bento"
FALLBACK = "fallback_after_error"

DEFAULT_VARIANT = "default"


@dataclass(frozen=True)
class RoutingDecision:
    flag: str
    variant: str
    bento: str
    reason: str
    default_bento: str
    detail: str | None = None  # e.g. the refused tag, for the log

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
    flags: FlagClient, catalog: BentoCatalog, flag: str, context: dict[str, Any]
) -> RoutingDecision:
    """Resolve one request; raise UnknownFlag if the flag does not exist."""
    state = flags.flag(flag)
    if state is None:
        raise UnknownFlag(f"unknown flag '{flag}'")
    if not state.default_bento:
        raise BentoUnavailable(
            f"flag '{flag}' declares no default bento (a flag-level variant "
            f"named '{DEFAULT_VARIANT}' whose payload is a bento tag)"
        )
    variant = flags.variant(flag, context)

    def default(reason: str, detail: str | None = None) -> RoutingDecision:
        return RoutingDecision(
            flag,
            DEFAULT_VARIANT,
            state.default_bento or "",
            reason,
            state.default_bento or "",
            detail,
        )

    if not variant.flag_enabled:
        return default(FLAG_DISABLED if not state.enabled else NO_MATCHING_STRATEGY)
    # Flag-level variants (`default`, `shadow-N`) only hold bento tags; none of them serves
    # on its own, so a flag whose strategy has no variants serves the default.
    if variant.name == DEFAULT_VARIANT or variant.name.startswith(SHADOW_PREFIX):
        return default(STRATEGY_VARIANT)
    if not variant.bento:
        return default(NO_VARIANT, f"variant '{variant.name}' carries no bento tag")
    if variant.bento not in catalog:
        return default(
            UNKNOWN_BENTO, f"variant '{variant.name}' names unknown bento '{variant.bento}'"
        )
    return RoutingDecision(flag, variant.name, variant.bento, STRATEGY_VARIANT, state.default_bento)
