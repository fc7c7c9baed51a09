"""What a live Unleash server holds: its flags as documents, its segments and context fields."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

from service.flags.documents import PROJECT, Doc, server_flag_doc
from service.flags.unleash_admin import ContextField as ServerContextField
from service.flags.unleash_admin import Feature, UnleashAdmin
from service.flags.unleash_admin import Segment as ServerSegment

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
