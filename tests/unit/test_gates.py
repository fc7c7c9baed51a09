"""Quality gates without a server: definitions, the pure checks, and reading stored reports.

The served part (cases, latency, size on a real `bentoml serve`) is in
tests/integration/test_gates_served.py.
"""

from __future__ import annotations

import copy
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from integration.bento_fixtures import CHURN_SCHEMA, churn_metrics

from service.config import Settings
from service.registry import gate_checks, gates
from service.registry.bentos import stored_bento
from service.registry.gate_checks import Case, GateResult, MetricBound, Tolerance
from service.registry.gates import GateReport

REPO = Path(__file__).resolve().parents[2]


def family_with_gates(tmp_path: Path, text: str) -> Path:
    family = tmp_path / "churn"
    family.mkdir()
    (family / "gates.yaml").write_text(text)
    return family


# ---------------------------------------------------------------- definitions


def test_the_churn_gates_parse() -> None:
    spec = gate_checks.load_gates(REPO / "bentos" / "churn")
    assert [c.name for c in spec.cases] == [
        "loyal-enterprise-low-risk",
        "frustrated-idle-consumer-higher-risk",
    ]
    assert {b.metric for b in spec.absolute} == {"auc", "brier"}
    assert spec.latency_requests >= 2 and spec.size_mb > 0


@pytest.mark.parametrize(
    ("metrics", "message"),
    [
        pytest.param(
            "absolute: [{metric: recall, min: 0.5}]", "unknown metric 'recall'", id="unknown"
        ),
        pytest.param(
            "against_default: [{metric: offer_rate, tolerance: 0.1}]",
            "'offer_rate' has no better direction",
            id="directionless-relative",
        ),
        pytest.param("absolute: [{metric: auc, per: country, min: 0.5}]", "per", id="bad-slice"),
        pytest.param("absolute: [{metric: auc}]", "needs min or max", id="no-bound"),
    ],
)
def test_a_bad_gate_definition_is_refused_with_file_and_field(
    tmp_path: Path, metrics: str, message: str
) -> None:
    budgets = "budgets: {latency_p95_ms: 100, latency_requests: 10, size_mb: 5}"
    family = family_with_gates(tmp_path, f"metrics:\n  {metrics}\n{budgets}\n")
    with pytest.raises(gate_checks.GateDefinitionError) as raised:
        gate_checks.load_gates(family)
    assert str(family / "gates.yaml") in raised.value.message
    assert message in raised.value.message


def test_missing_budgets_are_refused(tmp_path: Path) -> None:
    family = family_with_gates(tmp_path, "cases: []\n")
    with pytest.raises(gate_checks.GateDefinitionError, match=r"budgets.latency_p95_ms: required"):
        gate_checks.load_gates(family)


# ---------------------------------------------------------------- pure checks


def test_cases_check_values_and_ranges() -> None:
    cases = [
        Case("low", {}, {"churn_probability": {"max": 0.2}, "offer": False}),
        Case("high", {}, {"churn_probability": {"min": 0.6}}),
    ]
    outputs = [{"churn_probability": 0.1, "offer": False}, {"churn_probability": 0.5}]
    results = gate_checks.check_cases(cases, outputs)
    assert [(r.name, r.passed) for r in results] == [("case:low", True), ("case:high", False)]
    assert "0.5000, expected within [0.6, None]" in results[1].detail


def test_a_refused_request_fails_every_case() -> None:
    results = gate_checks.check_cases(
        [Case("a", {}, {}), Case("b", {}, {})], "the bento answered 400"
    )
    assert [r.passed for r in results] == [False, False]


def test_absolute_bounds_apply_to_every_slice_named() -> None:
    metrics = churn_metrics(0.7)
    metrics["by_region"]["apac"] = {**metrics["by_region"]["apac"], "auc": 0.55}
    results = gate_checks.check_absolute(
        [MetricBound("auc", ("overall", "region"), min=0.6)], metrics
    )
    failed = [r.name for r in results if not r.passed]
    assert failed == ["metric:auc[region=apac]>=0.6"]
    assert len(results) == 4


@pytest.mark.parametrize(
    ("candidate_auc", "candidate_brier", "failed"),
    [
        pytest.param(0.69, 0.15, [], id="within-tolerance"),
        pytest.param(0.67, 0.15, ["vs-default:auc[overall]"], id="auc-worse"),
        pytest.param(0.75, 0.17, ["vs-default:brier[overall]"], id="brier-worse-lower-is-better"),
    ],
)
def test_no_worse_than_the_default_by_more_than_the_tolerance(
    candidate_auc: float, candidate_brier: float, failed: list[str]
) -> None:
    rules = [Tolerance("auc", ("overall",), 0.02), Tolerance("brier", ("overall",), 0.01)]
    results = gate_checks.check_against_default(
        rules, churn_metrics(candidate_auc, candidate_brier), churn_metrics(0.7, 0.15), "churn:v1"
    )
    assert [r.name for r in results if not r.passed] == failed


def test_per_segment_comparison_names_the_segment() -> None:
    candidate = churn_metrics(0.75)
    candidate["by_segment"]["smb"] = {**candidate["by_segment"]["smb"], "auc": 0.6}
    results = gate_checks.check_against_default(
        [Tolerance("auc", ("segment",), 0.02)], candidate, churn_metrics(0.7), "churn:v1"
    )
    assert [r.name for r in results if not r.passed] == ["vs-default:auc[segment=smb]"]


def _schema_with(change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    schema = copy.deepcopy(CHURN_SCHEMA)
    change(schema["routes"][0])
    return schema


def _record(route: dict[str, Any]) -> dict[str, Any]:
    return route["input"]["properties"]["inputs"]["items"]


def _prediction(route: dict[str, Any]) -> dict[str, Any]:
    return route["output"]["properties"]["predictions"]["items"]


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        pytest.param(
            lambda r: _record(r)["required"].append("plan"), "newly required", id="new-required"
        ),
        pytest.param(
            lambda r: _record(r)["properties"]["region"].update(enum=["eu", "us"]),
            "value 'apac' no longer accepted",
            id="narrower-enum",
        ),
        pytest.param(
            lambda r: _record(r)["properties"]["tenure_months"].update(type="string"),
            "type string instead of integer",
            id="input-type",
        ),
        pytest.param(
            lambda r: _prediction(r)["properties"].pop("offer"), "no longer returned", id="output"
        ),
        pytest.param(lambda r: r.update(route="/score"), "/predict: route missing", id="route"),
    ],
)
def test_schema_changes_that_break_callers_are_named(
    change: Callable[[dict[str, Any]], None], problem: str
) -> None:
    problems = gate_checks.schema_problems(CHURN_SCHEMA, _schema_with(change))
    assert len(problems) == 1 and problem in problems[0]


def test_compatible_schema_changes_pass() -> None:
    def widen(route: dict[str, Any]) -> None:
        _record(route)["properties"]["region"]["enum"].append("latam")
        _record(route)["properties"]["plan"] = {"type": "string"}  # optional: not required
        _prediction(route)["properties"]["reason"] = {"type": "string"}

    assert gate_checks.schema_problems(CHURN_SCHEMA, CHURN_SCHEMA) == []
    assert gate_checks.schema_problems(CHURN_SCHEMA, _schema_with(widen)) == []


def test_budgets() -> None:
    spec = gate_checks.load_gates(REPO / "bentos" / "churn")
    ok = gate_checks.check_budgets(spec, [5.0] * 20, 1_000_000)
    assert [r.passed for r in ok] == [True, True]
    slow = gate_checks.check_budgets(spec, [5.0] * 10 + [spec.latency_p95_ms + 1] * 10, 10**9)
    assert [(r.name, r.passed) for r in slow] == [("latency:p95", False), ("size", False)]


# ---------------------------------------------------------------- stored reports


def _report(tag: str, passed: bool, model_hash: str) -> GateReport:
    results = [GateResult("metric:auc[overall]>=0.62", passed, "auc = 0.6")]
    return GateReport(
        tag, passed, model_hash, "digest", {"churn-model": "churn:v1"}, "now", results
    )


def test_failed_gates_tells_passed_failed_ungated_and_unbuilt_apart(
    settings: Settings, store_files: Callable[..., Path]
) -> None:
    for tag in ("churn:v1", "churn:v2", "churn:v3", "churn:v4"):
        store_files(tag)
    gates.store_report(stored_bento("churn:v1", settings), _report("churn:v1", True, "hash-v1"))
    gates.store_report(stored_bento("churn:v2", settings), _report("churn:v2", False, "hash-v2"))
    # A report for another build of the same tag does not count.
    gates.store_report(stored_bento("churn:v4", settings), _report("churn:v4", True, "other"))
    tags = ["churn:v1", "churn:v2", "churn:v3", "churn:v4", "churn:v9"]
    assert gates.failed_gates(tags, settings) == {
        "churn:v2": "metric:auc[overall]>=0.62",
        "churn:v3": gates.NOT_GATED,
        "churn:v4": gates.NOT_GATED,
        "churn:v9": gates.NOT_BUILT,
    }


def test_the_report_round_trips_through_the_bento_folder(
    settings: Settings, store_files: Callable[..., Path]
) -> None:
    folder = store_files("churn:v1")
    report = _report("churn:v1", False, "hash-v1")
    path = gates.store_report(stored_bento("churn:v1", settings), report)
    assert path == folder / "rollout" / "gates.json"
    assert gates.read_report(stored_bento("churn:v1", settings)) == report
    assert gates.gate_status(stored_bento("churn:v1", settings)) == (
        "failed: metric:auc[overall]>=0.62"
    )


def test_flag_defaults_come_from_flags(settings: Settings) -> None:
    assert gates.flag_defaults("churn", settings) == {"churn-model": "churn:v1"}
    assert gates.flag_defaults("fraud", settings) == {}


def test_building_with_a_broken_gate_definition_stores_nothing(
    settings: Settings, tmp_path: Path
) -> None:
    from service.registry.build import build_all

    bentos = tmp_path / "bentos"
    shutil.copytree(REPO / "bentos" / "churn", bentos / "churn")
    gates_file = bentos / "churn" / "gates.yaml"
    gates_file.write_text(gates_file.read_text().replace("metric: brier, max", "metric: f1, max"))
    broken = Settings.load({**_overrides(settings), "bentos_dir": bentos})
    with pytest.raises(gate_checks.GateDefinitionError, match="unknown metric 'f1'"):
        build_all(broken)
    assert not broken.bentoml_home.exists()
    assert not (broken.data_dir / "snapshots").exists()


def _overrides(settings: Settings) -> dict[str, Any]:
    return {"data_dir": settings.data_dir, "unleash_url": None, "database_url": None}


def test_the_default_is_compared_on_the_same_holdout_when_training_recorded_it(
    settings: Settings, store_files: Callable[..., Path]
) -> None:
    store_files("churn:v1", churn_metrics(0.70))
    same_rows = churn_metrics(0.60)  # v1 scored on v2's (drifted) holdout does worse
    baseline = {"bento": "churn:v1", "model_hash": "hash-v1", "metrics": same_rows}
    store_files("churn:v2", churn_metrics(0.65), baselines=[baseline])
    v1, v2 = stored_bento("churn:v1", settings), stored_bento("churn:v2", settings)
    assert gates.comparable_default_metrics(v2, v1) == (same_rows, "same holdout")
    stale = {**baseline, "model_hash": "an older build of v1"}
    store_files("churn:v3", churn_metrics(0.65), baselines=[stale])
    v3 = stored_bento("churn:v3", settings)
    assert gates.comparable_default_metrics(v3, v1) == (churn_metrics(0.70), "its own holdout")
