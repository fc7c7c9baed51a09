"""The Models page's model: every declared and stored version, its gates, card and flags.

The registry's own functions (service.registry: declared versions, the bento store, gate
reports, card sections) read the same files `rollout models list|show` reads; which flags serve
each bento is worked out from the flag documents the Rollouts page shows, so in server mode it
is what Unleash serves, not what flags/ says.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from service.config import Settings
from service.flags.ramp import Doc
from service.registry.bentos import StoredBento, stored_bentos
from service.registry.cards import Section, card_sections
from service.registry.gates import GateReport, gate_status, read_report
from service.registry.versions import declared_bentos


@dataclass
class ModelView:
    tag: str
    family: str
    built: bool
    created: str = ""
    change: str = ""
    gate: str = "not built"
    gate_report: GateReport | None = None
    metrics: dict[str, Any] = field(default_factory=dict)  # overall offline metrics
    stable_for: list[str] = field(default_factory=list)  # flags whose default it is
    serves: list[str] = field(default_factory=list)  # "flag/env (variant, ...)"
    card: list[Section] = field(default_factory=list)


def models(settings: Settings, docs: dict[str, Doc]) -> list[ModelView]:
    """Declared versions (bentos/) and stored bentos (the BentoML store), by family and age."""
    views: dict[str, ModelView] = {}
    for tag, spec in declared_bentos(settings.bentos_dir).items():
        views[tag] = ModelView(tag, spec.family, built=False, change=spec.change)
    for bento in stored_bentos(settings):
        views[bento.tag] = _stored(bento, settings, views.get(bento.tag))
    for view in views.values():
        view.stable_for = sorted(n for n, d in docs.items() if d.get("default") == view.tag)
        view.serves = serving(view.tag, docs)
    return sorted(views.values(), key=lambda v: (v.family, v.created or "~", v.tag))


def _stored(bento: StoredBento, settings: Settings, declared: ModelView | None) -> ModelView:
    meta = bento.model_metadata
    return ModelView(
        tag=bento.tag,
        family=bento.family,
        built=True,
        created=bento.created[:19].replace("T", " "),
        change=str(meta.get("change") or (declared.change if declared else "")),
        gate=gate_status(bento),
        gate_report=read_report(bento),
        metrics=dict((meta.get("metrics") or {}).get("overall") or {}),
        card=card_sections(bento, settings),
    )


def serving(tag: str, docs: dict[str, Doc]) -> list[str]:
    """Where `tag` serves: `flag/environment (default, canary)`, from the flag documents.

    The default serves in every environment (flag off or no match); a variant where an
    enabled environment's strategy gives it weight.
    """
    found = []
    for name, doc in sorted(docs.items()):
        variants = doc.get("variants") or {}
        for env_name, env in (doc.get("environments") or {}).items():
            roles = ["default"] if doc.get("default") == tag else []
            weighted = {
                v
                for s in env.get("strategies") or []
                if env.get("enabled") and s.get("rollout", 100)
                for v, w in (s.get("variants") or {}).items()
                if w
            }
            roles += sorted(v for v in weighted if variants.get(v) == tag)
            if roles:
                found.append(f"{name}/{env_name} ({', '.join(roles)})")
    return found
