"""The quality gates' definitions (`gates.yaml`) and checks: pure functions over plain dicts."""

from __future__ import annotations

import hashlib
import json
import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from service.errors import RolloutError
from service.registry.versions import GATES_FILE

# metric -> +1 when higher is better, -1 when lower is better, 0 when neither (bounds only).
METRICS: dict[str, int] = {
    "auc": 1,
    "accuracy": 1,
    "log_loss": -1,
    "brier": -1,
    "offer_rate": 0,
    "churn_rate": 0,
}
SLICES = ("overall", "segment", "region")


class GateDefinitionError(RolloutError):
    """gates.yaml is invalid (unknown metric, bad bound); nothing is built or gated."""

    code = "invalid_gate_definition"


# ---------------------------------------------------------------- definitions


@dataclass(frozen=True)
class Case:
    name: str
    input: dict[str, Any]
    expect: dict[str, Any]


@dataclass(frozen=True)
class MetricBound:
    metric: str
    per: tuple[str, ...]
    min: float | None = None
    max: float | None = None


@dataclass(frozen=True)
class Tolerance:
    metric: str
    per: tuple[str, ...]
    tolerance: float


@dataclass(frozen=True)
class GateSpec:
    """One family's gates, parsed once from gates.yaml; `digest` names the definition."""

    cases: tuple[Case, ...]
    absolute: tuple[MetricBound, ...]
    against_default: tuple[Tolerance, ...]
    latency_p95_ms: float
    latency_requests: int
    size_mb: float
    digest: str


def load_gates(family_dir: Path) -> GateSpec:
    """Parse `family_dir/gates.yaml`; GateDefinitionError names the file and the field."""
    path = Path(family_dir) / GATES_FILE
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise GateDefinitionError(f"{path}: cannot read gates: {exc}") from exc
    where = str(path)
    metrics, budgets = doc.get("metrics") or {}, doc.get("budgets") or {}
    return GateSpec(
        cases=tuple(_case(where, i, c) for i, c in enumerate(doc.get("cases") or [])),
        absolute=tuple(_bound(where, i, b) for i, b in enumerate(metrics.get("absolute") or [])),
        against_default=tuple(
            _tolerance(where, i, t) for i, t in enumerate(metrics.get("against_default") or [])
        ),
        latency_p95_ms=_number(where, budgets, "latency_p95_ms", "budgets"),
        latency_requests=_requests(where, budgets),
        size_mb=_number(where, budgets, "size_mb", "budgets"),
        digest=hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest(),
    )


def _requests(path: str, budgets: Mapping[str, Any]) -> int:
    count = int(_number(path, budgets, "latency_requests", "budgets"))
    if count < 2:  # a percentile needs at least two measurements
        raise GateDefinitionError(f"{path}: budgets.latency_requests: at least 2")
    return count


def _case(path: str, index: int, raw: Any) -> Case:
    where = f"cases[{index}]"
    if not isinstance(raw, dict) or not isinstance(raw.get("input"), dict):
        raise GateDefinitionError(f"{path}: {where}: needs a name, an input mapping and expect")
    if not isinstance(raw.get("expect"), dict) or not raw.get("name"):
        raise GateDefinitionError(f"{path}: {where}: needs a name and an expect mapping")
    return Case(str(raw["name"]), dict(raw["input"]), dict(raw["expect"]))


def _metric(
    path: str, where: str, raw: dict[str, Any], directed: bool
) -> tuple[str, tuple[str, ...]]:
    metric = raw.get("metric")
    if metric not in METRICS:
        raise GateDefinitionError(
            f"{path}: {where}.metric: unknown metric '{metric}'; known: {', '.join(METRICS)}"
        )
    if directed and METRICS[metric] == 0:
        raise GateDefinitionError(
            f"{path}: {where}.metric: '{metric}' has no better direction; bound it in absolute"
        )
    per = raw.get("per", ["overall"])
    per = (per,) if isinstance(per, str) else tuple(per)
    unknown = [p for p in per if p not in SLICES]
    if unknown or not per:
        raise GateDefinitionError(f"{path}: {where}.per: {unknown}; use {', '.join(SLICES)}")
    return str(metric), per


def _bound(path: str, index: int, raw: Any) -> MetricBound:
    where = f"metrics.absolute[{index}]"
    metric, per = _metric(path, where, _mapping(path, where, raw), directed=False)
    low, high = raw.get("min"), raw.get("max")
    if low is None and high is None:
        raise GateDefinitionError(f"{path}: {where}: needs min or max")
    for name in ("min", "max"):
        if raw.get(name) is not None:
            _number(path, raw, name, where)
    return MetricBound(metric, per, low, high)


def _tolerance(path: str, index: int, raw: Any) -> Tolerance:
    where = f"metrics.against_default[{index}]"
    metric, per = _metric(path, where, _mapping(path, where, raw), directed=True)
    return Tolerance(metric, per, _number(path, raw, "tolerance", where))


def _mapping(path: str, where: str, raw: Any) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise GateDefinitionError(f"{path}: {where}: must be a mapping")
    return raw


def _number(path: str, doc: Mapping[str, Any], key: str, where: str) -> float:
    value = doc.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise GateDefinitionError(f"{path}: {where}.{key}: required, a number >= 0")
    return float(value)


@dataclass(frozen=True)
class GateResult:
    """One gate's outcome; `name` is what `rollout flags validate` reports when it failed."""

    name: str
    passed: bool
    detail: str


# ---------------------------------------------------------------- pure checks


def check_cases(cases: Iterable[Case], outputs: list[dict[str, Any]] | str) -> list[GateResult]:
    """Each case's output against its expectations (a value, or a `{min, max}` range).

    `outputs` is the bento's refusal when it rejected the inputs: every case fails with it.
    """
    if isinstance(outputs, str):
        return [GateResult(f"case:{case.name}", False, outputs) for case in cases]
    results = []
    for case, output in zip(cases, outputs, strict=True):
        problems = [
            problem
            for key, expected in case.expect.items()
            if (problem := _expectation_problem(key, expected, output.get(key)))
        ]
        results.append(GateResult(f"case:{case.name}", not problems, "; ".join(problems) or "ok"))
    return results


def _expectation_problem(key: str, expected: Any, actual: Any) -> str | None:
    if isinstance(expected, dict):
        low, high = expected.get("min"), expected.get("max")
        if not isinstance(actual, int | float):
            return f"{key} = {actual!r}, expected a number"
        if (low is not None and actual < low) or (high is not None and actual > high):
            return f"{key} = {actual:.4f}, expected within [{low}, {high}]"
        return None
    return None if actual == expected else f"{key} = {actual!r}, expected {expected!r}"


def metric_slices(metrics: Mapping[str, Any], per: str) -> dict[str, Mapping[str, Any]]:
    """`{"overall": {...}}` or `{"segment=smb": {...}, ...}` from the model's recorded metrics."""
    if per == "overall":
        return {"overall": metrics.get("overall", {})}
    return {f"{per}={k}": v for k, v in (metrics.get(f"by_{per}") or {}).items()}


def check_absolute(bounds: Iterable[MetricBound], metrics: Mapping[str, Any]) -> list[GateResult]:
    """Absolute bounds on the candidate's offline metrics, for every slice named."""
    results = []
    for bound in bounds:
        for per in bound.per:
            for where, values in metric_slices(metrics, per).items():
                results.append(_bounded(bound, where, values.get(bound.metric)))
    return results


def _bounded(bound: MetricBound, where: str, value: Any) -> GateResult:
    name = f"metric:{bound.metric}[{where}]" + (
        f">={bound.min}" if bound.min is not None else f"<={bound.max}"
    )
    if value is None:
        return GateResult(name, False, f"{bound.metric} was not recorded for {where}")
    ok = (bound.min is None or value >= bound.min) and (bound.max is None or value <= bound.max)
    return GateResult(name, ok, f"{bound.metric} = {value:.4f}")


def check_against_default(
    tolerances: Iterable[Tolerance],
    metrics: Mapping[str, Any],
    default_metrics: Mapping[str, Any],
    default_label: str,
) -> list[GateResult]:
    """No worse than the default's metric by more than the tolerance, slice by slice."""
    results = []
    for rule in tolerances:
        sign = METRICS[rule.metric]
        for per in rule.per:
            mine, theirs = metric_slices(metrics, per), metric_slices(default_metrics, per)
            for where, values in theirs.items():
                ours = mine.get(where, {}).get(rule.metric)
                base = values.get(rule.metric)
                name = f"vs-default:{rule.metric}[{where}]"
                if ours is None or base is None:
                    results.append(GateResult(name, base is None, "not recorded on both sides"))
                    continue
                worse_by = (base - ours) * sign
                detail = f"{ours:.4f} vs {base:.4f} for {default_label}, tolerance {rule.tolerance}"
                results.append(GateResult(name, worse_by <= rule.tolerance, detail))
    return results


def schema_problems(default: Mapping[str, Any], candidate: Mapping[str, Any]) -> list[str]:
    """Why `candidate`'s API schema (bento.yaml `schema`) breaks callers of `default`'s.

    Compatible means: every route the default has, the candidate has; the candidate accepts
    every input the default accepts (no new required field, no narrower type or enum); and it
    returns every output field the default returns, with the same type.
    """
    routes = {r["route"]: r for r in candidate.get("routes") or []}
    problems: list[str] = []
    for route in default.get("routes") or []:
        mine = routes.get(route["route"])
        if mine is None:
            problems.append(f"{route['route']}: route missing")
            continue
        problems += _accepts(
            route.get("input", {}), mine.get("input", {}), f"{route['route']} input"
        )
        problems += _provides(
            route.get("output", {}), mine.get("output", {}), f"{route['route']} output"
        )
    return problems


def _accepts(old: Mapping[str, Any], new: Mapping[str, Any], where: str) -> list[str]:
    if old.get("type") != new.get("type"):
        return [f"{where}: type {new.get('type')} instead of {old.get('type')}"]
    problems = [
        f"{where}: value {v!r} no longer accepted"
        for v in old.get("enum") or []
        if new.get("enum") is not None and v not in new["enum"]
    ]
    added = set(new.get("required") or []) - set(old.get("required") or [])
    problems += [f"{where}.{name}: newly required" for name in sorted(added)]
    new_props = new.get("properties") or {}
    for name, spec in (old.get("properties") or {}).items():
        if name not in new_props:
            if new.get("additionalProperties") is False:
                problems.append(f"{where}.{name}: no longer accepted")
            continue
        problems += _accepts(spec, new_props[name], f"{where}.{name}")
    if "items" in old:
        problems += _accepts(old["items"], new.get("items") or {}, f"{where}[]")
    return problems


def _provides(old: Mapping[str, Any], new: Mapping[str, Any], where: str) -> list[str]:
    if old.get("type") != new.get("type"):
        return [f"{where}: type {new.get('type')} instead of {old.get('type')}"]
    problems: list[str] = []
    new_props = new.get("properties") or {}
    for name, spec in (old.get("properties") or {}).items():
        if name not in new_props:
            problems.append(f"{where}.{name}: no longer returned")
            continue
        problems += _provides(spec, new_props[name], f"{where}.{name}")
    if "items" in old:
        problems += _provides(old["items"], new.get("items") or {}, f"{where}[]")
    return problems


def check_budgets(spec: GateSpec, latencies_ms: list[float], size_bytes: int) -> list[GateResult]:
    """p95 latency of single-record calls and bytes on disk against the family's budgets."""
    p95 = statistics.quantiles(latencies_ms, n=20, method="inclusive")[18]
    p50 = statistics.median(latencies_ms)
    size_mb = size_bytes / 1e6
    return [
        GateResult(
            "latency:p95",
            p95 <= spec.latency_p95_ms,
            f"p95 {p95:.1f} ms (p50 {p50:.1f} ms, {len(latencies_ms)} calls);"
            f" budget {spec.latency_p95_ms:g} ms",
        ),
        GateResult(
            "size", size_mb <= spec.size_mb, f"{size_mb:.2f} MB; budget {spec.size_mb:g} MB"
        ),
    ]
