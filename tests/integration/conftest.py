"""Real servers for the integration tests.

`unleash_server` is one real Unleash (unleash-server 8.2.0 on Node 22) per test session, on a
fresh PostgreSQL database and a free port. When it is not installed the tests fail (never
skip) with the command that installs it.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, sync_playwright

from service.errors import ConfigError
from service.flags.unleash_admin import UnleashAdmin
from service.harness.unleash_server import UnleashServer


@pytest.fixture(scope="session")
def unleash_server() -> Iterator[UnleashServer]:
    """A started Unleash server, shared by the session; stopped and its database dropped."""
    try:
        server = UnleashServer().start()
    except ConfigError as exc:  # not installed, or no PostgreSQL: say how to fix it
        pytest.fail(str(exc), pytrace=False)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def unleash_admin(unleash_server: UnleashServer) -> Iterator[UnleashAdmin]:
    """An Admin API client on the session's server, with its admin token."""
    unleash_server.check_alive()  # a dead server: say why once, not as connection errors
    with UnleashAdmin(unleash_server.url, unleash_server.admin_token) as admin:
        yield admin


# Debian's Chromium, driven by Playwright; never a downloaded browser. The flags keep it off a
# network this machine does not have (background fetches are refused, many at a time).
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """A headless Chromium for one test module; fails (never skips) when it is not installed."""
    if not CHROMIUM.exists() or shutil.which(str(CHROMIUM)) is None:
        pytest.fail(f"{CHROMIUM} is missing: run `scripts/install-browser`", pytrace=False)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield launched
        launched.close()
