"""Real bentos for the integration tests: every declared version built, and served.

`built_bentos` builds all of bentos/*/versions.yaml (train, save, `bentoml build`) into a
BentoML store in a temporary folder, once per session (~10-15 s on 2 cores); `bento_servers`
runs a real `bentoml serve` per bento on free ports and stops them at the end of the session.
BentoML is a project dependency, so nothing here can be "not installed": a failed build or
start fails the test with BentoML's own output.

Registered as a plugin from tests/conftest.py:  pytest_plugins = ["integration.bento_fixtures"]
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass

import pytest

from service.bento_process import BentoProcess
from service.config import Settings
from service.errors import RolloutError
from service.models import BuiltBento, build_all
from service.processes import ProcessFailed

SERVE_TIMEOUT = 90.0


@dataclass(frozen=True)
class BuiltBentos:
    """The bentos built for the session: their settings (store location) and build results."""

    settings: Settings
    built: dict[str, BuiltBento]
    seconds: float


@pytest.fixture(scope="session")
def built_bentos(tmp_path_factory: pytest.TempPathFactory) -> BuiltBentos:
    """Every declared bento (`churn:v1`, `churn:v2`, ...) built into a temporary BentoML store."""
    settings = Settings.load({"data_dir": tmp_path_factory.mktemp("bento-data")})
    started = time.perf_counter()
    try:
        built = {b.tag: b for b in build_all(settings)}
    except RolloutError as exc:
        pytest.fail(f"building the bentos failed: {exc}", pytrace=False)
    return BuiltBentos(settings, built, time.perf_counter() - started)


@pytest.fixture(scope="session")
def bento_servers(built_bentos: BuiltBentos) -> Iterator[dict[str, BentoProcess]]:
    """`bentoml serve <tag>` for every built bento, by tag; ready when the fixture returns."""
    with ExitStack() as stack:
        servers: dict[str, BentoProcess] = {}
        for tag in built_bentos.built:
            servers[tag] = stack.enter_context(BentoProcess(tag, settings=built_bentos.settings))
        # Started together, then waited for: the servers boot in parallel.
        try:
            for server in servers.values():
                server.wait_ready(SERVE_TIMEOUT)
        except ProcessFailed as exc:
            pytest.fail(str(exc), pytrace=False)
        yield servers


@pytest.fixture(scope="session")
def bento_urls(bento_servers: dict[str, BentoProcess]) -> str:
    """The served bentos in the `ROLLOUT_BENTO_URLS` format: `churn:v1=http://...,churn:v2=...`."""
    return ",".join(f"{tag}={server.url}" for tag, server in bento_servers.items())
