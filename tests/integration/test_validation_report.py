"""The post-rollout validation notebook end to end: real bentos built into a BentoML store (the
model card's offline metrics and training reference), papermill, the kernel, nbconvert."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import nbformat
import pytest
import scrapbook as sb

from service.analysis.decision import numbers
from service.analysis.reports import KERNEL_NAME, run_validation_report
from service.config import Settings

pytestmark = pytest.mark.integration


def _unit_module():
    # tests/ is not a package: reuse the unit test's store populator by path.
    path = Path(__file__).parents[1] / "unit" / "test_validation.py"
    spec = importlib.util.spec_from_file_location("validation_unit", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


UNIT = _unit_module()


@pytest.fixture(scope="module")
def settings(built_bentos, tmp_path_factory) -> Settings:
    root = tmp_path_factory.mktemp("validation")
    return Settings.load(
        {"data_dir": built_bentos.settings.data_dir, "reports_dir": root / "reports"}
    )


def run(settings, url, **kwargs):
    return run_validation_report(
        settings,
        flag=UNIT.FLAG,
        bento="churn:v2",
        event_store_url=url,
        progress=lambda _m: None,
        **kwargs,
    )


def test_validation_report_renders_and_records_every_number(settings, tmp_path):
    from service.store.events import create_engine

    url = f"sqlite:///{tmp_path / 'events.db'}"
    engine = create_engine(url)
    UNIT.populate(engine, users=3_000, drift=1.5)
    engine.dispose()
    result = run(settings, url, previous="churn:v1")
    decision = result.decision
    assert decision["kind"] == "validation"
    # tenure tripled: the drift is found against the real training reference of churn:v2
    assert decision["recommendation"] == "investigate", decision["reasons"]
    assert "drift in tenure_months" in " ".join(decision["reasons"])
    checks = {c["name"]: c for c in decision["checks"]}
    assert checks["auc"]["details"]["offline"] is not None  # from the model's metadata
    assert checks["shadow_churn:v3"]["details"]["failed"] == 300
    assert any("previous version churn:v1" in m for m in decision["missing"])
    page = result.html_path.read_text(encoding="utf-8")
    headline = f"<strong>{decision['recommendation'].upper()}</strong>"
    assert headline in page and page.index(headline) < page.index(">Performance on labelled")
    for heading in ("Calibration", "Drift against the training data", "Shadow agreement"):
        assert heading in page
    assert "import " not in page.split("<body", 1)[1].split("<script", 1)[0]
    assert nbformat.read(result.notebook_path, as_version=4).metadata.kernelspec.name == (
        KERNEL_NAME
    )
    scraps = sb.read_notebook(str(result.notebook_path)).scraps
    document = json.loads((result.output_dir / "decision.json").read_text())
    assert scraps["decision"].data == document
    for name, value in numbers(document).items():
        assert scraps[name].data == value, name
