"""Metrics: every series the Grafana dashboard queries is one the selector exports."""

from __future__ import annotations

import json
import re

import pytest

from service.config import Settings
from service.serving.metrics import SelectorMetrics, exposition

DASHBOARD = Settings.load().root / "service" / "serving" / "dashboards" / "grafana-selector.json"
# Series suffixes Prometheus derives from a metric family (counters and histograms).
SUFFIXES = ("_total", "_bucket", "_count", "_sum")


def family_names() -> set[str]:
    return {metric.name for metric in SelectorMetrics.create().registry.collect()}


def dashboard_series() -> set[str]:
    exprs = [
        target["expr"]
        for panel in json.loads(DASHBOARD.read_text())["panels"]
        for target in panel["targets"]
    ]
    return {name for expr in exprs for name in re.findall(r"\b(selector_\w+)", expr)}


@pytest.mark.parametrize("series", sorted(dashboard_series()))
def test_the_dashboard_queries_only_exported_metrics(series: str) -> None:
    family = next((series.removesuffix(s) for s in SUFFIXES if series.endswith(s)), series)
    assert family in family_names(), f"{series}: no such metric in service/serving/metrics.py"


def test_each_app_has_its_own_registry_outside_gunicorn(monkeypatch) -> None:
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    first, second = SelectorMetrics.create(), SelectorMetrics.create()
    first.requests.labels("f", "v", "b", "200").inc()
    body, content_type = exposition(second)
    assert b"selector_requests_total{" not in body
    assert content_type.startswith("text/plain")
