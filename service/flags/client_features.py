"""Our flag definitions in Unleash's wire format (the client API's `/api/client/features`).

Embedded mode feeds this straight to the SDK's cache, so flags/ is evaluated by the same
Yggdrasil engine as a real server's state. The Admin API sync builds on the same shapes.

Conventions that a person in the Unleash UI sees and can edit:
- each strategy variant carries the bento tag it serves as a string payload;
- a flag with an explicit `default:` carries it as a flag-level (environment) variant named
  `default` whose payload is that bento; without one (the usual case, and always for a flag
  made in the Unleash UI) the family's stable version from the registry serves;
- a strategy's segments are inlined as constraints (segment constraints first), exactly as
  the server's client API hands them to SDKs, so embedded mode evaluates them the same.
- shadow bentos are flag-level variants `shadow-1`, `shadow-2`, ... (fixed weight 0, payload
  the bento tag): never chosen to serve, mirrored every request by the selector.
"""

from __future__ import annotations

from typing import Any

from service.flags.model import Constraint, FlagDefinition, FlagSet, Segment, Strategy

DEFAULT_VARIANT = "default"
SHADOW_PREFIX = "shadow-"


def client_features(flag_set: FlagSet, environment: str) -> dict[str, Any]:
    """The client-features document for one environment."""
    return {
        "version": 2,
        "features": [
            feature(flag, environment, flag_set.segments) for flag in flag_set.flags.values()
        ],
        "segments": [],
    }


def feature(
    flag: FlagDefinition, environment: str, segments: dict[str, Segment] | None = None
) -> dict[str, Any]:
    """One flag as the client API serves it for `environment`, segments inlined."""
    env = flag.environments.get(environment)
    inline = segments or {}
    return {
        "name": flag.name,
        "type": "experiment",
        "project": "default",
        "description": flag.description,
        "enabled": bool(env and env.enabled),
        "impressionData": False,
        "strategies": [client_strategy(flag, s, inline) for s in env.strategies] if env else [],
        "variants": flag_variants(flag.default_bento, flag.shadows),
    }


def flag_variants(default_bento: str | None, shadows: tuple[str, ...]) -> list[dict[str, Any]]:
    """The flag-level variants: an explicit default (if any), then the shadows."""
    default = [default_variant(default_bento)] if default_bento else []
    return [*default, *shadow_variants(shadows)]


def shadow_variants(bentos: tuple[str, ...]) -> list[dict[str, Any]]:
    """Shadow bentos as flag-level variants `shadow-1`, `shadow-2`, ... with a fixed weight of
    0: visible and editable in the Unleash UI next to `default`, never chosen to serve."""
    return [
        {
            "name": f"{SHADOW_PREFIX}{i}",
            "weight": 0,
            "weightType": "fix",
            "stickiness": "default",
            "payload": {"type": "string", "value": bento},
        }
        for i, bento in enumerate(bentos, start=1)
    ]


def default_variant(bento: str) -> dict[str, Any]:
    return {
        "name": DEFAULT_VARIANT,
        "weight": 1000,
        "weightType": "variable",
        "stickiness": "default",
        "payload": {"type": "string", "value": bento},
    }


def client_strategy(
    flag: FlagDefinition, spec: Strategy, segments: dict[str, Segment]
) -> dict[str, Any]:
    """A strategy for SDKs: the constraints of its segments come first, then its own."""
    wire = strategy(flag, spec)
    inlined = [constraint(c) for name in spec.segments for c in segments[name].constraints]
    wire["constraints"] = inlined + wire["constraints"]
    return wire


def strategy(flag: FlagDefinition, spec: Strategy) -> dict[str, Any]:
    """A strategy as the Admin API takes it (segments are attached by id separately)."""
    return {
        "name": "flexibleRollout",
        "title": spec.name,
        "parameters": {
            "rollout": str(spec.rollout),
            "stickiness": spec.stickiness,
            "groupId": flag.name,
        },
        "constraints": [constraint(c) for c in spec.constraints],
        "variants": strategy_variants(flag, spec),
    }


def strategy_variants(flag: FlagDefinition, spec: Strategy) -> list[dict[str, Any]]:
    return [
        {
            "name": name,
            "weight": round(percent * 10),
            "weightType": "variable",
            "stickiness": spec.stickiness,
            "payload": {"type": "string", "value": flag.variants[name]},
        }
        for name, percent in spec.variants.items()
    ]


def constraint(spec: Constraint) -> dict[str, Any]:
    wire: dict[str, Any] = {
        "contextName": spec.field,
        "operator": spec.operator,
        "inverted": spec.inverted,
        "caseInsensitive": spec.case_insensitive,
    }
    if len(spec.values) == 1 and not spec.operator.endswith("IN"):
        wire["value"] = spec.values[0]
    else:
        wire["values"] = list(spec.values)
    return wire
