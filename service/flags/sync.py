"""Flags as code <-> a live Unleash server, through the Admin API: plan, apply, export.

Both sides are first turned into the same plain shape, the *flag document* (exactly what a
flag file in flags/ holds), so comparing them is comparing two documents, `export` is writing
the server's documents as YAML, and the state recorded after each apply (the drift baseline,
kept in the audit store) is a document too. Writes use the same compiled shapes as embedded
mode (service.flags.client_features), so a flag behaves the same from flags/ or from a server.

Nothing is written before everything is read and the whole plan is computed: `plan` never
writes, `apply` executes a finished plan, and refuses to overwrite drift (a change made in the
Unleash UI since the last apply) unless told to.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, cast

import yaml

from service.errors import RolloutError
from service.flags.audit import AuditStore
from service.flags.client_features import (
    DEFAULT_VARIANT,
    SHADOW_PREFIX,
    constraint,
    default_variant,
    shadow_variants,
    strategy,
)
from service.flags.definitions import (
    BUILTIN_CONTEXT_FIELDS,
    CONTEXT_FILE,
    ENVIRONMENTS,
    Constraint,
    FlagDefinition,
    FlagSet,
    Segment,
    Strategy,
)
from service.flags.unleash_admin import Constraint as WireConstraint
from service.flags.unleash_admin import ContextField as ServerContextField
from service.flags.unleash_admin import Feature, UnleashAdmin, Variant
from service.flags.unleash_admin import Segment as ServerSegment
from service.flags.unleash_admin import Strategy as WireStrategy

PROJECT = "default"
Doc = dict[str, Any]


class DriftError(RolloutError):
    """Apply would overwrite changes made on the server since the last apply."""

    code = "flag_drift"


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
        "default": flag.default_bento,
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
        bentos[variant["name"]] = str((variant.get("payload") or {}).get("value", ""))
    return doc


def _server_default(feature: Feature) -> str:
    for env in feature.environments:
        for variant in env.variants:
            if variant["name"] == DEFAULT_VARIANT and "payload" in variant:
                return variant["payload"]["value"]
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


# --- the server's state --------------------------------------------------------------------


@dataclass(frozen=True)
class ServerState:
    """Everything plan needs from the server, read before anything is written."""

    url: str
    context_fields: dict[str, ServerContextField]
    segments: dict[str, ServerSegment]
    features: dict[str, Feature | None]  # flag name -> the flag, None when absent

    @property
    def segment_names(self) -> dict[int, str]:
        return {s.id: s.name for s in self.segments.values()}

    def doc(self, flag: str) -> Doc | None:
        feature = self.features.get(flag)
        return None if feature is None else server_flag_doc(feature, self.segment_names)


def read_server(admin: UnleashAdmin, flags: Iterable[str], project: str = PROJECT) -> ServerState:
    """Read the context fields, segments and the named flags (raises UnleashAdminError)."""
    return ServerState(
        url=admin.url,
        context_fields={f.name: f for f in admin.list_context_fields()},
        segments={s.name: s for s in admin.list_segments()},
        features={name: _find_feature(admin, project, name) for name in flags},
    )


def _find_feature(admin: UnleashAdmin, project: str, name: str) -> Feature | None:
    """The flag with its environment variants (the flag's own GET leaves them out)."""
    feature = admin.find_feature(project, name)
    if feature is None:
        return None
    environments = [
        replace(env, variants=admin.get_feature_variants(project, name, env.name))
        for env in feature.environments
    ]
    return replace(feature, environments=environments)


def read_all_flags(admin: UnleashAdmin, project: str = PROJECT) -> ServerState:
    """Read the server's state for every flag of `project` (for export)."""
    names = [f.name for f in admin.list_features(project)]
    return read_server(admin, names, project)


# --- the plan ------------------------------------------------------------------------------


@dataclass
class Target:
    """Where a plan is applied: the server, and ids learnt while applying (new segments)."""

    admin: UnleashAdmin
    project: str
    segment_ids: dict[str, int]


@dataclass(frozen=True)
class Change:
    """One write the plan makes, with the differences it resolves, in words."""

    target: str  # e.g. "flag churn-model", "churn-model/production strategy canary"
    action: str  # create | update | delete | reorder
    details: tuple[str, ...]
    write: Callable[[Target], None] = field(repr=False, compare=False)
    flag: str | None = None


@dataclass
class Plan:
    """What apply would change, and what changed on the server since the last apply."""

    changes: list[Change]
    drift: dict[str, list[str]]  # flag -> differences between the last apply and the server
    desired: dict[str, Doc]  # flag -> its document from flags/
    unmanaged: list[str] = field(default_factory=list)

    @property
    def changed_flags(self) -> set[str]:
        return {c.flag for c in self.changes if c.flag}

    @property
    def blocking_drift(self) -> dict[str, list[str]]:
        """Drift that apply would overwrite: on flags apply changes."""
        return {f: lines for f, lines in self.drift.items() if f in self.changed_flags}

    def render(self) -> str:
        lines = []
        for flag, differences in sorted(self.drift.items()):
            lines.append(f"! drift  flag {flag} changed on the server since the last apply:")
            lines.extend(f"      {d}" for d in differences)
        symbols = {"create": "+", "update": "~", "delete": "-", "reorder": "~"}
        for change in self.changes:
            lines.append(f"{symbols[change.action]} {change.action:<7} {change.target}")
            lines.extend(f"      {d}" for d in change.details)
        lines.append(self.summary())
        return "\n".join(lines)

    def summary(self) -> str:
        if not self.changes:
            return "no changes: the server matches flags/"
        kinds = {
            a: sum(c.action == a for c in self.changes)
            for a in ("create", "update", "delete", "reorder")
        }
        counts = ", ".join(f"{n} to {a}" for a, n in kinds.items() if n)
        return f"{len(self.changes)} change(s): {counts}"


def make_plan(
    flag_set: FlagSet,
    server: ServerState,
    baselines: Mapping[str, Doc | None],
    project: str = PROJECT,
) -> Plan:
    """Compare flags/ with the server; never writes. `baselines`: last applied document per flag."""
    changes = _context_field_changes(flag_set, server) + _segment_changes(flag_set, server)
    drift: dict[str, list[str]] = {}
    desired = {}
    for flag in flag_set.flags.values():
        desired[flag.name] = flag_doc(flag)
        actual = server.doc(flag.name)
        changes += _flag_changes(flag, flag_set, desired[flag.name], actual, server, project)
        lines = _drift(desired[flag.name], actual, baselines.get(flag.name))
        if lines:
            drift[flag.name] = lines
    return Plan(changes, drift, desired)


def _drift(desired: Doc, actual: Doc | None, baseline: Doc | None) -> list[str]:
    if actual is None:
        return []
    if baseline is None:
        if _normalized(actual) == _normalized(desired):
            return []
        return [
            "exists on the server but was never applied from flags/ here:",
            *diff(desired, actual),
        ]
    return diff(_normalized(baseline), _normalized(actual))


def _context_field_changes(flag_set: FlagSet, server: ServerState) -> list[Change]:
    changes = []
    for spec in flag_set.context_fields.values():
        if spec.name in BUILTIN_CONTEXT_FIELDS:
            continue
        want = {"description": spec.description, "legal_values": sorted(spec.legal_values)}
        have = server.context_fields.get(spec.name)
        if have is not None:
            now = {"description": have.description, "legal_values": sorted(have.legal_values)}
            if now == want:
                continue
        details = (
            diff(now, want)
            if have is not None
            else [f"legal values: {', '.join(spec.legal_values)}"]
        )

        def write(target: Target, spec: Any = spec) -> None:
            target.admin.create_context_field(spec.name, spec.legal_values, spec.description)

        action = "update" if have is not None else "create"
        changes.append(Change(f"context field {spec.name}", action, tuple(details), write))
    return changes


def _segment_wire(spec: Segment) -> list[WireConstraint]:
    return [cast(WireConstraint, constraint(c)) for c in spec.constraints]


def _segment_changes(flag_set: FlagSet, server: ServerState) -> list[Change]:
    changes = []
    for spec in flag_set.segments.values():
        want = {
            "description": spec.description,
            "constraints": [_constraint_doc(c) for c in spec.constraints],
        }
        have = server.segments.get(spec.name)
        now = None
        if have is not None:
            now = {
                "description": have.description,
                "constraints": [_wire_constraint_doc(c) for c in have.constraints],
            }
            if now == want:
                continue

        def write(target: Target, spec: Segment = spec) -> None:
            made = target.admin.create_segment(spec.name, _segment_wire(spec), spec.description)
            target.segment_ids[spec.name] = made.id

        details = (
            diff(now, want) if now is not None else [f"constraints: {_show(want['constraints'])}"]
        )
        changes.append(
            Change(f"segment {spec.name}", "update" if now else "create", tuple(details), write)
        )
    return changes


def _wire_strategy(flag: FlagDefinition, spec: Strategy, target: Target) -> WireStrategy:
    wire = cast(WireStrategy, strategy(flag, spec))
    wire["segments"] = [target.segment_ids[name] for name in spec.segments]
    return wire


def _flag_changes(
    flag: FlagDefinition,
    flag_set: FlagSet,
    desired: Doc,
    actual: Doc | None,
    server: ServerState,
    project: str,
) -> list[Change]:
    if actual is None:
        return [_create_flag_change(flag, desired, project)]
    changes = []
    if actual["description"] != desired["description"]:
        changes.append(_description_change(flag, actual, project))
    if (actual["default"], actual.get("shadows", [])) != (
        desired["default"],
        desired.get("shadows", []),
    ):
        changes.append(_default_change(flag, actual, project))
    feature = server.features[flag.name]
    assert feature is not None
    for env in ENVIRONMENTS:
        changes += _environment_changes(flag, env, desired, actual, feature, project)
    return changes


def _create_flag_change(flag: FlagDefinition, desired: Doc, project: str) -> Change:
    def write(target: Target) -> None:
        target.admin.create_feature(project, flag.name, "experiment", flag.description)
        _set_default(target, flag, project)
        for env in flag.environments.values():
            for spec in env.strategies:
                target.admin.add_strategy(
                    project, flag.name, env.name, _wire_strategy(flag, spec, target)
                )
            target.admin.set_environment_enabled(project, flag.name, env.name, env.enabled)

    details = [f"default: {flag.default_bento}"] + [
        f"{env}: {'on' if doc['enabled'] else 'off'}, strategies: "
        f"{', '.join(s['name'] for s in doc['strategies']) or 'none'}"
        for env, doc in desired["environments"].items()
    ]
    return Change(f"flag {flag.name}", "create", tuple(details), write, flag.name)


def _set_default(target: Target, flag: FlagDefinition, project: str) -> None:
    # The default bento and the shadows travel together as the flag-level variants.
    variants = [default_variant(flag.default_bento), *shadow_variants(flag.shadows)]
    for env in ENVIRONMENTS:
        target.admin.set_feature_variants(project, flag.name, env, cast(list[Variant], variants))


def _description_change(flag: FlagDefinition, actual: Doc, project: str) -> Change:
    def write(target: Target) -> None:
        target.admin.set_feature_description(project, flag.name, flag.description)

    details = (f"description: {_show(actual['description'])} -> {_show(flag.description)}",)
    return Change(f"flag {flag.name}", "update", details, write, flag.name)


def _default_change(flag: FlagDefinition, actual: Doc, project: str) -> Change:
    """The flag-level variants: the default bento and the shadow bentos."""

    def write(target: Target) -> None:
        _set_default(target, flag, project)

    def show(tags: list[str]) -> str:
        return ", ".join(tags) or "(none)"

    details: list[str] = []
    if actual["default"] != flag.default_bento:
        details.append(f"default: {actual['default'] or '(none)'} -> {flag.default_bento}")
    if actual.get("shadows", []) != list(flag.shadows):
        details.append(f"shadows: {show(actual.get('shadows', []))} -> {show(list(flag.shadows))}")
    return Change(f"flag {flag.name}", "update", tuple(details), write, flag.name)


def _served(doc: Doc, variants: Mapping[str, str]) -> Doc:
    """A strategy document with the bento each of its variants serves (compared too)."""
    return {**doc, "bentos": {v: variants.get(v, "") for v in doc.get("variants", {})}}


def _environment_changes(
    flag: FlagDefinition, env: str, desired: Doc, actual: Doc, feature: Feature, project: str
) -> list[Change]:
    want_env, have_env = desired["environments"][env], actual["environments"][env]
    want = {s["name"]: _served(s, desired["variants"]) for s in want_env["strategies"]}
    have = {s["name"]: _served(s, actual["variants"]) for s in have_env["strategies"]}
    ids = _strategy_ids(feature, env)
    specs = (
        {s.name: s for s in flag.environments[env].strategies} if env in flag.environments else {}
    )
    changes = []
    for name in have.keys() - want.keys():
        changes.append(_delete_strategy(flag, env, name, ids[name], project))
    for name, doc in want.items():
        if name not in have:
            changes.append(_add_strategy(flag, env, specs[name], project))
        elif have[name] != doc:
            changes.append(
                _update_strategy(flag, env, specs[name], ids[name], diff(have[name], doc), project)
            )
    # New strategies are appended, so after the writes above the server holds this order:
    after = [n for n in have if n in want] + [n for n in want if n not in have]
    if after != list(want):
        changes.append(_reorder(flag, env, list(want), project))
    if want_env["enabled"] != have_env["enabled"]:
        changes.append(_switch(flag, env, want_env["enabled"], project))
    return changes


def _strategy_ids(feature: Feature, env: str) -> dict[str, str]:
    try:
        raws = feature.environment(env).strategies
    except KeyError:
        return {}
    return {strategy_name(s, i): str(s.get("id")) for i, s in enumerate(raws)}


def _add_strategy(flag: FlagDefinition, env: str, spec: Strategy, project: str) -> Change:
    def write(target: Target) -> None:
        target.admin.add_strategy(project, flag.name, env, _wire_strategy(flag, spec, target))

    details = tuple(diff({}, _strategy_doc(spec)))
    return Change(f"{flag.name}/{env} strategy {spec.name}", "create", details, write, flag.name)


def _update_strategy(
    flag: FlagDefinition,
    env: str,
    spec: Strategy,
    strategy_id: str,
    details: list[str],
    project: str,
) -> Change:
    def write(target: Target) -> None:
        wire = _wire_strategy(flag, spec, target)
        target.admin.update_strategy(project, flag.name, env, strategy_id, wire)

    return Change(
        f"{flag.name}/{env} strategy {spec.name}", "update", tuple(details), write, flag.name
    )


def _delete_strategy(
    flag: FlagDefinition, env: str, name: str, strategy_id: str, project: str
) -> Change:
    def write(target: Target) -> None:
        target.admin.delete_strategy(project, flag.name, env, strategy_id)

    return Change(f"{flag.name}/{env} strategy {name}", "delete", (), write, flag.name)


def _reorder(flag: FlagDefinition, env: str, order: list[str], project: str) -> Change:
    def write(target: Target) -> None:
        raws = target.admin.list_strategies(project, flag.name, env)
        ids = {strategy_name(s, i): str(s.get("id")) for i, s in enumerate(raws)}
        target.admin.set_strategy_order(
            project, flag.name, env, [ids[n] for n in order if n in ids]
        )

    return Change(
        f"{flag.name}/{env} strategies",
        "reorder",
        (f"order: {', '.join(order)}",),
        write,
        flag.name,
    )


def _switch(flag: FlagDefinition, env: str, enabled: bool, project: str) -> Change:
    def write(target: Target) -> None:
        target.admin.set_environment_enabled(project, flag.name, env, enabled)

    state = ("off -> on",) if enabled else ("on -> off",)
    return Change(f"{flag.name}/{env}", "update", state, write, flag.name)


# --- apply -----------------------------------------------------------------------------------


def apply_plan(
    admin: UnleashAdmin,
    plan: Plan,
    server: ServerState,
    *,
    force: bool = False,
    project: str = PROJECT,
) -> None:
    """Execute `plan` in order; raise DriftError first (writing nothing) over unforced drift."""
    blocking = plan.blocking_drift
    if blocking and not force:
        lines = [f"flag {flag}: {d}" for flag, diffs in sorted(blocking.items()) for d in diffs]
        raise DriftError(
            "refusing to apply: these flags changed on the server since the last apply and "
            "applying would overwrite that (run `rollout flags export` to keep the change in "
            "flags/, or apply with --overwrite-drift):\n  " + "\n  ".join(lines)
        )
    target = Target(admin, project, {s.name: s.id for s in server.segments.values()})
    for change in plan.changes:
        change.write(target)


# --- export ----------------------------------------------------------------------------------


class _Dumper(yaml.SafeDumper):
    """Block style for mappings, flow style for short lists of scalars (constraint values)."""


def _represent_list(dumper: yaml.SafeDumper, data: list[Any]) -> yaml.Node:
    flow = all(not isinstance(v, dict | list) for v in data)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)


_Dumper.add_representer(list, _represent_list)


def to_yaml(doc: Doc, header: str) -> str:
    body = yaml.dump(doc, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100)
    return f"# {header}\n{body}"


def export_flag(doc: Doc) -> str:
    """A flag file for the server's flag; it plans to no change against that server."""
    return to_yaml(doc, f"Exported from Unleash by `rollout flags export`: flag {doc['flag']}.")


def export_context(server: ServerState) -> str:
    """context.yaml: the server's custom context fields and its segments."""
    fields_ = {
        f.name: {"description": f.description, "legal_values": list(f.legal_values)}
        for f in server.context_fields.values()
        if f.name not in BUILTIN_CONTEXT_FIELDS
    }
    segments = {
        s.name: {
            "description": s.description,
            "constraints": [_wire_constraint_doc(c) for c in s.constraints],
        }
        for s in server.segments.values()
    }
    doc: Doc = {"context_fields": fields_}
    if segments:
        doc["segments"] = segments
    return to_yaml(doc, f"Exported from Unleash by `rollout flags export`: {CONTEXT_FILE}.")


def model_flags(server: ServerState) -> dict[str, Doc]:
    """The server's model flags (those with a default bento) as documents, by name."""
    docs = {name: server.doc(name) for name in server.features}
    return {name: doc for name, doc in docs.items() if doc is not None and doc["default"]}


# --- the whole round, as the CLI runs it -------------------------------------------------------


def plan_against(
    admin: UnleashAdmin, flag_set: FlagSet, store: AuditStore, project: str = PROJECT
) -> tuple[Plan, ServerState]:
    """Read the server and the last applied states, and compute the plan (no writes)."""
    server = read_server(admin, flag_set.flags, project)
    baselines = {name: store.last_applied_state(server.url, name) for name in flag_set.flags}
    return make_plan(flag_set, server, baselines, project), server


def apply(
    admin: UnleashAdmin,
    flag_set: FlagSet,
    store: AuditStore,
    who: Who,
    *,
    force: bool = False,
    project: str = PROJECT,
) -> Plan:
    """Plan, apply, then record each flag's new state and the server's events in the audit."""
    plan, server = plan_against(admin, flag_set, store, project)
    apply_plan(admin, plan, server, force=force, project=project)
    after = read_server(admin, flag_set.flags, project)
    for name in flag_set.flags:
        state = after.doc(name)
        baseline = store.last_applied_state(server.url, name)
        if name in plan.changed_flags or baseline != state:
            what = [
                f"{c.action} {c.target}: {'; '.join(c.details)}"
                for c in plan.changes
                if c.flag == name
            ]
            store.record_apply(server.url, name, who.actor, who.reason, what, state)
        store.record_unleash_events(server.url, admin.get_events(name))
    return plan


@dataclass(frozen=True)
class Who:
    """Who applies, and why (recorded in the audit trail)."""

    actor: str
    reason: str


# --- single steps, for tests and scripts that set up one flag --------------------------------


def create_context_fields(admin: UnleashAdmin, flag_set: FlagSet) -> None:
    """Create (or update) the custom context fields flags target, with their legal values."""
    for spec in flag_set.context_fields.values():
        if spec.name not in BUILTIN_CONTEXT_FIELDS:
            admin.create_context_field(spec.name, spec.legal_values, spec.description)


def create_flag(
    admin: UnleashAdmin, flag: FlagDefinition, environment: str, project: str = PROJECT
) -> None:
    """Create `flag` with its state in one environment, on a server that lacks it.

    Segments the flag's strategies use must exist on the server already.
    """
    target = Target(admin, project, {s.name: s.id for s in admin.list_segments()})
    admin.create_feature(project, flag.name, "experiment", flag.description)
    env = flag.environments.get(environment)
    for spec in env.strategies if env else ():
        admin.add_strategy(project, flag.name, environment, _wire_strategy(flag, spec, target))
    variant = cast(Variant, default_variant(flag.default_bento))
    admin.set_feature_variants(project, flag.name, environment, [variant])
    admin.set_environment_enabled(project, flag.name, environment, bool(env and env.enabled))
