"""Two real `rollout guard run` processes on one flag and one PostgreSQL: exactly one acts.

The first takes the lease and records the baseline; the second reports `standby`. The leader is
killed with SIGKILL (no goodbye, the lease is not released); the standby takes over once the
lease runs out, and when a guardrail then breaches it rolls back once. The audit trail shows
one baseline and one rollback: nothing was done twice. Each guard has its own data folder (as
two pods would); they share flags/ (embedded mode) and the database.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import yaml

from service.flags.audit import AuditStore
from service.harness.unleash_server import PostgresServer
from service.processes import venv_executable
from service.rollout.lease import FlagLease
from service.store.events import create_engine, exposures

pytestmark = pytest.mark.integration

FLAG = "churn-canary"
INTERVAL = 1.0  # the guards' interval and so the lease time, seconds
DEADLINE = 60.0  # generous: the machine's two cores are shared with other test runs
REPO = Path(__file__).resolve().parents[2]

FLAG_FILE = """
flag: churn-canary
default: churn:v1
variants: {canary: churn:v2}
environments:
  development:
    enabled: true
    strategies:
      - {name: canary, rollout: 5, variants: {canary: 100}}
ramp:
  environment: development
  strategy: canary
  control: default
  treatment: canary
  steps: [5, 50, 100]
  bake_seconds: 3600
  min_users: 20
  guardrails: {min_requests: 20}
"""


@pytest.fixture
def postgres_url() -> Iterator[str]:
    server = PostgresServer.from_env()
    name = f"rollout_lease_{secrets.token_hex(4)}"
    server.create_database(name)
    yield server.url(name).replace("postgres://", "postgresql+psycopg://", 1)
    server.drop_database(name)


@pytest.fixture
def flags(tmp_path: Path) -> Path:
    folder = tmp_path / "flags"
    folder.mkdir()
    (folder / "context.yaml").write_text((REPO / "flags" / "context.yaml").read_text())
    (folder / f"{FLAG}.yaml").write_text(FLAG_FILE)
    return folder


class GuardProcess:
    """`rollout guard run` in a process group of its own, with its own data folder."""

    def __init__(self, name: str, tmp_path: Path, flags: Path, database_url: str) -> None:
        self.data = tmp_path / name
        env = {k: v for k, v in os.environ.items() if not k.startswith(("UNLEASH_", "ROLLOUT_"))}
        env |= {
            "ROLLOUT_DATA_DIR": str(self.data),
            "ROLLOUT_REPORTS_DIR": str(self.data / "reports"),
            "ROLLOUT_FLAGS_DIR": str(flags),
            "ROLLOUT_DATABASE_URL": database_url,
        }
        self.log = tmp_path / f"{name}.log"
        command = [venv_executable("rollout"), "guard", "run", FLAG, "--interval", f"{INTERVAL}"]
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

    def status(self) -> dict[str, Any] | None:
        try:
            return json.loads((self.data / "guard" / f"{FLAG}.json").read_text())
        except (OSError, ValueError):  # not written yet, or caught mid-write
            return None

    def kill(self, sig: signal.Signals = signal.SIGKILL) -> None:
        os.killpg(self.process.pid, sig)
        self.process.wait(30)


@pytest.fixture
def guards(
    tmp_path: Path, flags: Path, postgres_url: str
) -> Iterator[Callable[[str], GuardProcess]]:
    started: list[GuardProcess] = []

    def start(name: str) -> GuardProcess:
        started.append(GuardProcess(name, tmp_path, flags, postgres_url))
        return started[-1]

    yield start
    for guard in started:
        if guard.process.poll() is None:
            guard.kill(signal.SIGKILL)


def wait_for(what: str, check: Callable[[], Any], guards: list[GuardProcess]) -> Any:
    """Poll `check` until it returns something truthy; fail with the guards' logs."""
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        for guard in guards:
            if guard.process.poll() is not None and guard.process.returncode != -9:
                pytest.fail(f"{guard.log} exited early:\n{guard.log.read_text()[-3000:]}")
        time.sleep(0.1)  # the poll interval, not a wait for the guard
    logs = "\n".join(f"--- {g.log}\n{g.log.read_text()[-2000:]}" for g in guards)
    pytest.fail(f"timed out waiting for {what}\n{logs}")


def state_of(guard: GuardProcess, *states: str) -> Callable[[], dict[str, Any] | None]:
    def check() -> dict[str, Any] | None:
        status = guard.status()
        return status if status and status["state"] in states else None

    return check


def breach(engine: sa.Engine) -> None:
    """Canary requests failing (500) while the default serves cleanly."""
    rows = [
        {
            "ts": time.time(),
            "request_id": f"{variant}-{i}",
            "flag": FLAG,
            "environment": "development",
            "user_id": f"{variant}-user-{i}",
            "variant": variant,
            "bento": "churn:v2" if variant == "canary" else "churn:v1",
            "reason": "strategy_variant",
            "status": 500 if variant == "canary" else 200,
            "latency_ms": 5.0,
            "shadow": False,
            "fallback": False,
        }
        for variant, count in (("default", 200), ("canary", 50))
        for i in range(count)
    ]
    with engine.begin() as conn:
        conn.execute(exposures.insert(), rows)


def test_two_guards_one_acts_and_the_standby_takes_over_after_kill_9(
    guards: Callable[[str], GuardProcess], postgres_url: str, flags: Path
) -> None:
    engine = create_engine(postgres_url)
    audit = AuditStore(engine)
    lease = FlagLease(engine, FLAG, INTERVAL, holder="test-observer")

    leader = guards("guard-a")
    wait_for("the first guard to lead", state_of(leader, "holding", "idle"), [leader])
    standby = guards("guard-b")
    status = wait_for("the second guard to stand by", state_of(standby, "standby"), [standby])
    assert f":{leader.process.pid}:" in status["message"]  # it names who leads
    # While both run, only the leader acts: one baseline, however many ticks passed.
    wait_for("the standby to look again", lambda: _later(standby, status["time"]), [standby])
    assert [e.action for e in audit.entries(FLAG)] == ["baseline"]

    before = lease.state()
    assert f":{leader.process.pid}:" in (before.holder or "")
    leader.kill(signal.SIGKILL)  # no release: the lease must run out by itself
    killed = time.time()
    wait_for("the standby to take over", state_of(standby, "holding", "idle"), [standby])
    took_over = time.time() - killed
    after = lease.state()
    assert f":{standby.process.pid}:" in (after.holder or "")
    assert after.acquired_at is not None and before.expires_at is not None
    # Never while the dead leader's lease ran (it ran at least until the expiry seen before).
    assert after.acquired_at >= before.expires_at
    print(f"\nstandby took over {took_over:.2f} s after kill -9 (interval {INTERVAL:g} s)")

    breach(engine)
    wait_for("the rollback", state_of(standby, "rolled-back", "idle"), [standby])
    actions = [e.action for e in audit.entries(FLAG)]
    assert actions == ["baseline", "rollback"], actions  # once each: nothing done twice
    doc = yaml.safe_load((flags / f"{FLAG}.yaml").read_text())
    assert doc["environments"]["development"]["strategies"][0]["rollout"] == 0

    standby.kill(signal.SIGTERM)  # graceful: the lease is handed back at once
    assert lease.state().expires_at == 0.0
    assert lease.acquire()  # anyone may take it now
    lease.release()


def _later(guard: GuardProcess, seen: str) -> bool:
    status = guard.status()
    return bool(status and status["state"] == "standby" and status["time"] > seen)
