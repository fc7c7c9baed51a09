"""`rollout unleash up` / `down` end to end, as a newcomer runs them: a real Unleash, flags/
applied, tokens in owner-only files (never printed), a second `up` refused, `down` stopping
the process and dropping its database."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
from pathlib import Path

import psycopg
import pytest
import requests

from service.processes import venv_executable


def rollout(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [venv_executable("rollout"), *args], env=env, capture_output=True, text=True, timeout=180
    )


def databases() -> set[str]:
    with psycopg.connect(host="127.0.0.1", user="postgres", dbname="postgres") as conn:
        return {row[0] for row in conn.execute("SELECT datname FROM pg_database")}


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("UNLEASH_", "ROLLOUT_"))}
    return {**clean, "ROLLOUT_DATA_DIR": str(tmp_path / "data")}


def test_up_serves_the_ui_with_flags_applied_and_down_removes_everything(env, tmp_path) -> None:
    started = rollout("unleash", "up", env=env)
    state_file = tmp_path / "data" / "unleash" / "state.json"
    try:
        assert started.returncode == 0, started.stderr
        url = re.search(r"Unleash running at (http://127\.0\.0\.1:\d+)", started.stdout).group(1)
        state = json.loads(state_file.read_text())
        admin_token = Path(state["admin_token_file"]).read_text().strip()
        backend_token = Path(state["backend_token_file"]).read_text().strip()

        # The UI is served, flags/ is on the server, and both tokens work.
        assert requests.get(f"{url}/", timeout=10).status_code == 200
        features = requests.get(
            f"{url}/api/admin/projects/default/features",
            headers={"Authorization": admin_token},
            timeout=10,
        ).json()["features"]
        assert "churn-model" in {f["name"] for f in features}
        client = requests.get(
            f"{url}/api/client/features", headers={"Authorization": backend_token}, timeout=10
        )
        assert "churn-model" in {f["name"] for f in client.json()["features"]}

        # Secrets stay in owner-only files: never on the screen.
        for path in (state["admin_token_file"], state["backend_token_file"]):
            assert stat.S_IMODE(Path(path).stat().st_mode) == 0o600
        for token in (admin_token, backend_token):
            assert token not in started.stdout + started.stderr
        assert f"export UNLEASH_API_TOKEN_FILE={state['backend_token_file']}" in started.stdout
        assert "login admin / unleash4all" in started.stdout

        again = rollout("unleash", "up", env=env)
        assert again.returncode == 1
        assert again.stderr.strip() == (
            f"error: a local Unleash already runs at {url} (rollout unleash down)"
        )
        assert state["database"] in databases()
    finally:
        stopped = rollout("unleash", "down", env=env)
    assert stopped.returncode == 0, stopped.stderr
    assert f"dropped database {state['database']}" in stopped.stdout
    assert state["database"] not in databases()
    assert not state_file.exists()
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{url}/health", timeout=5)
    after = rollout("unleash", "status", env=env)
    assert after.stdout.strip() == "not running"


def test_down_without_up_is_one_error_line(env) -> None:
    result = rollout("unleash", "down", env=env)
    assert result.returncode == 1
    assert result.stderr.startswith("error: no local Unleash recorded in ")
    assert "Traceback" not in result.stderr
