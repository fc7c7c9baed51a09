"""Quality gates: what a bento must pass before a flag may route traffic to it.

Declared per family in `bentos/<family>/gates.yaml` and run on the built bento:
- fixed-input cases: known inputs sent to the served bento, outputs checked against values or
  ranges;
- metric thresholds on the offline metrics the model recorded: absolute bounds, and "no worse
  than the flag's current default by more than a tolerance", overall and per segment/region;
- latency and size budgets, measured on the bento served by a real `bentoml serve`;
- input/output schema compatibility with the current default of its flag(s);
- the package lock: locked, to the framework versions the model was trained with
  (`registry.lock`), so `bentoml containerize` rebuilds the same serving environment.

The report is stored with the bento (`<bento>/rollout/gates.json`); `failed_gates` reads it for
`rollout flags validate/apply`. What a gate is and how it is checked lives in
`registry.gate_checks` (pure, tested without a server); `run_gates` is the one place that
serves a bento.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests

from service.config import Settings
from service.errors import RolloutError
from service.flags.definitions import load_flags
from service.registry.bento_process import BentoProcess
from service.registry.bentos import StoredBento, discard, stored_bento
from service.registry.gate_checks import (
    GateResult,
    GateSpec,
    check_absolute,
    check_against_default,
    check_budgets,
    check_cases,
    load_gates,
    schema_problems,
)
from service.registry.lock import lock_problems
from service.registry.stable import stable_version
from service.registry.versions import UnknownBento, declared_bentos

REPORT_FILE = "gates.json"
NOT_BUILT = "(not built)"
NOT_GATED = "(not gated)"
SERVE_TIMEOUT = 90.0
Progress = Callable[[str], None]


class GateFailed(RolloutError):
    """A bento failed at least one gate; the message names each failed gate."""

    code = "gate_failed"


# ---------------------------------------------------------------- results and reports


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


# ---------------------------------------------------------------- running the gates


def flag_defaults(family: str, settings: Settings) -> dict[str, str]:
    """flag -> its default bento, for every flag in flags/ that serves a bento of `family`.

    A flag without an explicit `default` serves the family's stable version.
    """
    flag_set = load_flags(settings.flags_dir)
    stable = stable_version(settings.bentos_dir, family)
    defaults = {
        name: flag.default_bento or stable
        for name, flag in flag_set.flags.items()
        if any(tag.partition(":")[0] == family for tag in flag.bentos())
    }
    return {name: tag for name, tag in defaults.items() if tag}


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
    results.append(check_lock(bento))
    return GateReport(
        tag=bento.tag,
        passed=all(r.passed for r in results),
        model_hash=bento.labels.get("model_hash", ""),
        gates_digest=spec.digest,
        against=defaults,
        checked_at=datetime.now(UTC).isoformat(timespec="seconds"),
        results=results,
    )


def check_lock(bento: StoredBento) -> GateResult:
    """The bento's packages are locked, to the framework versions its model was trained with."""
    problems = lock_problems(bento)
    return GateResult(
        "lock", not problems, "; ".join(problems) or "locked to the training versions"
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
