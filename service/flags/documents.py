"""The flag document: one plain shape for a flag, from flags/ or from a live Unleash server.

A flag document is exactly what a flag file in flags/ holds. Both sides are turned into it, so
comparing them is comparing two documents, `export` is writing the server's documents as YAML,
and the state recorded after each apply (the drift baseline, kept in the audit store) is a
document too. `diff` says how two documents differ, in words.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import yaml

from service.flags.client_features import (
    DEFAULT_VARIANT,
    SHADOW_PREFIX,
)
from service.flags.model import ENVIRONMENTS, Constraint, FlagDefinition, Strategy
from service.flags.payloads import read_payload
from service.flags.unleash_admin import Feature

PROJECT = "default"
Doc = dict[str, Any]

# --- flag documents ------------------------------------------------------------------------


def _number(value: float) -> int | float:
    return int(value) if float(value).is_integer() else float(value)


def _constraint_doc(spec: Constraint) -> Doc:
    doc: Doc = {"field": spec.field, "operator": spec.operator, "values": list(spec.values)}
    if spec.inverted:
        doc["inverted"] = True
    if spec.case_insensitive:
        doc["case_insensitive"] = True
    return doc


def _strategy_doc(spec: Strategy) -> Doc:
    doc: Doc = {"name": spec.name, "rollout": spec.rollout, "stickiness": spec.stickiness}
    if spec.segments:
        doc["segments"] = list(spec.segments)
    if spec.constraints:
        doc["constraints"] = [_constraint_doc(c) for c in spec.constraints]
    if spec.variants:
        doc["variants"] = {name: _number(w) for name, w in spec.variants.items()}
    return doc


def _environment_doc(enabled: bool, strategies: list[Doc]) -> Doc:
    return {"enabled": enabled, "strategies": strategies}


def flag_doc(flag: FlagDefinition) -> Doc:
    """The flag as a document: what a flag file holds, normalized for comparison.

    Both environments are always present (one a file leaves out is off, with no strategies),
    and only the variants some strategy serves are kept: only those exist on a server.
    """
    environments = {}
    for name in ENVIRONMENTS:
        env = flag.environments.get(name)
        strategies = [_strategy_doc(s) for s in env.strategies] if env else []
        environments[name] = _environment_doc(bool(env and env.enabled), strategies)
    used = {
        v for env in environments.values() for s in env["strategies"] for v in s.get("variants", {})
    }
    doc = {
        "flag": flag.name,
        "description": flag.description,
        "default": flag.default_bento or "",
        "variants": {name: tag for name, tag in flag.variants.items() if name in used},
        "environments": environments,
    }
    return {**doc, "shadows": list(flag.shadows)} if flag.shadows else doc


def _wire_constraint_doc(raw: Mapping[str, Any]) -> Doc:
    values = list(raw.get("values") or [])
    if not values and raw.get("value"):
        values = [raw["value"]]
    spec = Constraint(
        str(raw["contextName"]),
        str(raw["operator"]),
        tuple(str(v) for v in values),
        bool(raw.get("inverted")),
        bool(raw.get("caseInsensitive")),
    )
    return _constraint_doc(spec)


def strategy_name(raw: Mapping[str, Any], index: int) -> str:
    """A strategy's name in flags/: its title in the UI, or a stable stand-in when untitled."""
    return str(raw.get("title") or f"{raw.get('name', 'strategy')}-{index + 1}")


def _server_strategy_doc(
    raw: Mapping[str, Any], index: int, segment_names: Mapping[int, str], bentos: dict[str, str]
) -> Doc:
    parameters = raw.get("parameters") or {}
    doc: Doc = {
        "name": strategy_name(raw, index),
        "rollout": int(float(parameters.get("rollout", 100))),
        "stickiness": str(parameters.get("stickiness") or "default"),
    }
    if raw.get("segments"):
        doc["segments"] = [segment_names.get(int(i), f"segment-{i}") for i in raw["segments"]]
    if raw.get("constraints"):
        doc["constraints"] = [_wire_constraint_doc(c) for c in raw["constraints"]]
    variants = raw.get("variants") or []
    if variants:
        doc["variants"] = {v["name"]: _number(v["weight"] / 10) for v in variants}
    for variant in variants:
        # A string `churn:v2` or JSON {"bento": "churn:v2"}: the same bento, the same document.
        payload = variant.get("payload")
        reading = read_payload(payload)
        bentos[variant["name"]] = reading.bento or str((payload or {}).get("value", ""))
    return doc


def _server_default(feature: Feature) -> str:
    """The flag-level `default` variant's bento; "" when there is none (a flag made in the UI:
    the family's stable version serves)."""
    for env in feature.environments:
        for variant in env.variants:
            if variant["name"] == DEFAULT_VARIANT and "payload" in variant:
                reading = read_payload(variant["payload"])
                return reading.bento or str(variant["payload"].get("value", ""))
    return ""


def _server_shadows(feature: Feature) -> list[str]:
    """The shadow bentos: flag-level variants `shadow-1`, `shadow-2`, ... in that order."""
    for env in feature.environments:
        shadows = [
            v for v in env.variants if v["name"].startswith(SHADOW_PREFIX) and "payload" in v
        ]
        if shadows:
            shadows.sort(key=lambda v: int(v["name"].removeprefix(SHADOW_PREFIX) or 0))
            return [v["payload"]["value"] for v in shadows]
    return []


def server_flag_doc(feature: Feature, segment_names: Mapping[int, str]) -> Doc:
    """The flag as the server has it, in the same document shape as `flag_doc`."""
    bentos: dict[str, str] = {}
    environments = {}
    for name in ENVIRONMENTS:
        env = next((e for e in feature.environments if e.name == name), None)
        raws = env.strategies if env else []
        strategies = [
            _server_strategy_doc(s, i, segment_names, bentos)
            for i, s in enumerate(raws)
            if s.get("name") in ("flexibleRollout", "default")
        ]
        environments[name] = _environment_doc(bool(env and env.enabled), strategies)
    doc = {
        "flag": feature.name,
        "description": feature.description,
        "default": _server_default(feature),
        "variants": dict(sorted(bentos.items())),
        "environments": environments,
    }
    shadows = _server_shadows(feature)
    return {**doc, "shadows": shadows} if shadows else doc


def _normalized(doc: Doc) -> Doc:
    """Variant maps compare as maps (their order in a file carries no meaning)."""
    return {**doc, "variants": dict(sorted(doc["variants"].items()))}


# --- differences, in words ---------------------------------------------------------------


def _keyed(items: list[Doc]) -> dict[str, Doc]:
    return {item["name"]: item for item in items}


def diff(old: Any, new: Any, path: str = "") -> list[str]:
    """Each difference as `path: old -> new`; strategies are matched by name."""
    if isinstance(old, dict) and isinstance(new, dict):
        lines = []
        for key in [*old, *(k for k in new if k not in old)]:
            where = f"{path}.{key}" if path else str(key)
            if key not in new:
                lines.append(f"{where}: {_show(old[key])} -> (removed)")
            elif key not in old:
                lines.append(f"{where}: (none) -> {_show(new[key])}")
            else:
                lines.extend(diff(old[key], new[key], where))
        return lines
    if path.endswith("strategies") and isinstance(old, list) and isinstance(new, list):
        lines = diff(_keyed(old), _keyed(new), path)
        order_old = [s["name"] for s in old if s["name"] in _keyed(new)]
        order_new = [s["name"] for s in new if s["name"] in _keyed(old)]
        if order_old != order_new:
            lines.append(f"{path} order: {', '.join(order_old)} -> {', '.join(order_new)}")
        return lines
    return [] if old == new else [f"{path}: {_show(old)} -> {_show(new)}"]


def _show(value: Any) -> str:
    if isinstance(value, dict) and "name" in value:
        return f"strategy '{value['name']}'"
    return (
        yaml.safe_dump(value, default_flow_style=True, width=10_000)
        .strip()
        .removesuffix("...")
        .strip()
    )
