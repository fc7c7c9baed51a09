"""Flags as code <-> a live Unleash server, through the Admin API: the whole plan/apply round.

Nothing is written before everything is read and the whole plan is computed: `plan_against`
never writes; `apply` executes a finished plan, then records each flag's new state and the
server's events in the audit trail. The single steps at the end set up one flag for tests and
scripts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

from service.flags.audit import AuditStore
from service.flags.client_features import flag_variants
from service.flags.documents import PROJECT
from service.flags.model import BUILTIN_CONTEXT_FIELDS, FlagDefinition, FlagSet
from service.flags.plan import Plan, Target, _wire_strategy, apply_plan, make_plan
from service.flags.server_state import ServerState, read_server
from service.flags.unleash_admin import UnleashAdmin, Variant

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
    variants = cast(list[Variant], flag_variants(flag.default_bento, flag.shadows))
    if variants:
        admin.set_feature_variants(project, flag.name, environment, variants)
    admin.set_environment_enabled(project, flag.name, environment, bool(env and env.enabled))
