"""Flags as code -> a live Unleash server, through the Admin API.

Uses the same compiled shapes as embedded mode (service.unleash_features), so a flag behaves
the same whether it is evaluated from flags/ or fetched from a server.
"""

from __future__ import annotations

from typing import cast

from service.flag_definitions import BUILTIN_CONTEXT_FIELDS, FlagDefinition, FlagSet
from service.unleash_admin import Strategy, UnleashAdmin, Variant
from service.unleash_features import default_variant, strategy

PROJECT = "default"


def create_context_fields(admin: UnleashAdmin, flag_set: FlagSet) -> None:
    """Create (or update) the custom context fields flags target, with their legal values."""
    for field in flag_set.context_fields.values():
        if field.name not in BUILTIN_CONTEXT_FIELDS:
            admin.create_context_field(field.name, field.legal_values, field.description)


def create_flag(
    admin: UnleashAdmin, flag: FlagDefinition, environment: str, project: str = PROJECT
) -> None:
    """Create `flag` as defined in flags/ for one environment, on a server that lacks it."""
    admin.create_feature(project, flag.name, "experiment", flag.description)
    env = flag.environments.get(environment)
    for spec in env.strategies if env else ():
        admin.add_strategy(project, flag.name, environment, cast(Strategy, strategy(flag, spec)))
    default = cast(Variant, default_variant(flag.default_bento))
    admin.set_feature_variants(project, flag.name, environment, [default])
    admin.set_environment_enabled(project, flag.name, environment, bool(env and env.enabled))
