"""What a deployment must run: every bento version some flag can route to, and the flags to guard.

Read from flags/ and the registry (the bento store with its gate reports). A flag naming a bento
that is not in the registry, was never gated, or failed a gate is refused with the file, flag
and field that name it: a manifest must never send traffic to a version nobody has checked.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from service.config import Settings
from service.errors import FlagDefinitionError, FlagProblem
from service.flags.definitions import load_flags
from service.flags.model import FlagDefinition
from service.registry.gates import NOT_BUILT, NOT_GATED, failed_gates
from service.registry.stable import stable_versions
from service.registry.versions import declared_bentos

BENTO_PORT = 3000  # what `bentoml serve` and `bentoml containerize`d images listen on


@dataclass(frozen=True)
class BentoTarget:
    """One bento version as Kubernetes objects: a Deployment and a Service of its own."""

    tag: str  # churn:v2

    @property
    def family(self) -> str:
        return self.tag.partition(":")[0]

    @property
    def version(self) -> str:
        return self.tag.partition(":")[2]

    @property
    def name(self) -> str:
        """The Deployment and Service name, a DNS label: `bento-churn-v2`."""
        return "bento-" + re.sub(r"[^a-z0-9-]+", "-", self.tag.lower().replace(":", "-"))

    @property
    def url(self) -> str:
        """Where the selector reaches it: the Service's DNS name in the pods' own namespace."""
        return f"http://{self.name}:{BENTO_PORT}"


@dataclass(frozen=True)
class Targets:
    bentos: tuple[BentoTarget, ...]
    guarded_flags: tuple[str, ...]  # flags with a `ramp:` section: one guard each

    @property
    def catalog(self) -> str:
        """ROLLOUT_BENTO_URLS for the selector: every routable tag at its Service."""
        return ",".join(f"{b.tag}={b.url}" for b in self.bentos)


def deployment_targets(settings: Settings) -> Targets:
    """The bentos the flags in `settings.flags_dir` route to; FlagDefinitionError if any may not.

    Every field naming a bento is checked (default, variants.<name>, shadows[i]); all problems
    are reported at once.
    """
    declared = declared_bentos(settings.bentos_dir)
    flag_set = load_flags(settings.flags_dir, known_bentos=declared)
    stable = stable_versions(settings.bentos_dir)
    tags = sorted(
        {tag for flag in flag_set.flags.values() for _field, tag in bento_fields(flag, stable)}
    )
    failures = failed_gates(tags, settings)
    problems = [
        FlagProblem(flag.file, flag.name, field, _refusal(tag, failures[tag]))
        for flag in flag_set.flags.values()
        for field, tag in bento_fields(flag, stable)
        if tag in failures
    ]
    if problems:
        raise FlagDefinitionError(problems)
    guarded = tuple(sorted(f.name for f in flag_set.flags.values() if f.ramp is not None))
    return Targets(tuple(BentoTarget(tag) for tag in tags), guarded)


def bento_fields(
    flag: FlagDefinition, stable: dict[str, str] | None = None
) -> list[tuple[str, str]]:
    """(field, bento tag) for every place the flag names a bento; without a default, the
    family's stable version (in `stable`, family -> tag) serves, and so must be deployed."""
    default = flag.default_bento or (stable or {}).get(flag.family or "")
    fields = [("default", default)] if default else []
    fields += [(f"variants.{name}", tag) for name, tag in flag.variants.items()]
    fields += [(f"shadows[{i}]", tag) for i, tag in enumerate(flag.shadows)]
    return fields


def _refusal(tag: str, gate: str) -> str:
    if gate == NOT_BUILT:
        return f"bento {tag} is not in the registry: build it (rollout models build)"
    if gate == NOT_GATED:
        return f"bento {tag} was never gated: rollout models gate {tag}"
    return f"bento {tag} failed its quality gate '{gate}' and may not be deployed"
