"""The `rollout` command line: exit codes and messages a person or a script can act on."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from service.cli import main

REPO_FLAGS = Path(__file__).resolve().parents[2] / "flags"


def test_flags_validate_accepts_the_repository_flags() -> None:
    result = CliRunner().invoke(main, ["flags", "validate"])
    assert result.exit_code == 0, result.output
    assert "ok  churn-model  default=churn:v1" in result.output


def test_flags_validate_lists_every_problem_and_exits_non_zero(flags_dir) -> None:
    text = (REPO_FLAGS / "churn-model.yaml").read_text()
    folder = flags_dir("churn-model.yaml", text.replace("treatment: churn:v2", "treatment: x:v9"))
    flags_dir("broken.yaml", "flag: [unclosed\n")
    result = CliRunner().invoke(main, ["flags", "validate", "--dir", str(folder)])
    assert result.exit_code == 1
    assert "churn-model.yaml: flag 'churn-model': variants.treatment: unknown bento 'x:v9'" in (
        result.output
    )
    assert "broken.yaml" in result.output and "yaml" in result.output
    assert "2 problem(s)" in result.output


def test_package_errors_are_one_clear_line_and_exit_1() -> None:
    from service.processes import free_port

    url = f"http://127.0.0.1:{free_port()}"
    result = CliRunner().invoke(main, ["simulate", "--users", "1", "--selector-url", url])
    assert result.exit_code == 1
    assert result.output.startswith(f"error: no selector answers at {url}")
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_flags_validate_refuses_a_bento_that_failed_its_gates(monkeypatch) -> None:
    import service.registry.gates

    monkeypatch.setattr(
        service.registry.gates, "failed_gates", lambda tags, settings: {"churn:v2": "latency:p95"}
    )
    result = CliRunner().invoke(main, ["flags", "validate"])
    assert result.exit_code == 1
    assert "bento churn:v2 failed its quality gate 'latency:p95'" in result.output


def test_flags_validate_warns_about_built_but_ungated_bentos_only(monkeypatch) -> None:
    import service.registry.gates

    monkeypatch.setattr(
        service.registry.gates,
        "failed_gates",
        lambda tags, settings: {
            "churn:v1": service.registry.gates.NOT_BUILT,
            "churn:v2": service.registry.gates.NOT_GATED,
        },
    )
    result = CliRunner().invoke(main, ["flags", "validate"])
    assert result.exit_code == 0
    assert "churn:v2 is not gated here" in result.output
    assert "churn:v1" not in result.output.split("ok  churn-model")[0]


def test_serve_with_a_broken_flag_file_is_one_error_line(flags_dir, monkeypatch) -> None:
    text = (REPO_FLAGS / "churn-model.yaml").read_text().replace("rollout: 80", "rollout: 180")
    monkeypatch.setenv("ROLLOUT_FLAGS_DIR", str(flags_dir("churn-model.yaml", text)))
    result = CliRunner().invoke(main, ["serve", "--port", "8"])
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert lines == [
        "error: "
        f"{Path(flags_dir('churn-model.yaml', text)) / 'churn-model.yaml'}: flag 'churn-model': "
        "environments.development.strategies.ab-test.rollout: "
        "must be a whole percentage 0-100, not 180"
    ]


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"ROLLOUT_METRICS_INTERVAL": "0"},
            "error: ROLLOUT_METRICS_INTERVAL must be at least 1 second, not 0",
        ),
        (
            {"ROLLOUT_REFRESH_INTERVAL": "-5"},
            "error: ROLLOUT_REFRESH_INTERVAL must be at least 1 second, not -5",
        ),
        (
            {"UNLEASH_URL": "http://127.0.0.1:9", "UNLEASH_API_TOKEN": ""},
            "error: UNLEASH_URL is set but no backend token: set UNLEASH_API_TOKEN or "
            "UNLEASH_API_TOKEN_FILE",
        ),
        (
            {"ROLLOUT_REFRESH_INTERVAL": "abc"},
            "error: ROLLOUT_REFRESH_INTERVAL='abc': expected a whole number",
        ),
        (
            {"ROLLOUT_FORWARD_TIMEOUT": "2s"},
            "error: ROLLOUT_FORWARD_TIMEOUT='2s': expected a number",
        ),
        (
            {"ROLLOUT_READY_REQUIRES_STORE": "maybe"},
            "error: ROLLOUT_READY_REQUIRES_STORE='maybe': expected true or false "
            "(1/0, yes/no, on/off)",
        ),
    ],
)
def test_serve_refuses_flag_client_settings_in_one_line(monkeypatch, env, message) -> None:
    """Checked in the master, before any worker would fail on them with a traceback."""
    monkeypatch.delenv("UNLEASH_API_TOKEN_FILE", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    result = CliRunner().invoke(main, ["serve", "--port", "8"])
    assert result.exit_code == 1
    assert result.output.splitlines() == [message]


def test_serve_refuses_an_impossible_port_before_starting() -> None:
    result = CliRunner().invoke(main, ["serve", "--port", "99999"])
    assert result.exit_code == 2
    assert "99999 is not in the range 1<=x<=65535" in result.output
    assert "Traceback" not in result.output


def test_an_unexpected_failure_is_one_line_and_a_hint_and_debug_shows_the_trace(
    monkeypatch,
) -> None:
    import service.harness.simulate as simulate

    def broken(*_args, **_kwargs):
        raise RuntimeError("surprise\nsecond line")

    monkeypatch.setattr(simulate, "simulate", broken)
    result = CliRunner().invoke(main, ["simulate", "--users", "1"])
    assert result.exit_code == 1
    assert result.output.splitlines() == [
        "error: RuntimeError: surprise",
        "hint: run again with --debug for the traceback",
    ]
    debug = CliRunner().invoke(main, ["--debug", "simulate", "--users", "1"])
    assert isinstance(debug.exception, RuntimeError)
