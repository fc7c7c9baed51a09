"""Three `rollout serve` replicas behind nginx, one PostgreSQL event store, one real Unleash.

All on loopback, all real processes (nginx from Debian: scripts/install-nginx):
- every user gets the same variant and bento from every replica and through the balancer;
- a flag change in Unleash reaches all three replicas (the time is printed);
- every answered request has exactly one exposure in the shared store;
- one replica killed with SIGKILL under load: no request fails through the balancer (nginx
  sends it to the next replica), and every answer a surviving replica gave is stored once.
The figures are printed (`pytest -s`) for the README.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import urllib3

from service.errors import ConfigError
from service.flags.definitions import load_flags
from service.flags.sync import create_context_fields, create_flag
from service.flags.unleash_admin import UnleashAdmin
from service.harness.balancer import NginxBalancer
from service.harness.unleash_server import PostgresServer, UnleashServer
from service.processes import ManagedProcess, free_port, selector_process
from service.registry.population import population
from service.store.events import create_engine, exposures

pytestmark = pytest.mark.integration

REPLICAS = 3
REFRESH = 1  # the replicas' Unleash refresh interval, seconds
DEADLINE = 60.0  # for anything polled: generous, the two cores are shared
USERS = population(300, seed=23)
REPO = Path(__file__).resolve().parents[2]
FLAG_TEXT = """
flag: FLAG
default: churn:v1
variants: {control: churn:v1, treatment: churn:v2}
environments:
  development:
    enabled: true
    strategies:
      - name: ab-test
        rollout: 100
        stickiness: userId
        variants: {control: 50, treatment: 50}
"""


@dataclass
class Cluster:
    replicas: list[ManagedProcess]
    balancer: NginxBalancer
    flag: str
    admin: UnleashAdmin
    engine: sa.Engine

    def replica_url(self, i: int) -> str:
        return self.replicas[i].ready_url.removesuffix("/readyz")

    def address(self, i: int) -> str:
        return self.replica_url(i).removeprefix("http://")


def wait_for(what: str, check: Callable[[], Any]) -> Any:
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.05)  # the poll interval, not a wait for the condition
    raise AssertionError(f"{what} not seen within {DEADLINE:.0f} s")


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    server = PostgresServer.from_env()
    name = f"rollout_replicas_{secrets.token_hex(4)}"
    try:
        server.create_database(name)
    except ConfigError as exc:
        pytest.fail(str(exc), pytrace=False)
    yield server.url(name).replace("postgres://", "postgresql+psycopg://", 1)
    server.drop_database(name)


@pytest.fixture(scope="module")
def cluster(
    unleash_server: UnleashServer,
    bento_urls: str,
    postgres_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Cluster]:
    tmp = tmp_path_factory.mktemp("replicas")
    admin = UnleashAdmin(unleash_server.url, unleash_server.admin_token)
    flag = f"replicas-{secrets.token_hex(3)}"
    folder = tmp / "flags"
    folder.mkdir()
    (folder / "context.yaml").write_text((REPO / "flags" / "context.yaml").read_text())
    (folder / f"{flag}.yaml").write_text(FLAG_TEXT.replace("FLAG", flag))
    flag_set = load_flags(folder)
    create_context_fields(admin, flag_set)
    create_flag(admin, flag_set.flags[flag], "development")
    replicas = []
    try:
        for i in range(REPLICAS):
            env = {
                "ROLLOUT_DATA_DIR": str(tmp / f"replica-{i}"),
                "ROLLOUT_DATABASE_URL": postgres_url,
                "ROLLOUT_BENTO_URLS": bento_urls,
                "ROLLOUT_REFRESH_INTERVAL": str(REFRESH),
                "ROLLOUT_UNLEASH_URL": unleash_server.url,
                "UNLEASH_URL": unleash_server.url,
                "UNLEASH_API_TOKEN": unleash_server.backend_token,
            }
            log = tmp / f"replica-{i}.log"
            replicas.append(selector_process(free_port(), log, env, workers=1, threads=8).start())
        for replica in replicas:
            replica.wait_ready(90)
        upstreams = [r.ready_url.removeprefix("http://").removesuffix("/readyz") for r in replicas]
        try:
            balancer = NginxBalancer(upstreams, tmp / "nginx")
        except ConfigError as exc:
            pytest.fail(str(exc), pytrace=False)
        with balancer:
            balancer.wait_ready(30)
            engine = create_engine(postgres_url)
            yield Cluster(replicas, balancer, flag, admin, engine)
            engine.dispose()
    finally:
        for replica in replicas:
            replica.stop()
        admin.close()


def resolve(http: urllib3.PoolManager, base: str, flag: str, user: Any) -> tuple[str, str]:
    query = f"userId={user.user_id}&region={user.region}&segment={user.segment}"
    response = http.request("GET", f"{base}/v1/models/{flag}/resolve?{query}")
    assert response.status == 200, response.data
    body = json.loads(response.data)
    return body["variant"], body["bento"]


def test_every_user_gets_the_same_bento_from_any_replica(cluster: Cluster) -> None:
    http = urllib3.PoolManager(retries=False, timeout=urllib3.Timeout(total=10))
    views = [cluster.replica_url(i) for i in range(REPLICAS)] + [cluster.balancer.url]
    wait_for(  # the new flag has reached every replica
        "the flag on every replica",
        lambda: all(resolve(http, v, cluster.flag, USERS[0])[0] != "default" for v in views),
    )
    seen = {u.user_id: {resolve(http, view, cluster.flag, u) for view in views} for u in USERS}
    assert all(len(answers) == 1 for answers in seen.values()), {
        user: answers for user, answers in seen.items() if len(answers) > 1
    }
    split = Counter(next(iter(answers)) for answers in seen.values())
    assert set(split) == {("control", "churn:v1"), ("treatment", "churn:v2")}, split


def test_a_flag_change_reaches_every_replica(cluster: Cluster) -> None:
    http = urllib3.PoolManager(retries=False, timeout=urllib3.Timeout(total=10))
    probe = USERS[:20]
    [strategy] = cluster.admin.list_strategies("default", cluster.flag, "development")
    strategy["variants"] = [
        {
            "name": "treatment",
            "weight": 1000,
            "weightType": "variable",
            "stickiness": "default",
            "payload": {"type": "string", "value": "churn:v2"},
        }
    ]
    changed = time.monotonic()
    cluster.admin.update_strategy("default", cluster.flag, "development", strategy["id"], strategy)
    reached: dict[int, float] = {}

    def everyone_switched() -> bool:
        for i in set(range(REPLICAS)) - set(reached):
            answers = {resolve(http, cluster.replica_url(i), cluster.flag, u) for u in probe}
            if answers == {("treatment", "churn:v2")}:
                reached[i] = time.monotonic() - changed
        return len(reached) == REPLICAS

    wait_for("the change on every replica", everyone_switched)
    first, last = min(reached.values()), max(reached.values())
    print(
        f"\nflag change: first replica after {first:.2f} s, all {REPLICAS} after {last:.2f} s "
        f"(spread {last - first:.2f} s; refresh interval {REFRESH} s)"
    )


@dataclass(frozen=True)
class Answer:
    request_id: str
    status: int  # 0: no HTTP answer at all
    upstream: str  # nginx's $upstream_addr: "a" or "a, b" when retried


class Load:
    """Threads posting predictions through the balancer, each with its own X-Request-ID."""

    def __init__(self, url: str, flag: str, threads: int = 6) -> None:
        self.url = f"{url}/v1/models/{flag}/predict"
        self.answers: list[Answer] = []
        self._stop = threading.Event()
        self._http = urllib3.PoolManager(maxsize=threads, retries=False, timeout=20)
        self._threads = [threading.Thread(target=self._run, args=(i,)) for i in range(threads)]

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)

    def wait_answers(self, n: int) -> None:
        target = len(self.answers) + n
        wait_for(f"{n} answers under load", lambda: len(self.answers) >= target)

    def _run(self, offset: int) -> None:
        i = offset
        while not self._stop.is_set():
            self.answers.append(self._post(USERS[i % len(USERS)]))
            i += len(self._threads)

    def _post(self, user: Any) -> Answer:
        request_id = uuid.uuid4().hex
        body = {
            "context": {"userId": user.user_id, "properties": {"region": user.region}},
            "inputs": [user.features()],
        }
        headers = {"Content-Type": "application/json", "X-Request-ID": request_id}
        try:
            response = self._http.request("POST", self.url, body=json.dumps(body), headers=headers)
        except urllib3.exceptions.HTTPError:
            return Answer(request_id, 0, "")
        return Answer(request_id, response.status, response.headers.get("X-Upstream", ""))


def stored(engine: sa.Engine, request_ids: set[str]) -> Counter[str]:
    """Exposure rows per request id, for the ids asked (non-shadow rows only)."""
    query = sa.select(exposures.c.request_id).where(
        exposures.c.request_id.in_(sorted(request_ids)), exposures.c.shadow.is_(False)
    )
    with engine.connect() as conn:
        return Counter(r.request_id for r in conn.execute(query))


def test_every_answer_has_exactly_one_exposure_in_the_shared_store(cluster: Cluster) -> None:
    with Load(cluster.balancer.url, cluster.flag) as load:
        load.wait_answers(600)
    answers = load.answers
    assert [a for a in answers if a.status != 200] == []
    served = {a.request_id for a in answers}
    by_replica = Counter(a.upstream for a in answers)
    assert set(by_replica) == {cluster.address(i) for i in range(REPLICAS)}, by_replica
    counts = wait_for("every exposure in the store", lambda: _all_stored(cluster.engine, served))
    assert set(counts.values()) == {1}, [r for r, n in counts.items() if n != 1]
    print(
        f"\n{len(answers)} answers through nginx, per replica {dict(by_replica)}; "
        f"{sum(counts.values())} exposures, each once"
    )


def _all_stored(engine: sa.Engine, request_ids: set[str]) -> Counter[str] | None:
    counts = stored(engine, request_ids)
    return counts if set(counts) == request_ids else None


def test_killing_a_replica_under_load_fails_no_request(cluster: Cluster) -> None:
    victim = cluster.replicas[0]
    dead = cluster.address(0)
    with Load(cluster.balancer.url, cluster.flag) as load:
        load.wait_answers(300)
        assert victim.process is not None
        os.killpg(victim.process.pid, signal.SIGKILL)  # gunicorn master and worker, no goodbye
        killed_at = len(load.answers)
        load.wait_answers(600)
    answers = load.answers
    failed = [a for a in answers if a.status != 200]
    retried = [a for a in answers if "," in a.upstream]
    after = answers[killed_at:]
    print(
        f"\nkill -9 of 1 of {REPLICAS} replicas under load: {len(answers)} requests via nginx, "
        f"{len(failed)} failed, {len(retried)} retried on another replica"
    )
    assert failed == [], Counter((a.status, a.upstream) for a in failed)
    survivors_seen = {a.upstream.split(", ")[-1] for a in after[50:]}
    assert survivors_seen == {cluster.address(i) for i in range(1, REPLICAS)}, survivors_seen

    # Answers from the survivors: each stored exactly once. A request the dead replica took
    # and another answered may have two rows (same X-Request-ID): counted, never lost.
    survivors = {a.request_id for a in answers if dead not in a.upstream}
    counts = wait_for("the survivors' exposures", lambda: _all_stored(cluster.engine, survivors))
    assert set(counts.values()) == {1}
    retried_ids = {a.request_id for a in retried}
    retried_counts = (
        wait_for(
            "the retried requests' exposures", lambda: _all_stored(cluster.engine, retried_ids)
        )
        if retried_ids
        else Counter()
    )
    twice = [r for r, n in retried_counts.items() if n > 1]
    # What the dead replica answered alone: its writer's queue died with it (issue 14's spill
    # file is what keeps those); counted, not asserted.
    dead_only = {a.request_id for a in answers if a.upstream == dead}
    kept = len(stored(cluster.engine, dead_only))
    print(
        f"retried requests stored twice: {len(twice)}; the dead replica's own answers stored: "
        f"{kept} of {len(dead_only)}"
    )
