"""The HTTP request's context, turned into an Unleash context the SDK evaluates.

Top-level fields follow Unleash's context (userId, sessionId, remoteAddress, currentTime,
appName, environment); everything else, in `properties` or at the top level, becomes a custom
property, as in Unleash's own frontend API. Values must be scalars; they are sent to the engine
as strings. `appName` and `environment` given by the caller override the selector's own for
constraints on those fields (as in every Unleash SDK); they never change which environment's
flags the selector loaded. The Unleash client-specification suite checks this mapping
(tests/integration/test_conformance.py): a field put in the wrong place fails cases there.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from service.errors import BadRequest
from service.serving.limits import (
    FIELD_LENGTHS,
    MAX_KEY_LENGTH,
    MAX_PROPERTIES,
    MAX_VALUE_LENGTH,
    check_length,
)

STANDARD_FIELDS = ("userId", "sessionId", "remoteAddress", "currentTime", "appName", "environment")


def from_json(raw: Any) -> dict[str, Any]:
    """Validate a JSON `context` object; raise BadRequest naming the offending field."""
    if not isinstance(raw, dict):
        raise BadRequest(f"'context' must be an object, not {_kind(raw)}")
    properties = raw.get("properties", {})
    if not isinstance(properties, dict):
        raise BadRequest(f"'context.properties' must be an object, not {_kind(properties)}")
    context: dict[str, Any] = {"properties": {}}
    for key, value in raw.items():
        if key == "properties":
            continue
        target = context if key in STANDARD_FIELDS else context["properties"]
        target[key] = _scalar(value, f"context.{key}")
    for key, value in properties.items():
        context["properties"][key] = _scalar(value, f"context.properties.{key}")
    return _bounded(context, "context")


def from_query(args: Mapping[str, str]) -> dict[str, Any]:
    """From query parameters: standard fields by name, `properties[x]=` or any other name."""
    context: dict[str, Any] = {"properties": {}}
    for key, value in args.items():
        if key in STANDARD_FIELDS:
            context[key] = value
        elif key.startswith("properties[") and key.endswith("]"):
            context["properties"][key[len("properties[") : -1]] = value
        else:
            context["properties"][key] = value
    return _bounded(context, "query")


def _bounded(context: dict[str, Any], where: str) -> dict[str, Any]:
    """The limits of service.serving.limits: what the event store's columns can hold."""
    properties = context["properties"]
    if len(properties) > MAX_PROPERTIES:
        raise BadRequest(f"'{where}' has {len(properties)} properties; at most {MAX_PROPERTIES}")
    for key, value in [*context.items(), *properties.items()]:
        if key == "properties":
            continue
        name = key if key in context else f"properties.{key}"
        check_length(key, MAX_KEY_LENGTH, f"{where}.{name} (its name)")
        limit = FIELD_LENGTHS.get(key, MAX_VALUE_LENGTH)
        check_length(value, limit, f"{where}.{name}")
    return context


def _scalar(value: Any, field: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float) and value is not None:
        return str(value)
    raise BadRequest(f"'{field}' must be a string or number, not {_kind(value)}")


def _kind(value: Any) -> str:
    return {dict: "an object", list: "an array", type(None): "null"}.get(
        type(value), type(value).__name__
    )
