"""Our flag definitions in Unleash's wire format (the client API's `/api/client/features`).

Embedded mode feeds this straight to the SDK's cache, so flags/ is evaluated by the same
Yggdrasil engine as a real server's state. The Admin API sync builds on the same shapes.

Conventions that a person in the Unleash UI sees and can edit:
- each strategy variant carries the bento tag it serves as a string payload;
- the flag-level (environment) variants hold one variant named `default` whose payload is
  the default bento, so the stable bento is visible in the UI too.
"""

from __future__ import annotations

from typing import Any

from service.flag_definitions import Constraint, FlagDefinition, FlagSet, Strategy

DEFAULT_VARIANT = "default"


def client_features(flag_set: FlagSet, environment: str) -> dict[str, Any]:
    """The client-features document for one environment."""
    return {
        "version": 2,
        "features": [feature(flag, environment) for flag in flag_set.flags.values()],
        "segments": [],
    }


def feature(flag: FlagDefinition, environment: str) -> dict[str, Any]:
    env = flag.environments.get(environment)
    return {
        "name": flag.name,
        "type": "experiment",
        "project": "default",
        "description": flag.description,
        "enabled": bool(env and env.enabled),
        "impressionData": False,
        "strategies": [strategy(flag, s) for s in env.strategies] if env else [],
        "variants": [default_variant(flag.default_bento)],
    }


def default_variant(bento: str) -> dict[str, Any]:
    return {
        "name": DEFAULT_VARIANT,
        "weight": 1000,
        "weightType": "variable",
        "stickiness": "default",
        "payload": {"type": "string", "value": bento},
    }


def strategy(flag: FlagDefinition, spec: Strategy) -> dict[str, Any]:
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
