"""Faults under steady load, all real processes on loopback: `rollout serve` (2 workers, granian;
gunicorn too where a test names it), `bentoml serve`, and real Unleash servers on PostgreSQL.

- Unleash stopped under load: no failed request; a selector started while it is down serves the
  saved flags; when Unleash is back, the selector picks up the change.
- Blue/green and the kill switch through the Unleash Admin API: no failed request during a switch.
- The canary bento killed under load: no 5xx, the default serves.
- SIGTERM to the selector under load: every successful answer has its exposure in the store.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest
import sqlalchemy as sa
import urllib3

from service.flags.definitions import load_flags
from service.flags.sync import create_context_fields, create_flag
from service.flags.unleash_admin import UnleashAdmin
from service.harness.unleash_server import UnleashServer
from service.processes import ManagedProcess, free_port, selector_process
from service.registry.bento_process import BentoProcess
from service.registry.population import population
from service.store.events import exposures

pytestmark = pytest.mark.integration

REFRESH_SECONDS = 1
# A flag change reaches every worker within one poll plus the server's own response cache;
# the rest is slack for a machine shared with other test runs.
SETTLE = 2 * REFRESH_SECONDS + 2
USERS = population(200, seed=11)
EU_ENTERPRISE = {"region": "eu", "segment": "enterprise"}

CANARY_FLAG = """
flag: FLAG
default: churn:v1
variants: {canary: churn:v2}
environments:
  development:
    enabled: true
    strategies:
      - name: eu-enterprise
        constraints:
          - {field: region, operator: IN, values: [eu]}
          - {field: segment, operator: IN, values: [enterprise]}
        variants: {canary: 100}
"""
ALL_TO_ONE_FLAG = """
flag: FLAG
default: churn:v1
variants: {blue: churn:v1, green: churn:v2}
environments:
  development:
    enabled: true
    strategies:
      - name: everyone
        variants: {VARIANT: 100}
"""
AB_FLAG = """
flag: ab
default: churn:v1
variants: {control: churn:v1, treatment: churn:v2}
environments:
  development:
    enabled: true
    strategies:
      - name: ab-test
        variants: {control: 50, treatment: 50}
"""


@dataclass(frozen=True)
class Answer:
    at: float  # monotonic time the answer arrived
    status: int  # 0: no HTTP answer at all
    body: dict[str, Any]


class SteadyLoad:
    """Threads posting predictions back to back, each answer kept, until `stop()`."""

    def __init__(self, url: str, flag: str, threads: int = 4, everyone_eu: bool = False) -> None:
        self.url = f"{url}/v1/models/{flag}/predict"
        self.everyone_eu = everyone_eu
        self.answers: list[Answer] = []
        self._stop = threading.Event()
        self._http = urllib3.PoolManager(
            maxsize=threads, retries=False, timeout=urllib3.Timeout(total=10)
        )
        self._users = itertools.cycle(USERS)
        self._threads = [threading.Thread(target=self._run) for _ in range(threads)]

    def __enter__(self) -> SteadyLoad:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> list[Answer]:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)
        return self.answers

    def wait_answers(self, n: int, timeout: float = 30) -> None:
        """Block until `n` more answers arrived (so a fault lands under real traffic)."""
        target = len(self.answers) + n
        wait_for(lambda: len(self.answers) >= target, timeout, f"{n} answers under load")

    def keep_going(self, since: float, seconds: float) -> None:
        """Block until `seconds` have passed since `since`, with answers arriving after that."""
        wait_for(lambda: time.monotonic() > since + seconds, seconds + 5, "the load window")
        self.wait_answers(20)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.answers.append(self._post(next(self._users)))

    def _post(self, user: Any) -> Answer:
        properties = EU_ENTERPRISE if self.everyone_eu else {"region": user.region}
        body = {
            "context": {"userId": user.user_id, "properties": properties},
            "inputs": [{**user.features(), **properties}],
        }
        try:
            response = self._http.request(
                "POST",
                self.url,
                body=json.dumps(body),
                headers={"Content-Type": "application/json"},
            )
        except urllib3.exceptions.HTTPError as exc:
            return Answer(time.monotonic(), 0, {"error": str(exc)})
        return Answer(time.monotonic(), response.status, json.loads(response.data or b"{}"))


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> float:
    """Poll `condition` until it holds; the seconds it took."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if condition():
            return time.monotonic() - started
        time.sleep(0.1)  # poll interval, not a wait for the condition
    raise AssertionError(f"{what} not seen within {timeout:.0f}s")


def failures(answers: list[Answer]) -> list[Answer]:
    return [a for a in answers if a.status != 200]


def start_selector(
    tmp_path: Path, bento_urls: str, env: dict[str, str], name: str = "selector"
) -> ManagedProcess:
    port = free_port()
    env = {
        "ROLLOUT_DATA_DIR": str(tmp_path / "data"),
        "ROLLOUT_BENTO_URLS": bento_urls,
        "ROLLOUT_REFRESH_INTERVAL": str(REFRESH_SECONDS),
        "UNLEASH_URL": "",
        "ROLLOUT_UNLEASH_URL": "",
        **env,
    }
    process = selector_process(port, tmp_path / f"{name}.log", env).start()
    process.wait_ready(60)
    return process


def base_url(process: ManagedProcess) -> str:
    return process.ready_url.removesuffix("/readyz")


def server_mode(server: UnleashServer) -> dict[str, str]:
    return {
        "ROLLOUT_UNLEASH_URL": server.url,
        "UNLEASH_URL": server.url,
        "UNLEASH_API_TOKEN": server.backend_token,
    }


def resolve(process: ManagedProcess, flag: str) -> dict[str, Any]:
    http = urllib3.PoolManager(retries=False, timeout=urllib3.Timeout(total=5))
    response = http.request("GET", f"{base_url(process)}/v1/models/{flag}/resolve?userId=u1")
    return {"status": response.status, **json.loads(response.data)}


def push_flag(admin: UnleashAdmin, flags_dir: Callable[..., Path], text: str) -> str:
    name = f"faults-{time.monotonic_ns() % 10**9}"
    flag_set = load_flags(flags_dir(f"{name}.yaml", text.replace("FLAG", name)))
    create_context_fields(admin, flag_set)
    create_flag(admin, flag_set.flags[name], "development")
    return name


def stored_request_ids(data_dir: Path) -> set[str]:
    engine = sa.create_engine(f"sqlite:///{data_dir / 'events.db'}")
    with engine.connect() as conn:
        return {r.request_id for r in conn.execute(sa.select(exposures.c.request_id))}


@pytest.fixture
def own_unleash() -> Iterator[UnleashServer]:
    """An Unleash server this test may stop (the session's server stays up for the others)."""
    server = UnleashServer(port=free_port()).start()
    try:
        yield server
    finally:
        server.stop()


def test_unleash_down_serves_last_known_flags_and_picks_up_changes_when_back(
    tmp_path, flags_dir, bento_urls, own_unleash
) -> None:
    with UnleashAdmin(own_unleash.url, own_unleash.admin_token) as admin:
        flag = push_flag(admin, flags_dir, ALL_TO_ONE_FLAG.replace("VARIANT", "green"))
    selector = start_selector(tmp_path, bento_urls, server_mode(own_unleash), "first")
    try:
        wait_for(lambda: resolve(selector, flag)["status"] == 200, 15, "the flag in the selector")
        with SteadyLoad(base_url(selector), flag) as load:
            load.wait_answers(50)
            own_unleash.stop()  # the real server goes away; its port now refuses connections
            down = time.monotonic()
            # Several refresh intervals with Unleash unreachable.
            load.keep_going(down, 4 * REFRESH_SECONDS)
        assert not failures(load.answers), selector.log_tail(60)
        assert {a.body["bento"] for a in load.answers} == {"churn:v2"}
    finally:
        selector.stop()

    # A selector started while Unleash is unreachable serves the state the first one saved.
    restarted = start_selector(tmp_path, bento_urls, server_mode(own_unleash), "restarted")
    try:
        assert resolve(restarted, flag)["bento"] == "churn:v2"
        # Unleash comes back (same address and tokens) with the flag changed: blue for everyone.
        back = UnleashServer(port=own_unleash.port)
        back.admin_token, back.backend_token = own_unleash.admin_token, own_unleash.backend_token
        with back, UnleashAdmin(back.url, back.admin_token) as admin:
            flag_set = load_flags(
                flags_dir(
                    f"{flag}.yaml", ALL_TO_ONE_FLAG.replace("VARIANT", "blue").replace("FLAG", flag)
                )
            )
            create_context_fields(admin, flag_set)
            create_flag(admin, flag_set.flags[flag], "development")
            seconds = wait_for(
                lambda: resolve(restarted, flag).get("bento") == "churn:v1",
                10 * REFRESH_SECONDS + 10,
                "the change after Unleash returned",
            )
        print(f"change picked up {seconds:.1f}s after Unleash returned")
    finally:
        restarted.stop()


def test_blue_green_switch_and_kill_switch_fail_no_request(
    tmp_path, flags_dir, bento_urls, unleash_server, unleash_admin
) -> None:
    flag = push_flag(unleash_admin, flags_dir, ALL_TO_ONE_FLAG.replace("VARIANT", "blue"))
    selector = start_selector(tmp_path, bento_urls, server_mode(unleash_server))
    try:
        wait_for(lambda: resolve(selector, flag)["status"] == 200, 15, "the flag in the selector")
        with SteadyLoad(base_url(selector), flag) as load:
            load.wait_answers(30)
            switch_everyone_to(unleash_admin, flag, "green", "churn:v2")
            switched = time.monotonic()
            load.keep_going(switched, SETTLE + 1)
            # Kill switch: the flag off sends everyone back to the default (stable) bento.
            unleash_admin.set_environment_enabled("default", flag, "development", False)
            killed = time.monotonic()
            load.keep_going(killed, SETTLE + 1)
        assert not failures(load.answers), selector.log_tail(60)
        # Each worker polls on its own: a switch is complete for everyone within one interval
        # (plus the server's own response cache, and slack for a shared machine), and stays.
        green = [a for a in load.answers if switched + SETTLE < a.at < killed]
        off = [a for a in load.answers if a.at > killed + SETTLE]
        assert green and {a.body["bento"] for a in green} == {"churn:v2"}
        assert off and {(a.body["bento"], a.body["reason"]) for a in off} == {
            ("churn:v1", "flag_disabled")
        }
    finally:
        selector.stop()


def switch_everyone_to(admin: UnleashAdmin, flag: str, variant: str, bento: str) -> None:
    [strategy] = admin.list_strategies("default", flag, "development")
    strategy["variants"] = [
        {
            "name": variant,
            "weight": 1000,
            "weightType": "variable",
            "stickiness": "default",
            "payload": {"type": "string", "value": bento},
        }
    ]
    admin.update_strategy("default", flag, "development", strategy["id"], strategy)


def test_killing_the_canary_under_load_gives_no_5xx(
    tmp_path, flags_dir, built_bentos, bento_servers
) -> None:
    folder = flags_dir("canary.yaml", CANARY_FLAG.replace("FLAG", "canary-flag"))
    canary = BentoProcess("churn:v2", settings=built_bentos.settings).start()
    selector = None
    try:
        canary.wait_ready(90)
        urls = f"churn:v1={bento_servers['churn:v1'].url},churn:v2={canary.url}"
        selector = start_selector(tmp_path, urls, {"ROLLOUT_FLAGS_DIR": str(folder)})
        with SteadyLoad(base_url(selector), "canary-flag", everyone_eu=True) as load:
            load.wait_answers(50)
            crash(canary)
            killed = time.monotonic()
            load.keep_going(killed, 2)
        assert not failures(load.answers), selector.log_tail(60)
        before = {a.body["bento"] for a in load.answers if a.at < killed}
        after = [a.body for a in load.answers if a.at > killed + 1]
        assert before >= {"churn:v2"}
        assert after and {(b["bento"], b["variant"], b["fallback"]) for b in after} == {
            ("churn:v1", "canary", True)
        }
        # After a few failures per worker, the open circuit skips the dead bento at once.
        assert any("circuit breaker is open" in b["detail"] for b in after)
    finally:
        canary.stop()
        if selector is not None:
            selector.stop()


def crash(bento: BentoProcess) -> None:
    """SIGKILL `bentoml serve` and its workers (they run in sessions of their own)."""
    assert bento.process is not None
    main = psutil.Process(bento.process.pid)
    for process in [*main.children(recursive=True), main]:
        process.kill()
    bento.process.wait(10)


@pytest.mark.parametrize("server", ["granian", "gunicorn"])
def test_sigterm_under_load_keeps_the_exposure_of_every_successful_answer(
    tmp_path, flags_dir, bento_urls, server
) -> None:
    folder = flags_dir("ab.yaml", AB_FLAG)
    env = {"ROLLOUT_FLAGS_DIR": str(folder), "ROLLOUT_SERVER": server}
    selector = start_selector(tmp_path, bento_urls, env)
    assert f"starting the selector on {server}" in selector.log_tail()
    log = selector.log_file
    wait_for(lambda: "selector ready on" in log.read_text(), 30, "the ready line")
    with SteadyLoad(base_url(selector), "ab", threads=8) as load:
        load.wait_answers(300)
        # SIGTERM: in-flight requests finish, then each worker writes its buffered events.
        assert selector.stop() == 0, selector.log_tail()
    served = {a.body["request_id"] for a in load.answers if a.status == 200}
    assert len(served) >= 300
    assert not [a for a in load.answers if a.status >= 500]  # refused connections, no 5xx
    assert served <= stored_request_ids(tmp_path / "data")
    assert log.read_text().count("selector ready on") == 1  # said once, by the first worker
