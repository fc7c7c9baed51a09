"""The plan from flags/ to a server: every change computed and validated before any write.

Writes use the same compiled shapes as embedded mode (`flags.client_features`), so a flag
behaves the same from flags/ or from a server. `apply_plan` executes a finished plan and refuses
to overwrite drift (a change made in the Unleash UI since the last apply) unless told to.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

from service.errors import RolloutError
from service.flags.client_features import (
    constraint,
    flag_variants,
    strategy,
)
from service.flags.documents import (
    PROJECT,
    Doc,
    _constraint_doc,
    _normalized,
    _show,
    _strategy_doc,
    _wire_constraint_doc,
    diff,
    flag_doc,
    strategy_name,
)
from service.flags.model import (
    BUILTIN_CONTEXT_FIELDS,
    ENVIRONMENTS,
    FlagDefinition,
    FlagSet,
    Segment,
    Strategy,
)
from service.flags.server_state import ServerState
from service.flags.unleash_admin import Constraint as WireConstraint
from service.flags.unleash_admin import Feature, UnleashAdmin, Variant
from service.flags.unleash_admin import Strategy as WireStrategy


class DriftError(RolloutError):
    """Apply would overwrite changes made on the server since the last apply."""

    code = "flag_drift"


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

    details = [f"default: {flag.default_bento or '(the stable version)'}"] + [
        f"{env}: {'on' if doc['enabled'] else 'off'}, strategies: "
        f"{', '.join(s['name'] for s in doc['strategies']) or 'none'}"
        for env, doc in desired["environments"].items()
    ]
    return Change(f"flag {flag.name}", "create", tuple(details), write, flag.name)


def _set_default(target: Target, flag: FlagDefinition, project: str) -> None:
    # The default bento and the shadows travel together as the flag-level variants.
    variants = flag_variants(flag.default_bento, flag.shadows)
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
    if actual["default"] != (flag.default_bento or ""):
        new = flag.default_bento or "(none: the stable version)"
        details.append(f"default: {actual['default'] or '(none)'} -> {new}")
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
