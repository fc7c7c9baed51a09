"""Quality gates: what a bento must pass before a flag may route traffic to it.

Declared per family in `bentos/<family>/gates.yaml` and run on the built bento:
- fixed-input cases: known inputs sent to the served bento, outputs checked against values or
  ranges;
- metric thresholds on the offline metrics the model recorded: absolute bounds, and "no worse
  than the flag's current default by more than a tolerance", overall and per segment/region;
- latency and size budgets, measured on the bento served by a real `bentoml serve`;
- input/output schema compatibility with the current default of its flag(s).

The report is stored with the bento (`<bento>/rollout/gates.json`); `failed_gates` reads it for
`rollout flags validate/apply`. Check functions are pure, over plain dicts, so they are tested
without a server; `run_gates` is the one place that serves a bento.
"""

from __future__ import annotations

import hashlib
import json
import statistics
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests
import yaml

from service.config import Settings
from service.errors import RolloutError
from service.flags.definitions import load_flags
from service.registry.bento_process import BentoProcess
from service.registry.bentos import StoredBento, discard, stored_bento
from service.registry.versions import GATES_FILE, UnknownBento, declared_bentos

REPORT_FILE = "gates.json"
NOT_BUILT = "(not built)"
NOT_GATED = "(not gated)"
SERVE_TIMEOUT = 90.0
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
Progress = Callable[[str], None]


class GateDefinitionError(RolloutError):
    """gates.yaml is invalid (unknown metric, bad bound); nothing is built or gated."""

    code = "invalid_gate_definition"


class GateFailed(RolloutError):
    """A bento failed at least one gate; the message names each failed gate."""

    code = "gate_failed"


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


# ---------------------------------------------------------------- results and reports


@dataclass(frozen=True)
class GateResult:
    """One gate's outcome; `name` is what `rollout flags validate` reports when it failed."""

    name: str
    passed: bool
    detail: str


@dataclass(frozen=True)
class GateReport:
    tag: str
    passed: bool
    model_hash: str
    gates_digest: str
    against: dict[str, str]  # flag -> its default bento at gate time
    checked_at: str
    results: list[GateResult] = field(default_factory=list)

    @property
    def failed(self) -> list[GateResult]:
        return [r for r in self.results if not r.passed]

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> GateReport:
        raw = json.loads(text)
        results = [GateResult(**r) for r in raw.pop("results")]
        return cls(**raw, results=results)


def read_report(bento: StoredBento) -> GateReport | None:
    """The gate report stored with `bento`, or None when it was never gated."""
    path = bento.rollout_dir / REPORT_FILE
    try:
        return GateReport.from_json(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, TypeError, KeyError):
        return None


def gate_status(bento: StoredBento) -> str:
    """`passed`, `failed: <gate>`, or `not gated` (also when the report is for another build)."""
    report = read_report(bento)
    if report is None or report.model_hash != bento.labels.get("model_hash"):
        return "not gated"
    return "passed" if report.passed else f"failed: {report.failed[0].name}"


def failed_gates(tags: Iterable[str], settings: Settings) -> dict[str, str]:
    """For each of `tags` that may not serve traffic: the first failed gate's name.

    A bento missing from the store maps to NOT_BUILT, one without a current gate report to
    NOT_GATED; tags that passed their gates are left out (an empty dict means all clear).
    """
    failures: dict[str, str] = {}
    for tag in tags:
        try:
            status = gate_status(stored_bento(tag, settings))
        except UnknownBento:
            failures[tag] = NOT_BUILT
            continue
        if status == "not gated":
            failures[tag] = NOT_GATED
        elif status != "passed":
            failures[tag] = status.removeprefix("failed: ")
    return failures


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


# ---------------------------------------------------------------- running the gates


def flag_defaults(family: str, settings: Settings) -> dict[str, str]:
    """flag -> its default bento, for every flag in flags/ that serves a bento of `family`."""
    flag_set = load_flags(settings.flags_dir)
    return {
        name: flag.default_bento
        for name, flag in flag_set.flags.items()
        if any(tag.partition(":")[0] == family for tag in flag.bentos())
    }


def run_gates(bento: StoredBento, url: str, settings: Settings) -> GateReport:
    """Every gate of `bento`'s family, against the bento served at `url`."""
    spec = load_gates(_family_dir(bento, settings))
    defaults = flag_defaults(bento.family, settings)
    results = check_cases(spec.cases, _predict(url, [c.input for c in spec.cases]))
    metrics = bento.model_metadata.get("metrics", {})
    results += check_absolute(spec.absolute, metrics)
    for default_tag in sorted(set(defaults.values())):
        results += _against_default(spec, bento, default_tag, settings)
    results += check_budgets(spec, _latencies(url, spec), bento.size_bytes())
    return GateReport(
        tag=bento.tag,
        passed=all(r.passed for r in results),
        model_hash=bento.labels.get("model_hash", ""),
        gates_digest=spec.digest,
        against=defaults,
        checked_at=datetime.now(UTC).isoformat(timespec="seconds"),
        results=results,
    )


def _against_default(
    spec: GateSpec, bento: StoredBento, default_tag: str, settings: Settings
) -> list[GateResult]:
    if default_tag == bento.tag:
        return [GateResult("vs-default", True, f"{bento.tag} is the flag's default")]
    try:
        default = stored_bento(default_tag, settings)
    except UnknownBento:
        return [GateResult("vs-default", False, f"the default {default_tag} is not built")]
    problems = schema_problems(default.schema, bento.schema)
    detail = "; ".join(problems) or f"compatible with {default_tag}"
    results = [GateResult(f"schema:{default_tag}", not problems, detail)]
    default_metrics, basis = comparable_default_metrics(bento, default)
    metrics = bento.model_metadata.get("metrics", {})
    return results + check_against_default(
        spec.against_default, metrics, default_metrics, f"{default_tag} ({basis})"
    )


def comparable_default_metrics(
    bento: StoredBento, default: StoredBento
) -> tuple[dict[str, Any], str]:
    """The default's metrics to compare `bento` with, and on which rows they were measured.

    Preferably the default scored on `bento`'s own holdout at training time (recorded as a
    baseline, same rows for both: fair under drift); else the default's own holdout metrics.
    """
    for baseline in bento.model_metadata.get("baselines") or []:
        same_model = baseline.get("model_hash") == default.labels.get("model_hash")
        if baseline.get("bento") == default.tag and same_model:
            return dict(baseline.get("metrics") or {}), "same holdout"
    return dict(default.model_metadata.get("metrics") or {}), "its own holdout"


def _family_dir(bento: StoredBento, settings: Settings) -> Path:
    return settings.bentos_dir / bento.family


def _predict(url: str, inputs: list[dict[str, Any]]) -> list[dict[str, Any]] | str:
    """The served bento's outputs for the case inputs, or why it refused them."""
    if not inputs:
        return []
    response = requests.post(f"{url}/predict", json={"inputs": inputs}, timeout=30)
    if response.status_code != 200:
        return f"the bento answered {response.status_code}: {response.text[:300]}"
    return list(response.json()["predictions"])


def _latencies(url: str, spec: GateSpec) -> list[float]:
    """Milliseconds per single-record call, one connection, after warm-up calls."""
    record = spec.cases[0].input if spec.cases else {}
    body = {"inputs": [record]}
    times = []
    with requests.Session() as session:
        for i in range(spec.latency_requests + 5):
            started = time.perf_counter()
            # A refused call is timed too: the schema and case gates say why it was refused.
            session.post(f"{url}/predict", json=body, timeout=30)
            if i >= 5:  # the first calls pay for imports and connection set-up
                times.append((time.perf_counter() - started) * 1000)
    return times


@contextmanager
def served(tags: Iterable[str], settings: Settings) -> Iterator[dict[str, str]]:
    """`bentoml serve` for each tag, started together and waited for: tag -> URL."""
    with ExitStack() as stack:
        servers = {tag: stack.enter_context(BentoProcess(tag, settings=settings)) for tag in tags}
        for server in servers.values():
            server.wait_ready(SERVE_TIMEOUT)
        yield {tag: server.url for tag, server in servers.items()}


def store_report(bento: StoredBento, report: GateReport) -> Path:
    """Write the report into the bento's folder (it travels and is deleted with the bento)."""
    bento.rollout_dir.mkdir(parents=True, exist_ok=True)
    path = bento.rollout_dir / REPORT_FILE
    path.write_text(report.to_json(), encoding="utf-8")
    return path


def gate(
    tags: Iterable[str], settings: Settings, progress: Progress = lambda _: None
) -> list[GateReport]:
    """Run the gates of each bento on a real `bentoml serve`; store each report with it."""
    bentos = [stored_bento(tag, settings) for tag in tags]
    for bento in bentos:
        load_gates(_family_dir(bento, settings))  # a broken definition fails before serving
    reports = []
    with served([b.tag for b in bentos], settings) as urls:
        for bento in bentos:
            progress(f"{bento.tag}: gating on {urls[bento.tag]}")
            report = run_gates(bento, urls[bento.tag], settings)
            store_report(bento, report)
            reports.append(report)
    return reports


def gate_builds(tags: list[str], settings: Settings, progress: Progress = lambda _: None) -> None:
    """Gate freshly built bentos; a failing one is removed from the store.

    A bento whose stored report is current (same model, same gates, same defaults) is not
    served again: a no-op build stays fast. Raises GateFailed naming every failed gate.
    """
    pending = [t for t in tags if not _report_is_current(stored_bento(t, settings), settings)]
    # Served together: comparisons with a flag's default use its stored metrics and schema,
    # not its gate run, so no bento waits for another.
    failures = [r for r in (gate(pending, settings, progress) if pending else []) if not r.passed]
    for report in failures:
        _discard_failed(report, settings)
    if failures:
        raise GateFailed("\n".join(_failure_lines(failures)))


def _report_is_current(bento: StoredBento, settings: Settings) -> bool:
    report = read_report(bento)
    return (
        report is not None
        and report.passed
        and report.model_hash == bento.labels.get("model_hash")
        and report.gates_digest == load_gates(_family_dir(bento, settings)).digest
        and report.against == flag_defaults(bento.family, settings)
    )


def _discard_failed(report: GateReport, settings: Settings) -> None:
    """Keep the report where people can read it, then remove the bento and its model."""
    kept = settings.data_dir / "gate-reports" / f"{report.tag.replace(':', '-')}.json"
    kept.parent.mkdir(parents=True, exist_ok=True)
    kept.write_text(report.to_json(), encoding="utf-8")
    spec = declared_bentos(settings.bentos_dir).get(report.tag)
    if spec is not None:
        discard(spec, settings)


def _failure_lines(reports: Iterable[GateReport]) -> list[str]:
    return [
        f"{r.tag}: gate {result.name} failed: {result.detail}"
        for r in reports
        for result in r.failed
    ]


def raise_if_failed(reports: Iterable[GateReport]) -> None:
    """GateFailed naming every failed gate of `reports`, if any failed."""
    lines = _failure_lines(reports)
    if lines:
        raise GateFailed("\n".join(lines))
