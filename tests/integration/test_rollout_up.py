"""`rollout up` end to end: one command, a prediction that works, Ctrl-C leaves nothing behind.

The real command in a project folder whose BentoML store already holds the session's built
bentos (so the build step is the quick "unchanged" path): it must print the selector and console
URLs and a curl line; that exact request must be answered by a bento; SIGINT must stop every
process it started (the bentos' workers included) and exit 0.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
import requests

from service.processes import free_port, venv_executable

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT = 240.0


def wait_for_line(process: subprocess.Popen[str], pattern: str, seen: list[str]) -> str:
    deadline = time.monotonic() + START_TIMEOUT
    assert process.stdout is not None
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line and process.poll() is not None:
            raise AssertionError(f"rollout up exited {process.returncode}: {''.join(seen)}")
        seen.append(line)
        if re.search(pattern, line):
            return line
    raise AssertionError(f"no line matching {pattern!r} within {START_TIMEOUT}s: {seen}")


def descendants(pid: int) -> list[psutil.Process]:
    return psutil.Process(pid).children(recursive=True)


def test_up_serves_a_prediction_and_ctrl_c_stops_everything(
    tmp_path: Path, built_bentos: Any
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "bentoml").symlink_to(built_bentos.settings.bentoml_home)
    port, console_port = free_port(), free_port()
    env = {**os.environ, "ROLLOUT_DATA_DIR": str(data), "UNLEASH_URL": "", "PYTHONUNBUFFERED": "1"}
    command = [
        venv_executable("rollout"),
        "up",
        "--port",
        str(port),
        "--console-port",
        str(console_port),
    ]
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=REPO
    )
    seen: list[str] = []
    try:
        wait_for_line(process, r"press Ctrl-C", seen)
        output = "".join(seen)
        assert f"selector: http://127.0.0.1:{port}" in output
        assert f"console:  http://127.0.0.1:{console_port}" in output
        children = descendants(process.pid)
        assert len(children) >= 4  # two bentos, the selector, the console (and their workers)

        curl = next(line.strip() for line in seen if line.strip().startswith("curl "))
        words = shlex.split(curl)
        body = json.loads(words[words.index("-d") + 1])
        answer = requests.post(words[2], json=body, timeout=30)  # what curl would send
        assert answer.status_code == 200, answer.text
        assert answer.json()["bento"] in {"churn:v1", "churn:v2"}
        assert "churn_probability" in answer.json()["prediction"]["predictions"][0]
        ready = requests.get(f"http://127.0.0.1:{port}/readyz", timeout=10)
        assert ready.status_code == 200 and ready.json()["answering_bento"]
        page = requests.get(f"http://127.0.0.1:{console_port}/", timeout=30)
        assert page.status_code == 200 and 'id="flag-churn-model"' in page.text

        process.send_signal(signal.SIGINT)
        assert process.wait(120) == 0, "".join(seen) + (
            process.stdout.read() if process.stdout else ""
        )
    finally:
        if process.poll() is None:
            process.kill()
    rest = process.stdout.read() if process.stdout else ""
    assert "stopped: every process" in rest
    leftovers = [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
    assert leftovers == [], [c.cmdline() for c in leftovers]
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
