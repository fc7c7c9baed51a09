"""Flags made the way the Unleash 8.2 UI makes them, routed by a real selector (issue 12).

All real: Unleash 8.2 on PostgreSQL, `rollout serve` (gunicorn, 2 workers) in server mode with a
backend token, `bentoml serve` for the new-bento case. The flag is created with the Admin API
calls the UI makes: strategies with constraints and strategy variants, one JSON payload and one
string payload, and **no** flag-level variant. An independent `UnleashClient` on the same server
is the oracle: where it serves a variant, the selector must serve that variant's bento; where
it serves none, the family's stable bento (`stable: v1` in the registry copy the selector reads).
"""

from __future__ import annotations

import json
import math
import random
import re
import shutil
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import urllib3
from UnleashClient import UnleashClient

from service.flags.definitions import load_flags
from service.flags.sync import create_context_fields
from service.flags.unleash_admin import UnleashAdmin
from service.harness.unleash_server import UnleashServer
from service.processes import ManagedProcess, free_port, selector_process, venv_executable
from service.registry.bento_process import BentoProcess
from service.registry.population import population
from service.registry.stable import promote
from service.serving.catalog import BentoCatalog

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
REFRESH_SECONDS = 1
# One poll of the SDK plus Unleash's own short response cache, with slack for a shared machine.
DEADLINE = 10 * REFRESH_SECONDS + 10
STABLE, CANARY = "churn:v1", "churn:v2"
FAKE_URLS = "churn:v1=http://127.0.0.1:9,churn:v2=http://127.0.0.1:9"
REGIONS, SEGMENTS = ("eu", "us", "apac"), ("consumer", "smb", "enterprise")
USERS = [
    (f"user-{i}", random.Random(i).choice(REGIONS), random.Random(-i - 1).choice(SEGMENTS))
    for i in range(2000)
]


def ui_variant(name: str, kind: str, value: str) -> dict[str, Any]:
    """A strategy variant as the UI's strategy form saves it."""
    return {
        "name": name,
        "weight": 1000,
        "weightType": "variable",
        "stickiness": "default",
        "payload": {"type": kind, "value": value},
    }


def ui_strategy(
    flag: str, title: str, rollout: int, variant: dict[str, Any], constraints: list[Any]
) -> dict[str, Any]:
    return {
        "name": "flexibleRollout",
        "title": title,
        "parameters": {"rollout": str(rollout), "stickiness": "default", "groupId": flag},
        "constraints": constraints,
        "variants": [variant],
        "segments": [],
    }


def create_ui_flag(admin: UnleashAdmin, canary_payload: str = '{"bento": "churn:v2"}') -> str:
    """EU enterprise -> JSON payload; then a 30% rollout -> string payload; no flag variants."""
    create_context_fields(admin, load_flags(REPO / "flags"))
    flag = f"ui-{time.monotonic_ns() % 10**9}"
    admin.create_feature("default", flag, "release", "made as the Unleash UI makes it")
    eu_enterprise = [
        {"contextName": "region", "operator": "IN", "values": ["eu"]},
        {"contextName": "segment", "operator": "IN", "values": ["enterprise"]},
    ]
    enterprise = ui_variant("enterprise", "json", canary_payload)
    admin.add_strategy(
        "default",
        flag,
        "development",
        ui_strategy(flag, "eu-enterprise", 100, enterprise, eu_enterprise),
    )
    canary = ui_variant("canary", "string", CANARY)
    admin.add_strategy("default", flag, "development", ui_strategy(flag, "thirty", 30, canary, []))
    admin.set_environment_enabled("default", flag, "development", True)  # last, as a person does
    assert admin.get_feature_variants("default", flag, "development") == []
    return flag


@pytest.fixture
def registry(tmp_path: Path) -> Path:
    """A copy of bentos/ the selector reads; churn:v1 is the stable version."""
    bentos = tmp_path / "bentos"
    shutil.copytree(REPO / "bentos" / "churn", bentos / "churn")
    promote(bentos, STABLE)
    return bentos


def start_selector(
    tmp_path: Path, registry: Path, env: dict[str, str], name: str = "selector"
) -> ManagedProcess:
    env = {
        "ROLLOUT_DATA_DIR": str(tmp_path / "data"),
        "ROLLOUT_BENTOS_DIR": str(registry),
        "ROLLOUT_REFRESH_INTERVAL": str(REFRESH_SECONDS),
        "ROLLOUT_BENTO_URLS": "",
        "UNLEASH_URL": "",
        "ROLLOUT_UNLEASH_URL": "",
        **env,
    }
    process = selector_process(free_port(), tmp_path / f"{name}.log", env).start()
    process.wait_ready(60)
    return process


@pytest.fixture
def server_selector(
    tmp_path: Path, registry: Path, unleash_server: UnleashServer, bento_urls: str
) -> Iterator[ManagedProcess]:
    # Real bentos: /readyz is not ready until one of them answers (routing needs no more).
    process = start_selector(
        tmp_path,
        registry,
        {
            "ROLLOUT_BENTO_URLS": bento_urls,
            "ROLLOUT_UNLEASH_URL": unleash_server.url,
            "UNLEASH_URL": unleash_server.url,
            "UNLEASH_API_TOKEN": unleash_server.backend_token,
        },
    )
    yield process
    process.stop()


@pytest.fixture
def oracle(unleash_server: UnleashServer, tmp_path: Path) -> Iterator[UnleashClient]:
    """An UnleashClient of its own on the same server: what the SDK engine decides."""
    client = UnleashClient(
        url=f"{unleash_server.url}/api",
        app_name="oracle",
        environment="development",
        refresh_interval=REFRESH_SECONDS,
        custom_headers={"Authorization": unleash_server.backend_token},
        disable_metrics=True,
        disable_registration=True,
        cache_directory=str(tmp_path / "oracle-cache"),
    )
    client.initialize_client()
    yield client
    client.destroy()


class Http:
    """A fresh connection per request, so gunicorn spreads requests over both workers."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.pool = urllib3.PoolManager(retries=False, timeout=urllib3.Timeout(total=10))
        self.statuses: Counter[int] = Counter()

    def get(self, path: str, **query: str) -> tuple[int, Any]:
        response = self.pool.request(
            "GET", f"{self.base}{path}", fields=query, headers={"Connection": "close"}
        )
        self.statuses[response.status] += 1
        body = response.data.decode()
        return response.status, json.loads(body) if body.startswith("{") else body

    def resolve(self, flag: str, user: str, region: str, segment: str, **more: str) -> Any:
        status, body = self.get(
            f"/v1/models/{flag}/resolve", userId=user, region=region, segment=segment, **more
        )
        assert status == 200, body
        return body

    @property
    def server_errors(self) -> int:
        return sum(n for status, n in self.statuses.items() if status >= 500)


def base_url(process: ManagedProcess) -> str:
    return process.ready_url.removesuffix("/readyz")


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if condition():
            return time.monotonic() - started
        time.sleep(0.1)  # between polls of our own processes, not a wait for readiness
    raise AssertionError(f"{what} not seen within {timeout:.0f}s")


def oracle_bento(payload: dict[str, Any] | None) -> str | None:
    """The oracle's own reading of a payload (independent of service.flags.payloads)."""
    if not payload:
        return None
    value = payload["value"]
    return json.loads(value)["bento"] if payload["type"] == "json" else value


def expected(oracle: UnleashClient, flag: str, user: str, region: str, segment: str) -> tuple:
    context = {"userId": user, "properties": {"region": region, "segment": segment}}
    answer = oracle.get_variant(flag, context)
    if not answer.get("enabled"):
        return ("default", STABLE)
    return (answer["name"], oracle_bento(answer.get("payload")))


def test_a_ui_made_flag_routes_exactly_as_the_sdk_decides_and_the_kill_switch_never_fails(
    unleash_admin: UnleashAdmin, server_selector: ManagedProcess, oracle: UnleashClient
) -> None:
    flag = create_ui_flag(unleash_admin)
    http = Http(base_url(server_selector))
    eu = ("probe", "eu", "enterprise")
    wait_for(
        lambda: oracle.get_variant(
            flag, {"userId": "p", "properties": {"region": "eu", "segment": "enterprise"}}
        ).get("enabled"),
        DEADLINE,
        "the flag in the oracle",
    )
    wait_for(
        # Every worker (a fresh connection per request): the flag is switched on only after its
        # strategies exist, so routing the probe to the canary means the final state.
        lambda: all(
            http.get(f"/v1/models/{flag}/resolve", userId=eu[0], region=eu[1], segment=eu[2])[
                1
            ].get("bento")
            == CANARY
            for _ in range(20)
        ),
        DEADLINE,
        "the flag in every worker",
    )

    first = {}
    for user, region, segment in USERS:
        body = http.resolve(flag, user, region, segment)
        first[user] = (body["variant"], body["bento"])
        assert first[user] == expected(oracle, flag, user, region, segment), (user, region, segment)
    reasons = Counter(http.resolve(flag, *u)["reason"] for u in USERS[:300])
    assert set(reasons) == {"strategy_variant", "no_matching_strategy"}

    others = [u for u in USERS if (u[1], u[2]) != ("eu", "enterprise")]
    share = sum(first[u[0]] == ("canary", CANARY) for u in others) / len(others)
    assert abs(share - 0.3) < 4 * math.sqrt(0.3 * 0.7 / len(others)), share
    assert {first[u[0]] for u in USERS if (u[1], u[2]) == ("eu", "enterprise")} == {
        ("enterprise", CANARY)
    }
    # Sticky across sessions: another session of the same user gets the same variant.
    for user, region, segment in USERS[:500]:
        again = http.resolve(flag, user, region, segment, sessionId=f"s-{user}-2")
        assert (again["variant"], again["bento"]) == first[user]

    unleash_admin.set_environment_enabled("default", flag, "development", False)
    switched = time.monotonic()

    def everyone_stable() -> bool:
        return all(
            (b["bento"], b["reason"]) == (STABLE, "flag_disabled")
            for b in (http.resolve(flag, *u) for u in USERS[::10])
        )

    wait_for(everyone_stable, DEADLINE, "the kill switch")
    kill = time.monotonic() - switched
    assert everyone_stable()  # twice in a row: both workers follow (fresh connection each)
    assert all(expected(oracle, flag, *u) == ("default", STABLE) for u in USERS[::10])

    unleash_admin.delete_feature("default", flag)  # archived, then deleted, in the UI's terms
    wait_for(
        lambda: http.resolve(flag, *USERS[0])["reason"] == "flag_archived", DEADLINE, "archive"
    )
    assert http.resolve(flag, *USERS[0])["bento"] == STABLE
    assert http.server_errors == 0, http.statuses
    print(f"kill switch reached every worker in {kill:.1f}s (refresh interval {REFRESH_SECONDS}s)")


def test_an_unknown_tag_is_logged_counted_listed_and_linted(
    unleash_server: UnleashServer,
    unleash_admin: UnleashAdmin,
    server_selector: ManagedProcess,
    tmp_path: Path,
    registry: Path,
) -> None:
    flag = create_ui_flag(unleash_admin, canary_payload='{"bento": "churn:v3"}')
    http = Http(base_url(server_selector))

    def routed_around() -> bool:
        status, body = http.get(
            f"/v1/models/{flag}/resolve", userId="u1", region="eu", segment="enterprise"
        )
        return status == 200 and body["reason"] == "unknown_bento"

    wait_for(lambda: all(routed_around() for _ in range(20)), DEADLINE, "churn:v3 in every worker")
    body = http.resolve(flag, "u1", "eu", "enterprise")
    assert (body["variant"], body["bento"]) == ("default", STABLE)

    status, ready = http.get("/readyz")
    assert (status, ready["status"], ready["flag_status"][flag]) == (200, "ready", "degraded")
    (problem,) = ready["flag_problems"][flag]
    assert problem["reason"] == "unknown_bento" and problem["tag"] == "churn:v3"
    # The client API the selector polls carries no strategy titles: the position names it.
    assert (problem["strategy"], problem["variant"]) == ("#1 flexibleRollout", "enterprise")

    _, metrics = http.get("/metrics")
    counted = re.search(
        rf'selector_flag_problems_total\{{flag="{flag}",reason="unknown_bento"\}} (\d+)', metrics
    )
    assert counted and int(counted.group(1)) >= 1, metrics[-2000:]

    log = server_selector.log_tail(400)
    assert re.search(
        rf"flag {flag} environment development strategy #1 flexibleRollout variant enterprise "
        "tag churn:v3",
        log,
    ), log

    for token_env, strategy in (
        ({"UNLEASH_API_TOKEN": unleash_server.backend_token}, "#1 flexibleRollout"),
        ({"UNLEASH_ADMIN_TOKEN": unleash_server.admin_token}, "eu-enterprise"),  # titles known
    ):
        lint = subprocess.run(
            [venv_executable("rollout"), "flags", "lint", "--url", unleash_server.url],
            capture_output=True,
            text=True,
            env={
                "PATH": "/usr/bin:/bin",
                "ROLLOUT_DATA_DIR": str(tmp_path / "lint"),
                "ROLLOUT_BENTOS_DIR": str(registry),
                "ROLLOUT_BENTO_URLS": FAKE_URLS,
                **token_env,
            },
            timeout=60,
        )
        assert lint.returncode == 1, lint.stdout + lint.stderr
        line = next(x for x in lint.stdout.splitlines() if f"flag {flag} " in x)
        assert f"strategy '{strategy}'" in line and "churn:v3" in line and "Fix:" in line
        assert unleash_server.backend_token not in lint.stdout + lint.stderr
    assert http.server_errors == 0, http.statuses


NEW_BENTO_FLAG = """
flag: new-bento
variants: {canary: churn:v2}
environments:
  development:
    enabled: true
    strategies:
      - name: everyone
        variants: {canary: 100}
"""


def test_a_bento_served_after_the_selector_started_becomes_routable(
    tmp_path: Path,
    registry: Path,
    built_bentos: Any,
    bento_servers: dict[str, BentoProcess],
    flags_dir,
) -> None:
    """Embedded flags naming churn:v2; the catalog lists only churn:v1 until churn:v2 is served."""
    catalog = tmp_path / "data" / "catalog.json"
    BentoCatalog({STABLE: bento_servers[STABLE].url}).save(catalog)
    folder = flags_dir("new-bento.yaml", NEW_BENTO_FLAG)
    selector = start_selector(tmp_path, registry, {"ROLLOUT_FLAGS_DIR": str(folder)})
    http = Http(base_url(selector))
    person = population(1, seed=3)[0]
    user = person.features()
    pool = urllib3.PoolManager(retries=False, timeout=urllib3.Timeout(total=10))

    def predict() -> dict[str, Any]:
        response = pool.request(
            "POST",
            f"{http.base}/v1/models/new-bento/predict",
            body=json.dumps({"context": {"userId": "u1"}, "inputs": [user]}),
            headers={"Content-Type": "application/json", "Connection": "close"},
        )
        http.statuses[response.status] += 1
        return json.loads(response.data)

    try:
        before = predict()
        assert (before["bento"], before["reason"]) == (STABLE, "unknown_bento")
        with BentoProcess(
            CANARY, settings=built_bentos.settings, log_path=tmp_path / "v2.log"
        ) as v2:
            v2.wait_ready(90)
            BentoCatalog({STABLE: bento_servers[STABLE].url, CANARY: v2.url}).save(catalog)
            listed = time.monotonic()
            wait_for(
                lambda: all(predict()["bento"] == CANARY for _ in range(4)),
                DEADLINE,
                "the new bento",
            )
            routable = time.monotonic() - listed
            answer = predict()
            assert (answer["variant"], answer["reason"]) == ("canary", "strategy_variant")
        # Gone again (stopped, still listed): the breaker and fallback cover it, no 5xx.
        after = [predict() for _ in range(6)]
        assert {a["bento"] for a in after} == {STABLE}
        assert http.server_errors == 0, http.statuses
        print(f"a new bento was routable {routable:.1f}s after the catalog listed it")
    finally:
        selector.stop()


def test_export_writes_a_ui_made_flag_with_its_payloads_and_no_default(
    unleash_server: UnleashServer, unleash_admin: UnleashAdmin, registry: Path, tmp_path: Path
) -> None:
    """`rollout flags export` turns a flag made in the UI (JSON and string payloads, no
    flag-level variant) into a flag file that validates and follows the stable version."""
    flag = create_ui_flag(unleash_admin)
    out = tmp_path / "exported"
    env = {
        "PATH": "/usr/bin:/bin",
        "ROLLOUT_DATA_DIR": str(tmp_path / "data"),
        "ROLLOUT_BENTOS_DIR": str(registry),
        "UNLEASH_ADMIN_TOKEN": unleash_server.admin_token,
    }

    def rollout(*args: str) -> subprocess.CompletedProcess[str]:
        command = [venv_executable("rollout"), *args]
        return subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)

    # The session's server holds other tests' flags too: export this one, as a person would.
    exported = rollout(
        "flags", "export", "--url", unleash_server.url, "--out", str(out), "--flag", flag
    )
    assert exported.returncode == 0, exported.stderr
    text = (out / f"{flag}.yaml").read_text()
    doc = load_flags(out).flags[flag]
    assert doc.default_bento is None and "stable" in text  # follows `rollout models promote`
    assert doc.variants == {"enterprise": "churn:v2", "canary": CANARY}
    validated = rollout("flags", "validate", "--dir", str(out))
    assert validated.returncode == 0, validated.stdout + validated.stderr
