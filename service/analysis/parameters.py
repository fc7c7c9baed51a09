"""The reports' parameters, declared once: name, type, default, help, allowed values.

Everything else is derived from these tables: the `rollout report ab|validation` options
(service/cli/reports.py), the keyword arguments `run_ab_report`/`run_validation_report` accept,
and the coercion the notebooks apply to what papermill passes them. The notebooks' own
`parameters` cells must list the same names with the same defaults (papermill reads that cell to
know which parameters exist); tests/unit/test_report_parameters.py holds them to it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from service.analysis.stats import SRM_THRESHOLD
from service.flags.model import DEFAULT_RAMP_STEPS
from service.store import PRIMARY_METRIC

Coerced = tuple[dict[str, Any], list[str]]


@dataclass(frozen=True)
class Parameter:
    """One report parameter. `option` is False for those the command line sets itself."""

    name: str
    kind: type
    default: Any
    help: str
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    required: bool = False
    option: bool = True

    def coerce(self, value: Any) -> Any:
        """`value` as this parameter's type; ValueError/TypeError when it is not one.

        Ranges and choices are the command line's and the analysis' to check: the analysis
        names a value it cannot use in the decision itself, which then holds.
        """
        return _coerce(value, self.kind)


def _steps_text(steps: Iterable[float]) -> str:
    return ",".join(f"{s:g}" for s in steps)


_WINDOW_START = Parameter("window_start", str, None, "ISO time; default: all events.")
_WINDOW_END = Parameter("window_end", str, None, "ISO time; default: now.")
# A reference, never the URL itself: the URL (and its password) would be written into every
# executed notebook. The runner puts the URL into this variable of the kernel's environment.
EVENT_STORE_ENV = "ROLLOUT_REPORT_EVENT_STORE_URL"
_EVENT_STORE = Parameter(
    "event_store_env",
    str,
    EVENT_STORE_ENV,
    "Name of the environment variable holding the event store's URL (set by rollout).",
    option=False,
)

# Links and words about the rollout, gathered by the runner (service.analysis.report_context).
_CONTEXT = Parameter(
    "context", str, "", "JSON: the flag, cards, previous report (set by rollout).", option=False
)

AB_PARAMETERS: tuple[Parameter, ...] = (
    Parameter("flag", str, "", "The flag under test.", required=True),
    Parameter("control", str, "control", "The control arm's variant."),
    Parameter(
        "treatment",
        str,
        "treatment",
        "The treatment arm's variant; A/B/n: several, comma-separated (e.g. b,c).",
    ),
    Parameter("metric", str, PRIMARY_METRIC, "Primary goal metric."),
    _WINDOW_START,
    _WINDOW_END,
    Parameter("alpha", float, 0.05, "Significance level.", minimum=0.0001, maximum=0.5),
    Parameter("expected_split", str, None, "e.g. 50:50 (default: equal)."),
    Parameter("current_step", float, None, "Treatment's current percent.", minimum=0, maximum=100),
    Parameter(
        "current_steps",
        str,
        "",
        "A/B/n: each treatment's current percent, e.g. b=10,c=10 (default: from the flag).",
    ),
    Parameter("ramp_steps", str, _steps_text(DEFAULT_RAMP_STEPS), "The ramp's steps, in %."),
    Parameter("goal_metrics", str, "", "Further goal metrics, comma-separated."),
    Parameter(
        "correction",
        str,
        "holm",
        "Multiple-comparison correction over the goal metrics.",
        choices=("holm", "benjamini-hochberg", "none"),
    ),
    Parameter("guardrails", bool, True, "Error rate, fallback rate and latency guardrails."),
    Parameter("sequential", bool, False, "Decide on the always-valid mSPRT p-value."),
    Parameter(
        "engine",
        str,
        "frequentist",
        "How the primary metric is decided (--sequential means sequential).",
        choices=("frequentist", "sequential", "bayesian", "group-sequential"),
    ),
    Parameter("looks", int, 5, "Group-sequential: planned number of looks.", minimum=1),
    Parameter(
        "look",
        int,
        None,
        "Group-sequential: this look, 1..looks (default: from the data).",
        minimum=1,
    ),
    Parameter(
        "planned_users",
        int,
        None,
        "Group-sequential: users in all arms at the final look (gives the information share).",
        minimum=1,
    ),
    Parameter("prior_mean", float, None, "Bayesian: prior mean of the relative lift."),
    Parameter(
        "prior_variance", float, None, "Bayesian: prior variance (default: flat).", minimum=0
    ),
    Parameter(
        "srm_threshold",
        float,
        SRM_THRESHOLD,
        "Sample ratio mismatch alarm below this p-value.",
        minimum=1e-9,
        maximum=0.5,
    ),
    Parameter(
        "dimensions",
        str,
        "",
        "Context fields to drill down by besides segment and region, comma-separated.",
    ),
    Parameter("buckets", int, 20, "Points on the lift-over-time plot.", minimum=2, option=False),
    _EVENT_STORE,
    _CONTEXT,
)

VALIDATION_PARAMETERS: tuple[Parameter, ...] = (
    Parameter("flag", str, "", "The flag the bento serves.", required=True),
    Parameter("bento", str, "", "The version under validation, e.g. churn:v2.", required=True),
    Parameter("previous", str, None, "The version it replaced, e.g. churn:v1."),
    Parameter("metric", str, PRIMARY_METRIC, "Outcome; label = 1 - it."),
    _WINDOW_START,
    _WINDOW_END,
    Parameter("max_rows", int, 200_000, "Most recent live rows read.", minimum=1),
    Parameter(
        "action_threshold",
        float,
        0.5,
        "Scores at or above it got the product's action (the churn offer), which changes "
        "their outcome: calibration is judged on requests scored below it (2: on every request).",
        minimum=0.0,
    ),
    _EVENT_STORE,
    Parameter("data_dir", str, None, "The caller's data folder (set by rollout).", option=False),
    _CONTEXT,
)


def coerce_parameters(raw: Mapping[str, Any], spec: Iterable[Parameter]) -> Coerced:
    """Parameters converted to their declared types; a value that does not convert is replaced
    by the default and named in the returned problems."""
    values, problems = {}, []
    for parameter in spec:
        value = raw.get(parameter.name, parameter.default)
        try:
            values[parameter.name] = parameter.coerce(value)
        except (TypeError, ValueError):
            values[parameter.name] = parameter.default
            problems.append(
                f"parameter {parameter.name}={value!r} is not a valid "
                f"{parameter.kind.__name__}; used {parameter.default!r} instead"
            )
    return values, problems


def with_defaults(values: Mapping[str, Any], spec: Iterable[Parameter]) -> dict[str, Any]:
    """Every declared parameter, from `values` or its default; TypeError names an unknown one."""
    declared = {p.name: p for p in spec}
    unknown = sorted(set(values) - set(declared))
    if unknown:
        raise TypeError(f"unknown report parameter(s): {', '.join(unknown)}")
    return {name: values.get(name, p.default) for name, p in declared.items()}


def _coerce(value: Any, kind: type) -> Any:
    if value is None or (isinstance(value, str) and not value.strip() and kind is not str):
        return None
    if kind is bool:
        if isinstance(value, bool):
            return value
        if str(value).strip().lower() in ("true", "1", "yes", "on", "false", "0", "no", "off"):
            return str(value).strip().lower() in ("true", "1", "yes", "on")
        raise ValueError(value)
    if kind in (int, float) and isinstance(value, bool):
        raise TypeError(value)
    if kind is int and float(value) != int(float(value)):
        raise ValueError(value)
    return kind(float(value)) if kind is int else kind(value)
