"""`rollout report ...` exit codes, through the real command and notebooks."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from service.cli import main
from service.store.events import create_engine, exposures, outcomes

pytestmark = pytest.mark.integration


def invoke(tmp_path, *args):
    env = {
        "ROLLOUT_REPORTS_DIR": str(tmp_path / "reports"),
        "ROLLOUT_DATA_DIR": str(tmp_path / "data"),
    }
    url = f"sqlite:///{tmp_path / 'events.db'}"
    return CliRunner().invoke(main, ["report", *args, "--event-store-url", url], env=env)


T0 = 1_793_577_600.0  # 2026-11-02T00:00:00Z


def populate(tmp_path) -> None:
    """Control served first, the treatment an hour later: a window over the first half hour
    is valid but has no treatment exposures."""
    rows = [
        {
            "ts": T0 + (3_600 if variant == "treatment" else 0) + n,
            "request_id": f"{variant}-{n}",
            "flag": "churn-model",
            "environment": "test",
            "user_id": f"{variant}-u{n}",
            "variant": variant,
            "bento": "churn:v2" if variant == "treatment" else "churn:v1",
            "reason": "strategy_variant",
            "status": 200,
            "shadow": False,
            "fallback": False,
        }
        for variant in ("control", "treatment")
        for n in range(50)
    ]
    engine = create_engine(f"sqlite:///{tmp_path / 'events.db'}")
    with engine.begin() as conn:
        conn.execute(exposures.insert(), rows)
        conn.execute(outcomes.insert(), [{"ts": T0, "metric": "retained", "value": 1.0}])
    engine.dispose()


def test_missing_data_exits_3_with_the_report_written(tmp_path):
    populate(tmp_path)
    window = "2026-11-02T00:00:00/2026-11-02T00:30:00"
    result = invoke(tmp_path, "ab", "--flag", "churn-model", "--window", window, "--timeout", "120")
    assert result.exit_code == 3, result.output
    assert "decision: hold" in result.output
    assert "missing: arm 'treatment' has no exposures" in result.output
    assert list((tmp_path / "reports" / "churn-model").glob("*/report.html"))


@pytest.mark.parametrize(
    ("args", "named", "existing"),
    [
        (["--flag", "no-such-flag"], "'no-such-flag'", "churn-model"),
        (["--flag", "churn-model", "--treatment", "v3"], "'v3'", "control, treatment"),
        (["--flag", "churn-model", "--metric", "revnue"], "'revnue'", "retained"),
        (["--flag", "churn-model", "--window", "2030-01-01/"], "2030-01-01", "2026-11-02"),
        (["--flag", "churn-model", "--window", "2026-11-03/2026-11-02"], "window", "ISO"),
        (["--flag", "churn-model", "--dimensions", "plan"], "'plan'", "segment, region"),
    ],
    ids=["flag", "arm", "metric", "window-after-data", "window-reversed", "dimension"],
)
def test_what_the_store_lacks_is_refused_with_exit_2_and_no_report(tmp_path, args, named, existing):
    populate(tmp_path)
    result = invoke(tmp_path, "ab", *args)
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and named in errors[0] and existing in errors[0], result.output
    assert "running ab_test.ipynb" not in result.output  # refused before any notebook ran
    assert not (tmp_path / "reports").exists()  # no run folder, no index


def test_a_validation_of_a_bento_that_never_served_is_refused(tmp_path):
    populate(tmp_path)
    result = invoke(tmp_path, "validation", "--flag", "churn-model", "--bento", "churn:v7")
    assert result.exit_code == 2, result.output
    assert "bento 'churn:v7' never served flag 'churn-model'" in result.output
    assert "churn:v1, churn:v2" in result.output
    assert not (tmp_path / "reports").exists()


def test_failure_exits_1_naming_the_partial_notebook(tmp_path):
    populate(tmp_path)
    # The imports cell alone takes longer than half a second on a fresh kernel.
    result = invoke(tmp_path, "ab", "--flag", "churn-model", "--timeout", "0.5")
    assert result.exit_code == 1, result.output
    assert "partial executed notebook" in result.output


@pytest.mark.parametrize(
    "args",
    [
        ["ab", "--flag", "x", "--window", "bogus"],
        ["ab", "--flag", "x", "--alpha", "2"],
        ["validation", "--flag", "x"],  # --bento is required
    ],
)
def test_usage_errors_exit_2(tmp_path, args):
    assert invoke(tmp_path, *args).exit_code == 2
