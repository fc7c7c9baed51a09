"""`rollout report ...` exit codes, through the real command and notebooks."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from service.cli import main

pytestmark = pytest.mark.integration


def invoke(tmp_path, *args):
    env = {
        "ROLLOUT_REPORTS_DIR": str(tmp_path / "reports"),
        "ROLLOUT_DATA_DIR": str(tmp_path / "data"),
    }
    url = f"sqlite:///{tmp_path / 'events.db'}"
    return CliRunner().invoke(main, ["report", *args, "--event-store-url", url], env=env)


def test_missing_data_exits_3_with_the_report_written(tmp_path):
    result = invoke(tmp_path, "ab", "--flag", "no-such-flag", "--timeout", "120")
    assert result.exit_code == 3, result.output
    assert "decision: hold" in result.output
    assert "missing: flag 'no-such-flag' has no exposures" in result.output
    assert list((tmp_path / "reports" / "no-such-flag").glob("*/report.html"))


def test_failure_exits_1_naming_the_partial_notebook(tmp_path):
    result = CliRunner().invoke(
        main,
        [
            "report",
            "validation",
            "--flag",
            "churn-model",
            "--bento",
            "churn:v2",
            "--event-store-url",
            "postgresql+psycopg://nobody@127.0.0.1:1/none",
        ],
        env={
            "ROLLOUT_REPORTS_DIR": str(tmp_path / "reports"),
            "ROLLOUT_DATA_DIR": str(tmp_path / "data"),
        },
    )
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
