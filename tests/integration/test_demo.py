"""`make demo`'s `rollout demo`, as the README's first command runs it (fewer users, so the suite
stays fast): it builds or reuses the bentos, serves, routes, simulates with a key it revokes,
reports and proposes the next step, and leaves flags/ and the keys file as it found them."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from service.processes import venv_executable

REPO = Path(__file__).resolve().parents[2]


def test_the_demo_runs_the_whole_loop_and_leaves_flags_as_it_found_them(
    built_bentos, tmp_path
) -> None:
    flags_before = {p.name: p.read_text() for p in (REPO / "flags").glob("*.yaml")}
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("UNLEASH_", "ROLLOUT_"))}
    env = {
        **clean,
        # The session's bento store: the demo finds its versions built and skips the build.
        "ROLLOUT_DATA_DIR": str(built_bentos.settings.data_dir),
        "ROLLOUT_REPORTS_DIR": str(tmp_path / "reports"),
        "ROLLOUT_DATABASE_URL": f"sqlite:///{tmp_path / 'events.db'}",
    }
    result = subprocess.run(
        [venv_executable("rollout"), "demo", "--users", "600", "--concurrency", "8"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = dict(line.split(":", 1) for line in result.stdout.splitlines() if ":" in line[:12])
    report = Path(lines["report"].strip())
    assert report.is_file() and report.is_relative_to(tmp_path / "reports")
    decision = json.loads((report.parent / "decision.json").read_text())
    assert lines["decision"].split()[0] == decision["recommendation"]
    assert decision["flag"] == "churn-model"
    # The demo's v2 is healthy: its post-rollout validation, on the labels this very run made
    # (which v2's retention offers changed), must not cry wolf.
    verdict, validation_page = lines["validation"].split()
    validation = json.loads((Path(validation_page[1:-1]).parent / "decision.json").read_text())
    assert verdict == validation["recommendation"] == "keep", validation["reasons"]
    assert [arm["variant"] for arm in validation["arms"]] == ["churn:v2", "churn:v1"]
    assert "600 users" in result.stderr and "up to date" in result.stderr
    assert {p.name: p.read_text() for p in (REPO / "flags").glob("*.yaml")} == flags_before
    keys = built_bentos.settings.data_dir / "api-keys"
    assert not keys.exists() or json.loads(keys.read_text())["keys"] == []
