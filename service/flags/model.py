"""What a flag is, as typed definitions: flags, environments, strategies, constraints, segments,
context fields and the ramp schedule, with the limits their values must keep.

`flags.definitions` reads flags/ YAML into these (`flags.flag_reader` checks each field); Unleash's
wire format lives in `flags.client_features`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from service.store import PRIMARY_METRIC

CONTEXT_FILE = "context.yaml"
ENVIRONMENTS = ("development", "production")
BUILTIN_CONTEXT_FIELDS = (
    "userId",
    "sessionId",
    "remoteAddress",
    "environment",
    "appName",
    "currentTime",
)
STICKINESS = ("default", "userId", "sessionId", "random")
MULTI_VALUE_OPERATORS = ("IN", "NOT_IN", "STR_CONTAINS", "STR_STARTS_WITH", "STR_ENDS_WITH")
SINGLE_VALUE_OPERATORS = (
    "NUM_EQ",
    "NUM_GT",
    "NUM_GTE",
    "NUM_LT",
    "NUM_LTE",
    "DATE_AFTER",
    "DATE_BEFORE",
    "SEMVER_EQ",
    "SEMVER_GT",
    "SEMVER_LT",
)
BENTO_TAG = re.compile(r"^[a-z0-9][a-z0-9_.-]*:[A-Za-z0-9][A-Za-z0-9_.-]*$")
# The ramp every schedule uses unless its flag file names its own steps (percent of users).
DEFAULT_RAMP_STEPS: tuple[float, ...] = (5, 25, 50, 100)
FLAG_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


@dataclass(frozen=True)
class ContextField:
    name: str
    description: str = ""
    legal_values: tuple[str, ...] = ()


@dataclass(frozen=True)
class Constraint:
    field: str
    operator: str
    values: tuple[str, ...]
    inverted: bool = False
    case_insensitive: bool = False


@dataclass(frozen=True)
class Strategy:
    name: str
    rollout: int = 100
    stickiness: str = "userId"
    constraints: tuple[Constraint, ...] = ()
    variants: dict[str, float] = field(default_factory=dict)  # variant name -> percent
    segments: tuple[str, ...] = ()  # names of segments declared in context.yaml


@dataclass(frozen=True)
class Segment:
    """A named, reusable set of constraints (an Unleash segment) that strategies refer to."""

    name: str
    description: str = ""
    constraints: tuple[Constraint, ...] = ()


@dataclass(frozen=True)
class Environment:
    name: str
    enabled: bool
    strategies: tuple[Strategy, ...] = ()


# Beyond these a value is a typo, and a huge integer would overflow the event store's BIGINT
# comparisons: a year at one step, a billion users per arm.
MAX_BAKE_SECONDS = 365 * 24 * 3600
MAX_MIN_USERS = 1_000_000_000


@dataclass(frozen=True)
class Guardrails:
    """Live limits the guard holds the canary to, against control (None: not checked)."""

    error_rate: float | None = 0.02  # canary 5xx rate may exceed control's by at most this
    fallback_rate: float | None = 0.02  # same for requests the default bento had to serve
    latency_p99_ratio: float | None = 2.0  # canary p99 at most this multiple of control's
    prediction_psi: float | None = 0.5  # PSI of canary vs control scores (0.25 = major shift)
    alpha: float = 0.01  # a rate breach must also be significant (one-sided z-test)
    min_requests: int = 50  # per arm, before any guardrail can breach


# Each guardrail's legal values: (low, high, in words, may be null to switch it off).
GUARDRAIL_RANGES: dict[str, tuple[float, float, str, bool]] = {
    "error_rate": (0.0, 1.0, "a rate difference in [0, 1]", True),
    "fallback_rate": (0.0, 1.0, "a rate difference in [0, 1]", True),
    "latency_p99_ratio": (0.0, math.inf, "a ratio >= 0", True),
    "prediction_psi": (0.0, math.inf, "a PSI >= 0", True),
    "alpha": (1e-9, 0.5, "a significance level in (0, 0.5]", False),
    "min_requests": (1, MAX_MIN_USERS, "a whole number from 1 to 1,000,000,000", False),
}


# The A/B report's engines a ramp section may choose (service.analysis.ab_evidence.ENGINES).
RAMP_ENGINES = ("frequentist", "sequential", "bayesian")


@dataclass(frozen=True)
class RampSchedule:
    """The `ramp:` section: which strategy carries the canary, and the steps it climbs.

    A step is the share of the environment's users served the treatment variant: the
    strategy's rollout times the treatment's weight in it (a {canary: 100} strategy at
    rollout 5 is the 5% step; a 50/50 A/B at rollout 80 is the 40% step).
    """

    environment: str
    strategy: str
    control: str  # a variant name, or "default" for users the default bento serves
    treatment: str
    steps: tuple[float, ...] = DEFAULT_RAMP_STEPS
    bake_seconds: float = 600.0  # minimum time at a step before it may advance
    min_users: int = 200  # per arm, at a step, before it may advance
    approval: bool = False  # promotions wait for `rollout decide approve`
    metric: str = PRIMARY_METRIC
    guardrails: Guardrails = field(default_factory=Guardrails)
    engine: str = ""  # the A/B report's default engine for this flag ("": the report's own)
    owner: str = ""  # who answers for the rollout (shown on its reports)
    hypothesis: str = ""  # what the treatment is expected to change, and why


@dataclass(frozen=True)
class FlagDefinition:
    """One model flag: which bento each variant serves, and who gets which variant."""

    name: str
    file: str
    # The explicit default; None: the family's stable version (declared in the registry) serves.
    default_bento: str | None
    variants: dict[str, str]  # variant name -> bento tag
    environments: dict[str, Environment]
    description: str = ""
    # Bentos that receive a mirrored copy of every request; their answers are only logged.
    shadows: tuple[str, ...] = ()
    ramp: RampSchedule | None = None  # how `rollout decide` / `rollout guard` ramp the canary

    def bentos(self) -> set[str]:
        explicit = {self.default_bento} if self.default_bento else set()
        return {*explicit, *self.variants.values(), *self.shadows}

    @property
    def family(self) -> str | None:
        """The model family its bentos belong to (`churn` for `churn:v2`); None if none named."""
        tags = [self.default_bento, *self.variants.values()]
        return next((t.partition(":")[0] for t in tags if t), None)

    def rollout_percent(self, environment: str, variant: str) -> float | None:
        """Percent of the users a strategy admits that it sends to `variant` (its ramp step).

        The first strategy serving the variant counts; None when no strategy serves it.
        """
        env = self.environments.get(environment)
        for strategy in env.strategies if env else ():
            if variant in strategy.variants:
                return strategy.rollout * strategy.variants[variant] / 100
        return None


@dataclass
class FlagSet:
    """Every flag in flags/, with the context fields they may target."""

    flags: dict[str, FlagDefinition]
    context_fields: dict[str, ContextField]
    segments: dict[str, Segment] = field(default_factory=dict)
